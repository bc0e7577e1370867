"""The step-throughput benchmark runs end to end on a tiny model and reports its numbers (no timing asserted)."""

from __future__ import annotations

import importlib.util
import random
import re
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "step_throughput.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("step_throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_generated_texts_span_the_requested_token_range():
    bench = _load_benchmark()
    rng = random.Random(0)
    lexicon = bench.make_lexicon(rng, 300)
    tokenizer = bench.train_bpe_tokenizer([bench.make_sentence_stream(rng, lexicon, 100) for _ in range(50)], 300)
    texts = bench.make_texts(tokenizer, rng, lexicon, 20, 16, 60)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    assert min(lengths) >= 15 and max(lengths) <= 61, lengths
    assert max(lengths) - min(lengths) > 20, "lengths should be mixed, not all alike"
    assert bench.real_token_count(tokenizer, texts, 30) == sum(min(n + 1, 30) for n in lengths)  # +1: <s>


def test_benchmark_prints_throughput_padding_peak_fraction_and_machine(tmp_path):
    command = [sys.executable, str(BENCHMARK), "--preset", "tiny", "--no-trl", "--texts-per-step", "8"]
    command += ["--rounds", "1", "--peak-size", "128"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stdout
    assert "command: " in report and "step_throughput.py --preset tiny" in report
    assert re.search(r"nproc=\d+; torch threads=\d+", report)
    assert re.search(r"torch \S+, transformers \S+", report)
    assert re.search(r"iterframe:\s+\d+\.\d real tokens/s .*; padding \d+\.\d%; peak RSS", report)
    assert re.search(r"matmul-peak fraction: \d+\.\d% \(6 x [\d.]+M params", report)
    assert "forward + loss" in report and "backward" in report
