"""The generation benchmark runs end to end on a tiny model of the real model's config and reports every method's
time, tokens/s and time split, and the greedy eval comparison (no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "generation_throughput.py"
ZOO_FAMILY = Path(__file__).resolve().parents[2] / "shared" / "model-zoo" / "smollm2-instruct"


@pytest.mark.skipif(not ZOO_FAMILY.is_dir(), reason=f"the model zoo is not at {ZOO_FAMILY}")
def test_benchmark_reports_each_method_the_ratio_the_time_split_and_the_greedy_eval(tmp_path):
    command = [sys.executable, str(BENCHMARK), "--tiny", "--rounds", "1", "--prompts", "2", "--k", "2"]
    command += ["--max-new-tokens", "4", "--eval-prompts", "4", "--threads", "1", "--profile", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stdout
    assert "generation_throughput.py --tiny" in report and re.search(r"nproc=\d+", report)
    for method in ("iterframe loop", "iterframe use_generate", "model.generate"):
        assert re.search(rf"{method}: +\d+\.\d+ s for 2 prompts .* generated tokens/s; .*prefill \d+%", report)
    assert re.search(r"RESULT sampling 2 prompts x K=2, max_new_tokens 4.*iterframe loop \d+\.\d+x", report)
    assert re.search(r"load average [\d.]+ [\d.]+ [\d.]+ ---", report)
    assert "cProfile of one iterframe loop call" in report and "tottime" in report
    assert re.search(r"RESULT greedy eval 4 prompts.*iterframe loop \d+\.\d+x", report)
    assert re.search(r"greedy completions identical to model.generate's: \d of 4", report)
