"""Every ``bash`` block of docs/cli.md and of the README (set-up aside) runs as written, in order, from a folder
laid out like the repository; so do docs/loop.md's Python examples."""

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


def _blocks(path: str = DOC) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return FENCE.findall(handle.read())


def _commands(block: str) -> list[list[str]]:
    """The block's commands, continuation lines joined, comments (whole lines or after a command) left out."""
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


def test_every_block_says_whether_it_is_commands_or_text():
    assert {language for language, _ in _blocks()} <= {"bash", "text"}
    assert [language for language, _ in _blocks()].count("bash") >= 2


def test_every_command_block_runs_as_written(tmp_path, monkeypatch):
    from iterframe.loop.artifacts import read_metrics

    shutil.copytree(os.path.join(ROOT, "examples"), tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    _run_as_written(
        [command for language, block in _blocks() if language == "bash" for command in _commands(block)]
    )
    assert len(read_metrics("runs/raft/metrics.jsonl")) == 3
    assert len(read_metrics("runs/ei/metrics.jsonl")) == 5
    assert os.path.isfile("runs/ei/report.png")
    assert len(read_metrics("runs/ei-offline/metrics.jsonl")) == 3


def _run_as_written(commands: list[list[str]]) -> None:
    """Run ``iterframe`` commands in this process and ``python`` ones in a child, each expected to succeed."""
    from iterframe.cli import cli

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
            pytest.fail(f"the docs run {program!r}; this test knows iterframe and python only")


def test_the_readme_command_blocks_run_as_written(tmp_path, monkeypatch):
    from iterframe.loop.artifacts import read_metrics

    shutil.copytree(os.path.join(ROOT, "examples"), tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    blocks = [block for language, block in _blocks(os.path.join(ROOT, "README.md")) if language == "bash"]
    set_up = [block for block in blocks if "pip install" in block]
    assert len(set_up) == 2  # installing is what .ci/run does; the rest runs here
    _run_as_written([command for block in blocks if block not in set_up for command in _commands(block)])
    assert len(read_metrics("runs/math/metrics.jsonl")) == 3
    assert os.path.isfile("runs/math/report.png")


def test_the_python_examples_of_docs_loop_md_run_as_written(tmp_path):
    from iterframe.loop.artifacts import read_metrics

    blocks = [block for language, block in _blocks(os.path.join(ROOT, "docs", "loop.md")) if language == "python"]
    assert len(blocks) == 2  # the loop from Python, then rescoring its run
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks))
    completed = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert len(read_metrics(tmp_path / "runs" / "add" / "metrics.jsonl")) == 10
    assert os.path.isfile(tmp_path / "runs" / "add-strict" / "run.json")
