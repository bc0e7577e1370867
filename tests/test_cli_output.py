"""How much ``iterframe run`` prints: a line per iteration by default, tables with -v, only errors and the closing
summary with -q, no progress-bar redraws in a redirected stderr."""

from __future__ import annotations

import logging
import os
import re

from click.testing import CliRunner

from iterframe.cli import cli
from iterframe.cli.output import output_mode

LINE = re.compile(r"^iteration [0-9]/2  reward \d\.\d{3}  keep [\d.]+%  loss [\d.]+  eval (\d\.\d{3}|-)  [\d.]+s$")


def _run(tiny_llama_path, arithmetic_path, output_dir, *extra):
    args = ["run", "--model", tiny_llama_path, "--dataset", arithmetic_path, "--reference-column", "answer"]
    args += ["--reward", "answer-match", "--iterations", "2", "--prompts-per-iteration", "2"]
    args += ["--samples-per-prompt", "2", "--max-new-tokens", "3", "--eval-fraction", "0.5"]
    result = CliRunner().invoke(cli, [*args, "--output-dir", str(output_dir), *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_default_output_is_one_line_per_iteration_then_the_summary(tiny_llama_path, arithmetic_path, tmp_path):
    result = _run(tiny_llama_path, arithmetic_path, tmp_path / "run")
    lines = result.stdout.splitlines()
    per_iteration = [line for line in lines if line.startswith("iteration ")]
    assert len(per_iteration) == 2 and all(LINE.match(line) for line in per_iteration), per_iteration
    assert not any(line.strip().startswith("metric") for line in lines)  # no per-iteration table
    assert any(line.split()[:2] == ["iter", "reward"] for line in lines)  # the closing summary table
    assert "\r" not in result.stderr  # stderr is not a terminal here: no bars, no redraws


def test_verbose_prints_every_metric_of_each_iteration_as_a_table(tiny_llama_path, arithmetic_path, tmp_path):
    result = _run(tiny_llama_path, arithmetic_path, tmp_path / "run", "-v")
    lines = result.stdout.splitlines()
    assert lines.count("iteration 0") == 1 and lines.count("iteration 1") == 1
    assert sum(line.split() == ["metric", "value"] for line in lines) == 2
    assert any(line.split()[:1] == ["reward/std"] for line in lines)


def test_verbose_shows_the_top_rewarded_samples_of_the_first_iteration_only(
    tiny_llama_path, arithmetic_path, tmp_path
):
    verbose = _run(tiny_llama_path, arithmetic_path, tmp_path / "run", "-v").stderr
    assert verbose.count("Top-rewarded samples of iteration") == 1
    heading = "Top-rewarded samples of iteration 0 (does the reward pay for what you mean?):"
    lines = verbose.split(heading, 1)[1].splitlines()[1:4]
    assert len(lines) == 3 and all(re.match(r"  reward \d\.\d{3}: prompt '.*' -> '.*'$", line) for line in lines)
    default = _run(tiny_llama_path, arithmetic_path, tmp_path / "again").stderr
    assert "Top-rewarded samples" not in default


def test_quiet_and_verbose_exclude_each_other(tiny_llama_path, arithmetic_path, tmp_path):
    args = ["run", "--model", tiny_llama_path, "--dataset", arithmetic_path, "--reward", "answer-match"]
    args += ["-q", "-v"]
    result = CliRunner().invoke(cli, [*args, "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "quiet and verbose exclude each other" in result.output
    assert not (tmp_path / "run").exists()


def test_quiet_demo_prints_nothing_while_it_builds_its_model(tmp_path, monkeypatch):
    from iterframe.demo import model as demo_model

    shipped = demo_model.load_model_config()
    shipped["format_warmup"]["steps"] = 2  # a fresh, quick build into an empty cache
    monkeypatch.setattr(demo_model, "load_model_config", lambda: shipped)
    monkeypatch.setenv("ITERFRAME_CACHE_DIR", str(tmp_path / "cache"))
    output_dir = tmp_path / "demo"
    args = ["run", "-q", "--iterations", "1", "--output-dir", str(output_dir)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert os.listdir(tmp_path / "cache")[0].startswith("demo-model-")  # it was built, without a word
    assert result.stderr == ""
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["eval/reward", "Artifacts"]


def test_quiet_lets_only_errors_of_libraries_through_and_restores_them_after(capsys):
    library = logging.getLogger("DeepSpeed")
    handler = logging.StreamHandler()  # as DeepSpeed sets up its own logger
    library.addHandler(handler)
    try:
        with output_mode(quiet=True, verbose=False):
            library.warning("Setting accelerator to CPU.")
            library.error("a real problem")
        library.warning("a notice after the run")
    finally:
        library.removeHandler(handler)
    assert capsys.readouterr().err.splitlines() == ["a real problem", "a notice after the run"]


def test_verbose_shows_iterframe_info_messages_for_the_run_only(capsys):
    with output_mode(quiet=False, verbose=True):
        logging.getLogger("iterframe.builtin.generators").info("falling back to generate()")
    logging.getLogger("iterframe.builtin.generators").info("not shown")
    assert capsys.readouterr().err == "INFO iterframe.builtin.generators: falling back to generate()\n"


def test_quiet_run_writes_nothing_to_stderr_and_no_iteration_lines(tiny_llama_path, arithmetic_path, tmp_path):
    result = _run(tiny_llama_path, arithmetic_path, tmp_path / "run", "--quiet")
    assert result.stderr == ""
    assert not any(line.startswith("iteration ") for line in result.stdout.splitlines())


def test_output_into_a_pipe_names_each_stage_as_it_starts_beginning_with_the_initial_eval(
    tiny_llama_path, arithmetic_path, tmp_path
):
    import subprocess
    import sys
    import threading
    import time

    args = [sys.executable, "-m", "iterframe", "run", "--model", tiny_llama_path, "--dataset", arithmetic_path]
    args += ["--reference-column", "answer", "--reward", "answer-match", "--iterations", "1"]
    args += ["--prompts-per-iteration", "2", "--samples-per-prompt", "2", "--max-new-tokens", "3"]
    args += ["--eval-fraction", "0.5", "--output-dir", str(tmp_path / "run")]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    arrivals: dict[str, list[tuple[float, str]]] = {"stdout": [], "stderr": []}

    def read(name, stream):
        for line in stream:
            arrivals[name].append((time.monotonic(), line.rstrip("\n")))

    readers = [threading.Thread(target=read, args=(name, getattr(process, name))) for name in arrivals]
    for reader in readers:
        reader.start()
    process.wait(timeout=300)
    for reader in readers:
        reader.join()
    # a library's Python warning (peft's about an older transformers) and its source line may come first
    own = [(when, line) for when, line in arrivals["stderr"] if not re.match(r"(\S+:\d+: \w*Warning: |\s)", line)]
    lines = [line for _, line in own]
    assert process.returncode == 0, lines + [line for _, line in arrivals["stdout"]]
    assert re.fullmatch(r"evaluating the starting model on \d+ prompts", lines[0]), lines
    first_result = next(when for when, line in arrivals["stdout"] if line.startswith("iteration 0/1"))
    assert own[0][0] < first_result  # as the stage starts, not with the results
    assert lines[1:] == [
        "iteration 0: generating 2 samples for each of 2 prompts",
        "iteration 0: scoring 4 samples",
        "iteration 0: training on 4 samples",
        lines[-2],
        "iteration 0: saving a checkpoint",
    ]
    assert re.fullmatch(r"iteration 0: evaluating on \d+ prompts", lines[-2])
