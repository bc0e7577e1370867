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
