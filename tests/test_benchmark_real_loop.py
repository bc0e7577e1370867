"""The real-model loop benchmark runs end to end on a tiny model of the real model's config (iterframe's loop as
its own command; the hand loop where TRL 0.23.1 is installed) and reports per-stage seconds and held-out reward
(no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "real_loop_throughput.py"
ZOO_FAMILY = Path(__file__).resolve().parents[2] / "shared" / "model-zoo" / "smollm2-instruct"


@pytest.mark.skipif(not ZOO_FAMILY.is_dir(), reason=f"the model zoo is not at {ZOO_FAMILY}")
def test_benchmark_reports_the_command_time_stage_seconds_and_held_out_reward(tmp_path):
    command = [sys.executable, str(BENCHMARK), "--tiny", "--seeds", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stdout
    assert "real_loop_throughput.py --tiny" in report and re.search(r"nproc=\d+", report)
    line = re.search(
        r"iterframe seed 0: command (\d+\.\d) s; initial eval [\d.]+ s; s/iteration [\d.]+; (.*)", report
    )
    assert line, report[-2000:]
    assert float(line.group(1)) > 0
    assert re.search(
        r"mean s per stage: generate [\d.]+, score [\d.]+, filter [\d.]+, train [\d.]+, eval [\d.]+", report
    )
    assert re.search(r"held-out reward \d\.\d{3} -> \d\.\d{3}; load average at the end [\d.]+", report)


LOOP_TRAINING = BENCHMARK.parent / "loop_training_speed.py"


@pytest.mark.skipif(not ZOO_FAMILY.is_dir(), reason=f"the model zoo is not at {ZOO_FAMILY}")
@pytest.mark.parametrize("mapped", [False, True], ids=["owned", "keep-mapped"])
def test_loop_training_speed_reports_each_step_call_beside_its_replay(tmp_path, mapped):
    command = [sys.executable, str(LOOP_TRAINING), "--tiny", "--rounds", "1"] + (
        ["--keep-mapped"] if mapped else []
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stdout
    assert re.search(r"nproc=\d+", report) and ("(weights left mapped)" in report) == mapped
    calls = re.findall(r"  (\d+) samples, (\d+) tokens: [\d.]+ s, [\d.]+ tokens/s", report)
    assert calls and all(int(tokens) > int(samples) for samples, tokens in calls)
    for name in ("in the loop", "the same inputs replayed", "step-benchmark samples, as many"):
        assert re.search(rf"RESULT {name}: [\d.]+ tokens/s", report), report[-2000:]
    assert re.search(r"RESULT loop / benchmark-shaped: [\d.]+x", report)
