"""Every ``bash`` block of docs/cli.md runs as written, in order, from a folder laid out like the repository."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "cli.md")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _blocks() -> list[tuple[str, str]]:
    with open(DOC, encoding="utf-8") as handle:
        return FENCE.findall(handle.read())


def _commands(block: str) -> list[list[str]]:
    """The block's commands, continuation lines joined, comments and blank lines left out."""
    joined = block.replace("\\\n", " ")
    return [
        shlex.split(line) for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_every_block_says_whether_it_is_commands_or_text():
    assert {language for language, _ in _blocks()} <= {"bash", "text"}
    assert [language for language, _ in _blocks()].count("bash") >= 2


def test_every_command_block_runs_as_written(tmp_path, monkeypatch):
    from iterframe.cli import cli
    from iterframe.loop.artifacts import read_metrics

    shutil.copytree(os.path.join(ROOT, "examples"), tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    commands = [command for language, block in _blocks() if language == "bash" for command in _commands(block)]
    assert commands
    for command in commands:
        program, *args = command
        if program == "iterframe":
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, f"{shlex.join(command)}\n{result.output}\n{result.exception!r}"
        elif program == "python":
            completed = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
            assert completed.returncode == 0, f"{shlex.join(command)}\n{completed.stderr}"
        else:
            pytest.fail(f"docs/cli.md runs {program!r}; this test knows iterframe and python only")
    assert len(read_metrics("runs/raft/metrics.jsonl")) == 3
    assert len(read_metrics("runs/ei/metrics.jsonl")) == 5
    assert os.path.isfile("runs/ei/report.png")
    assert len(read_metrics("runs/ei-offline/metrics.jsonl")) == 3
