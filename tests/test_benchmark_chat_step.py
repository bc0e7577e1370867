"""The chat-sample step benchmark runs end to end on a tiny model of the real model's config and reports its
numbers (no timing asserted); its samples have the chat shape asked for."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ZOO_FAMILY = Path(__file__).resolve().parents[2] / "shared" / "model-zoo" / "smollm2-instruct"

pytestmark = pytest.mark.skipif(not ZOO_FAMILY.is_dir(), reason=f"the model zoo is not at {ZOO_FAMILY}")


def test_chat_samples_have_chat_prompts_answers_of_the_asked_length_and_completion_only_labels(monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from chat_workload import chat_samples

    tokenizer = AutoTokenizer.from_pretrained(ZOO_FAMILY)
    samples = chat_samples(tokenizer, random.Random(0), 20, (30, 60), (3, 20))
    for input_ids, labels in samples:
        prompt_length = int(labels.eq(-100).sum())
        assert 30 <= prompt_length <= 60
        assert 3 <= len(input_ids) - prompt_length <= 20
        assert labels[:prompt_length].eq(-100).all() and labels[prompt_length:].eq(input_ids[prompt_length:]).all()
        assert int(input_ids[-1]) == tokenizer.eos_token_id
        text = tokenizer.decode(input_ids[:prompt_length])
        assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")


def test_benchmark_prints_label_tokens_per_second_memory_and_matmul_share(tmp_path):
    command = [sys.executable, str(BENCHMARKS / "chat_step_throughput.py"), "--tiny", "--no-trl", "--rounds", "1"]
    command += ["--samples-per-step", "8", "--peak-size", "128", "--shapes", "prompt-heavy"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stdout
    assert "chat_step_throughput.py --tiny" in report and re.search(r"nproc=\d+", report)
    assert re.search(r"prompt-heavy: prompts 30-60 tokens, answers 3-20; .*; load average [\d.]+", report)
    assert re.search(r"iterframe:\s+\d+\.\d label tokens/s .*real tokens/s; padding", report)
    assert re.search(r"peak tensor memory of a step [1-9]\d* MiB", report)
    assert re.search(r"matmul-peak share: \d+\.\d%", report)
    assert "forward + loss" in report and "backward" in report


def test_the_work_bound_counts_padding_for_both_and_the_head_at_label_positions_for_iterframe(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from chat_step_throughput import matmul_work_per_token

    # body 100, head 25 multiply-adds a position; 20% of TRL's positions padding; labels on 20% of the tokens
    assert matmul_work_per_token(100, 25, 0.0, 0.2, head_everywhere=False) == pytest.approx(105.0)
    assert matmul_work_per_token(100, 25, 0.2, 0.2, head_everywhere=True) == pytest.approx(156.25)
    assert matmul_work_per_token(100, 25, 0.5, 1.0, head_everywhere=False) == pytest.approx(225.0)
