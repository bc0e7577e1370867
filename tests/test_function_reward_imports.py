"""Function rewards named ``module:function`` import as ``python -m`` would (the current directory searched), are
imported before any model loads, and a name that does not import is one line that suggests ``file.py:function``,
from ``iterframe run`` and ``iterframe rescore`` alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from iterframe.cli import cli

REWARDS = "def always_one(completions, **kwargs):\n    return [1.0] * len(completions)\n"


def _run_args(model: str, dataset: str, output_dir: str, reward: str) -> list[str]:
    return [
        "run", "--model", model, "--dataset", dataset, "--reference-column", "answer", "--reward", reward,
        "--iterations", "1", "--prompts-per-iteration", "2", "--samples-per-prompt", "2", "--max-new-tokens", "3",
        "--output-dir", output_dir, "--quiet",
    ]  # fmt: skip


def _lines(output: str) -> list[str]:
    """The command's own lines (a library's notice that the test environment triggers left out)."""
    return [line for line in output.splitlines() if not line.startswith("[INFO] Running in WANDB offline mode")]


def test_a_module_in_the_current_directory_imports_under_the_iterframe_command(
    tiny_llama_path, arithmetic_path, tmp_path
):
    work, launcher = tmp_path / "work", tmp_path / "bin" / "iterframe_command.py"
    work.mkdir()
    (work / "myrewards.py").write_text(REWARDS)
    launcher.parent.mkdir()
    # as the installed `iterframe` script runs: sys.path[0] is the script's folder, not the current directory
    launcher.write_text("from iterframe.cli import cli\n\ncli()\n")
    args = _run_args(tiny_llama_path, arithmetic_path, str(work / "out"), "trl:myrewards:always_one")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(launcher), *args[0:]], cwd=work, capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with open(work / "out" / "metrics.jsonl", encoding="utf-8") as handle:
        assert json.loads(handle.readline())["reward/mean"] == 1.0  # scored in the worker pool too


def test_a_function_that_does_not_import_is_one_line_before_any_model_loads(arithmetic_path, tmp_path):
    model = tmp_path / "unloadable-model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # would fail to load: the import is checked first
    args = _run_args(str(model), arithmetic_path, str(tmp_path / "out"), "trl:myrewadrs:always_one")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert len(_lines(result.output)) == 1 and "Traceback" not in result.output
    assert "cannot import module 'myrewadrs' (No module named 'myrewadrs')" in result.output
    assert "Name the file instead, e.g. 'myrewadrs.py:always_one'." in result.output
    assert not (tmp_path / "out").exists()


def test_rescore_says_the_same_one_line_error(tiny_llama_path, arithmetic_path, tmp_path):
    run_dir = str(tmp_path / "run")
    finished = CliRunner().invoke(cli, _run_args(tiny_llama_path, arithmetic_path, run_dir, "answer-match"))
    assert finished.exit_code == 0, finished.output
    args = ["rescore", run_dir, "--reward", "trl:myrewadrs:always_one", "--output-dir", str(tmp_path / "set")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert len(_lines(result.output)) == 1 and "Traceback" not in result.output
    assert "cannot import module 'myrewadrs'" in result.output and "'myrewadrs.py:always_one'" in result.output
