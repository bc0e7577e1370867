"""tox.ini: each benchmark env has its own folder, and the lint env checks formatting as well as lint."""

from __future__ import annotations

import configparser
import pathlib

TOX_INI = pathlib.Path(__file__).resolve().parent.parent / "tox.ini"


def _tox_config() -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read(TOX_INI, encoding="utf-8")
    return config


def _commands(section: str) -> list[str]:
    return [line.strip() for line in _tox_config()[section]["commands"].strip().splitlines()]


def test_bench_and_loopbench_envs_live_in_separate_folders():
    config = _tox_config()
    folders = [config[f"testenv:{name}"].get("env_dir") for name in ("bench", "loopbench")]
    assert None not in folders
    assert folders[0] != folders[1]


def test_lint_env_runs_ruff_check_and_format_check_on_the_same_paths():
    commands = _commands("testenv:lint")
    checked = [line.removeprefix("ruff check ") for line in commands if line.startswith("ruff check ")]
    formatted = [
        line.removeprefix("ruff format --check ") for line in commands if line.startswith("ruff format --check ")
    ]
    assert checked and checked == formatted


def test_transformers4_env_installs_what_the_test_env_does_with_transformers_4_57():
    config = _tox_config()
    pin = ' "transformers>=4.57,<4.58"'
    installs = config["testenv:transformers4"]["commands_pre"].strip().splitlines()
    assert installs[-1].endswith(pin)
    installs[-1] = installs[-1].removesuffix(pin)
    assert installs == config["testenv"]["commands_pre"].strip().splitlines()
    assert "commands" not in config["testenv:transformers4"]  # the suite, run as the test env runs it
