"""A run killed after an iteration and resumed writes exactly what the uninterrupted run writes: the same
``samples.parquet`` of every iteration and the same ``metrics.jsonl`` (timing fields aside), with one process and
with two (``torchrun``, gloo). The prompt sampler, the replay buffer, the generator's seed sequence (each process
its own stream) and every process's torch / numpy / python random state all come back from the checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from iterframe.loop.artifacts import read_metrics

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ITERATIONS = 3
KILLED_IN = 2  # killed while generating iteration 2: iterations 0 and 1 are finished and checkpointed


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> str:
    """``PYTHONPATH`` entries that install ``fault_injection_plugin`` through an entry point, before this
    process's own (so the subprocesses import the same iterframe as the tests)."""
    root = tmp_path_factory.mktemp("site")
    dist_info = root / "iterframe_fault_injection-1.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: iterframe-fault-injection\nVersion: 1.0.0\n")
    (dist_info / "entry_points.txt").write_text("[iterframe]\nfault-injection = fault_injection_plugin\n")
    return os.pathsep.join([str(root), TESTS_DIR, os.environ.get("PYTHONPATH", "")])


def run(num_processes: int, args: list[str], plugin_path: str, fault: str = "") -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "iterframe"]
    if num_processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(num_processes), "-m", "iterframe"]
    env = dict(os.environ, PYTHONPATH=plugin_path, ITERFRAME_LOAD_PLUGINS="iterframe-fault-injection")
    env.update(ITERFRAME_FAULT_AT=fault, OMP_NUM_THREADS="1")
    return subprocess.run([*launcher, "run", *args], env=env, capture_output=True, text=True, timeout=400)


def run_args(model: str, dataset: str, output_dir: str) -> list[str]:
    return [
        "--model", model,
        "--dataset", dataset,
        "--reference-column", "answer",
        "--reward", "answer-match",
        "--filter", "top-fraction",
        "--iterations", str(ITERATIONS),
        "--prompts-per-iteration", "3",  # uneven shares with two processes
        "--samples-per-prompt", "2",
        "--set", "loop.replay_buffer_size=4",
        "--set", "generator.max_new_tokens=3",
        "--set", "generator.batch_size=2",
        "--set", "train.learning_rate=1e-2",
        "--output-dir", output_dir,
        "--quiet",
    ]  # fmt: skip


def outputs(output_dir: str, iterations: int = ITERATIONS) -> tuple[list[dict], list]:
    """The metrics rows without their timing fields, and the samples table of each of the ``iterations``."""
    rows = [
        {key: value for key, value in row.items() if not key.startswith("time/") and "per_second" not in key}
        for row in read_metrics(os.path.join(output_dir, "metrics.jsonl"))
    ]
    tables = [
        pq.read_table(os.path.join(output_dir, "iterations", f"{iteration:06d}", "samples.parquet")).to_pylist()
        for iteration in range(iterations)
    ]
    return rows, tables


@pytest.mark.parametrize(
    "num_processes", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["one-process", "two-processes"]
)
def test_killed_and_resumed_run_writes_what_the_uninterrupted_run_writes(
    num_processes, tiny_llama_path, arithmetic_path, plugin_path, tmp_path
):
    whole_dir, killed_dir = str(tmp_path / "whole"), str(tmp_path / "killed")
    whole = run(num_processes, run_args(tiny_llama_path, arithmetic_path, whole_dir), plugin_path)
    assert whole.returncode == 0, whole.stderr[-4000:]

    killed = run(num_processes, run_args(tiny_llama_path, arithmetic_path, killed_dir), plugin_path,
                 fault=f"KILL:generation:{KILLED_IN}")  # fmt: skip
    assert killed.returncode != 0
    assert len(read_metrics(os.path.join(killed_dir, "metrics.jsonl"))) == KILLED_IN
    resumed = run(num_processes, ["--resume", "--output-dir", killed_dir, "--quiet"], plugin_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    whole_rows, whole_tables = outputs(whole_dir)
    resumed_rows, resumed_tables = outputs(killed_dir)
    assert [row["iteration"] for row in resumed_rows] == list(range(ITERATIONS))
    assert resumed_tables == whole_tables
    assert resumed_rows == whole_rows
