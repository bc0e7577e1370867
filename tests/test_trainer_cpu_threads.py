"""Tiny models train on one CPU thread unless OMP_NUM_THREADS says otherwise."""

from __future__ import annotations

import pytest
import torch

from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.engine.cpu_threads import TINY_MODEL_PARAMETERS, use_one_thread_for_tiny_models


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_tiny_model_trains_on_one_thread_when_no_thread_count_was_chosen(two_threads, tiny_llama_path, caplog):
    with caplog.at_level("INFO", logger="iterframe.engine.cpu_threads"):
        IterativeSFTTrainer(tiny_llama_path, args=IterativeSFTConfig(output_dir="unused", report_to="none"))
    assert torch.get_num_threads() == 1
    assert "with 1 thread instead of 2 (set OMP_NUM_THREADS to choose)" in caplog.text


def test_omp_num_threads_or_a_bigger_model_keeps_the_thread_count(two_threads, monkeypatch):
    big = torch.nn.Linear(TINY_MODEL_PARAMETERS // 1000 + 1, 1000)
    assert use_one_thread_for_tiny_models(big, "cpu") is False and torch.get_num_threads() == 2
    tiny = torch.nn.Linear(10, 10)
    assert use_one_thread_for_tiny_models(tiny, "cuda") is False and torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert use_one_thread_for_tiny_models(tiny, "cpu") is False and torch.get_num_threads() == 2
