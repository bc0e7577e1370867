"""Crashes and signals: a real ``python -m iterframe run`` process is stopped at named points of a run, then
continued with ``--resume``, until the run finishes.

The stops come from ``tests/fault_injection_plugin.py``, a plugin loaded through an entry point like any installed
one. One run of five iterations is stopped four times, each resume being stopped at the next point:

====================  =======  ================================================================================
point                 signal   what is on disk when the process dies
====================  =======  ================================================================================
generation, it. 1     SIGKILL  iteration 0 finished and checkpointed; iteration 1 has written nothing
optimizer-step, 2     SIGKILL  nothing of iteration 2; the weights changed in memory only
checkpoint, 3         SIGKILL  iteration 3's samples and metrics row; a temporary checkpoint holding weights only
generation, 4         SIGTERM  stops cleanly: a message, exit status 1, the in-flight iteration discarded
====================  =======  ================================================================================

After every stop: the finished (checkpointed) iterations' ``samples.parquet`` are byte-identical to what they were,
and ``metrics.jsonl`` never holds an iteration twice. At the end every iteration appears exactly once and the
final model loads with ``from_pretrained``. Ctrl-C (SIGINT) is tested in-process, through the same plugin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from iterframe.loop.artifacts import read_metrics, samples_path
from iterframe.loop.run_state import latest_checkpoint, read_loop_state

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ITERATIONS = 5
#: (signal, point, iteration) of each stop, in the order the run meets them.
STOPS = [
    ("KILL", "generation", 1),
    ("KILL", "optimizer-step", 2),
    ("KILL", "checkpoint", 3),
    ("TERM", "generation", 4),
]


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> str:
    """A folder for ``PYTHONPATH`` that installs ``fault_injection_plugin`` as the plugin distribution
    ``iterframe-fault-injection`` (an entry point in the ``iterframe`` group)."""
    root = tmp_path_factory.mktemp("site")
    dist_info = root / "iterframe_fault_injection-1.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: iterframe-fault-injection\nVersion: 1.0.0\n")
    (dist_info / "entry_points.txt").write_text("[iterframe]\nfault-injection = fault_injection_plugin\n")
    return os.pathsep.join([str(root), TESTS_DIR])


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "addition.jsonl"
    rows = [{"prompt": f"{a}+{b}=", "reference": str(a + b)} for a, b in ((1, 2), (3, 4), (2, 2), (5, 1))]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def run_iterframe(args: list[str], plugin_path: str, fault: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=plugin_path, ITERFRAME_LOAD_PLUGINS="iterframe-fault-injection")
    env["ITERFRAME_FAULT_AT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "iterframe", "run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def metrics_iterations(output_dir: str) -> list[int]:
    return [row["iteration"] for row in read_metrics(os.path.join(output_dir, "metrics.jsonl"))]


def checkpointed_iteration(output_dir: str) -> int:
    """The last iteration with a complete loop checkpoint (-1: none)."""
    checkpoint = latest_checkpoint(output_dir)
    return -1 if checkpoint is None else read_loop_state(checkpoint)["iteration"]


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def test_killed_and_signalled_runs_resume_to_a_complete_run(tiny_llama_path, dataset_path, plugin_path, tmp_path):
    output_dir = str(tmp_path / "run")
    first_args = ["--model", tiny_llama_path, "--dataset", dataset_path, "--reward", "answer-match"]
    first_args += ["--iterations", str(ITERATIONS), "--prompts-per-iteration", "2", "--samples-per-prompt", "2"]
    first_args += ["--set", "generator.max_new_tokens=2", "--set", "train.learning_rate=1e-3"]
    first_args += ["--output-dir", output_dir, "--quiet"]
    resume_args = ["--resume", "--output-dir", output_dir, "--quiet"]  # the saved config.yaml does the rest

    finished: dict[int, bytes] = {}
    for number, (signal_name, point, iteration) in enumerate(STOPS):
        result = run_iterframe(
            first_args if number == 0 else resume_args, plugin_path, f"{signal_name}:{point}:{iteration}"
        )
        stop = f"{signal_name} at {point} of iteration {iteration}"
        if signal_name == "KILL":
            assert result.returncode == -signal.SIGKILL, f"{stop}: {result.returncode}\n{result.stderr}"
        else:
            assert result.returncode == 143, f"{stop}: {result.returncode}\n{result.stderr}"  # 128 + SIGTERM
            assert "Stopped by SIGTERM; the iteration in progress was discarded." in result.stderr
            assert "add --resume to the command to continue the run" in result.stderr
            assert "Traceback" not in result.stderr

        last_checkpointed = checkpointed_iteration(output_dir)
        assert last_checkpointed == iteration - 1, stop
        rows = metrics_iterations(output_dir)
        assert rows == sorted(set(rows)), f"{stop}: a metrics row is duplicated: {rows}"
        for done, content in finished.items():
            assert read_bytes(samples_path(output_dir, done)) == content, f"{stop}: iteration {done} changed"
        for done in range(last_checkpointed + 1):
            finished.setdefault(done, read_bytes(samples_path(output_dir, done)))

    result = run_iterframe(resume_args, plugin_path)
    assert result.returncode == 0, result.stderr
    assert metrics_iterations(output_dir) == list(range(ITERATIONS))
    assert sorted(finished) == list(range(ITERATIONS - 1))  # each finished before a later stop, kept since
    for done, content in finished.items():
        assert read_bytes(samples_path(output_dir, done)) == content, f"iteration {done} changed"
    assert not [name for name in os.listdir(os.path.join(output_dir, "checkpoints")) if name.startswith(".tmp-")]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(os.path.join(output_dir, "final"))
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(output_dir, "final"))
    assert model.generate(**tokenizer("1+2=", return_tensors="pt"), max_new_tokens=2).shape[1] >= 1


def test_ctrl_c_stops_cleanly_keeps_finished_iterations_and_resume_continues(
    tiny_llama_path, dataset_path, tmp_path, register_plugin, monkeypatch
):
    import fault_injection_plugin
    from click.testing import CliRunner

    from iterframe.cli import cli

    register_plugin(fault_injection_plugin, name="fault-injection")
    output_dir = str(tmp_path / "run")
    args = ["run", "--model", tiny_llama_path, "--dataset", dataset_path, "--reward", "answer-match"]
    args += ["--iterations", "3", "--prompts-per-iteration", "2", "--samples-per-prompt", "2", "--quiet"]
    args += ["--set", "generator.max_new_tokens=2", "--output-dir", output_dir]
    monkeypatch.setenv(fault_injection_plugin.FAULT_ENV, "INT:optimizer-step:1")
    try:
        interrupted = CliRunner().invoke(cli, args)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped iterframe run instead of stopping it cleanly")
    assert interrupted.exit_code == 130  # 128 + SIGINT, as a shell reports a command Ctrl-C stopped
    assert "Stopped by Ctrl-C (SIGINT); the iteration in progress was discarded." in interrupted.output
    assert "add --resume to the command to continue the run" in interrupted.output
    assert metrics_iterations(output_dir) == [0] and checkpointed_iteration(output_dir) == 0
    finished = read_bytes(samples_path(output_dir, 0))

    monkeypatch.delenv(fault_injection_plugin.FAULT_ENV)
    resumed = CliRunner().invoke(cli, ["run", "--resume", "--output-dir", output_dir, "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert metrics_iterations(output_dir) == [0, 1, 2]
    assert read_bytes(samples_path(output_dir, 0)) == finished
