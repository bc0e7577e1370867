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


CONSTRAINED = " -c {tox_root}/.ci/constraints.txt"


def _installs(section: str) -> list[str]:
    return _tox_config()[section]["commands_pre"].strip().splitlines()


def test_test_env_installs_the_known_good_versions_and_reports_them():
    installs = _installs("testenv")
    assert CONSTRAINED in installs[1]
    assert installs[-1] == "python {tox_root}/.ci/versions.py"


def test_transformers4_env_installs_what_the_test_env_does_with_transformers_4_57():
    pin = ' "transformers>=4.57,<4.58"'
    installs = _installs("testenv:transformers4")
    assert installs[1].endswith(pin)
    installs[1] = installs[1].removesuffix(pin)
    # the same packages, free of the constraints (which pin transformers 5)
    assert installs == [line.replace(CONSTRAINED, "") for line in _installs("testenv")]
    assert "commands" not in _tox_config()["testenv:transformers4"]  # the suite, run as the test env runs it


def test_newest_env_installs_the_newest_releases_and_says_what_changed():
    installs = _installs("testenv:newest")
    test_env = [line.replace(CONSTRAINED, "") for line in _installs("testenv")]
    assert installs[1] == test_env[1].replace("--quiet -e", "--quiet --upgrade --upgrade-strategy eager -e")
    assert installs[-1] == "python {tox_root}/.ci/versions.py"
    assert "commands" not in _tox_config()["testenv:newest"]
