"""Shared fixtures: tiny local models and an offline, isolated environment for every test."""

from __future__ import annotations

import os

import pytest

# Never reach a hub, never ask wandb to log in, keep output quiet.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory) -> str:
    """A Llama-style causal LM (~30k params) with a locally trained BPE tokenizer, saved to a temp dir."""
    from iterframe.testing import build_tiny_causal_lm

    path = str(tmp_path_factory.mktemp("models") / "tiny-llama")
    build_tiny_causal_lm(path, architecture="llama")
    return path


@pytest.fixture(scope="session")
def tiny_qwen2_path(tmp_path_factory) -> str:
    """A Qwen2-style causal LM with a locally trained BPE tokenizer, saved to a temp dir."""
    from iterframe.testing import build_tiny_causal_lm

    path = str(tmp_path_factory.mktemp("models") / "tiny-qwen2")
    build_tiny_causal_lm(path, architecture="qwen2")
    return path


@pytest.fixture(scope="session")
def tiny_nopad_llama_path(tmp_path_factory) -> str:
    """A Llama-style causal LM whose tokenizer has no pad token (so pad falls back to eos)."""
    from iterframe.testing import build_tiny_causal_lm, train_bpe_tokenizer

    path = str(tmp_path_factory.mktemp("models") / "tiny-nopad-llama")
    build_tiny_causal_lm(path, train_bpe_tokenizer(pad=False), architecture="llama")
    return path


@pytest.fixture(scope="session")
def tiny_t5_path(tmp_path_factory) -> str:
    """A T5-style encoder-decoder with a locally trained BPE tokenizer, saved to a temp dir."""
    from iterframe.testing import build_tiny_seq2seq_lm

    path = str(tmp_path_factory.mktemp("models") / "tiny-t5")
    build_tiny_seq2seq_lm(path)
    return path
