"""Tiny, offline models and tokenizers for tests, examples and benchmarks.

Everything here is built locally (a tokenizer trained with ``tokenizers``, a model from a config) and saved to a
directory, so callers exercise the real ``from_pretrained(path)`` code path without any hub access.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Optional

import torch

__all__ = [
    "DEFAULT_CORPUS",
    "build_char_tokenizer",
    "build_tiny_causal_lm",
    "build_tiny_seq2seq_lm",
    "train_bpe_tokenizer",
]

DEFAULT_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is 12 + 7? Answer: 19",
    "Iterative fine-tuning trains on the model's own best completions.",
    "Expert iteration, rejection sampling and best-of-n distillation are close cousins.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ? ! , . : ; ( ) [ ] { }",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]

_SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def _wrap_fast_tokenizer(raw_tokenizer, *, pad: bool, chat_template: Optional[str] = None):
    from transformers import PreTrainedTokenizerFast

    special = dict(_SPECIAL_TOKENS)
    if not pad:
        special.pop("pad_token")
    # what a decoder-only model takes, as Llama's and Qwen's tokenizers declare it (without it transformers 4.x's
    # tokenizer also returns token_type_ids, which generate() refuses for these models)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw_tokenizer, model_input_names=["input_ids", "attention_mask"], **special
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def _bos_template(raw_tokenizer):
    from tokenizers.processors import TemplateProcessing

    bos_id = raw_tokenizer.token_to_id(_SPECIAL_TOKENS["bos_token"])
    raw_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )


def train_bpe_tokenizer(
    corpus: Optional[Iterable[str]] = None,
    vocab_size: int = 256,
    *,
    pad: bool = True,
    add_bos: bool = True,
    chat_template: Optional[str] = None,
):
    """Train a byte-level BPE tokenizer on ``corpus`` and wrap it as a ``PreTrainedTokenizerFast``.

    Args:
        corpus: texts to train on (defaults to a small built-in corpus).
        vocab_size: target vocabulary size, special tokens included.
        pad: give the tokenizer a ``<pad>`` token; ``False`` leaves ``pad_token`` unset.
        add_bos: prepend ``<s>`` when encoding, like Llama tokenizers.
        chat_template: optional Jinja chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    specials = [_SPECIAL_TOKENS[key] for key in ("pad_token", "bos_token", "eos_token", "unk_token")]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(list(corpus or DEFAULT_CORPUS), trainer=trainer)
    if add_bos:
        _bos_template(raw)
    return _wrap_fast_tokenizer(raw, pad=pad, chat_template=chat_template)


def build_char_tokenizer(alphabet: str, *, add_bos: bool = True, chat_template: Optional[str] = None):
    """A character-level tokenizer over ``alphabet`` (one token per character), with pad/bos/eos/unk.

    Args:
        alphabet: every character the tokenizer knows; others map to ``<unk>``.
        add_bos: prepend ``<s>`` when encoding.
        chat_template: optional Jinja chat template.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {}
    for token in [_SPECIAL_TOKENS[key] for key in ("pad_token", "bos_token", "eos_token", "unk_token")]:
        vocab[token] = len(vocab)
    for char in dict.fromkeys(alphabet):
        vocab.setdefault(char, len(vocab))
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token=_SPECIAL_TOKENS["unk_token"]))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    raw.decoder = decoders.Fuse()
    if add_bos:
        _bos_template(raw)
    return _wrap_fast_tokenizer(raw, pad=True, chat_template=chat_template)


def build_tiny_causal_lm(
    save_dir: Optional[str] = None,
    tokenizer=None,
    *,
    architecture: str = "llama",
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_key_value_heads: Optional[int] = None,
    intermediate_size: Optional[int] = None,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
    seed: int = 0,
):
    """Build a randomly initialised causal LM (``"llama"`` or ``"qwen2"``) sized for ``tokenizer``
    (``num_key_value_heads`` below ``num_heads`` gives grouped-query attention).

    Returns ``(model, tokenizer)``; with ``save_dir``, both are also saved there with ``save_pretrained``.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    tokenizer = tokenizer if tokenizer is not None else train_bpe_tokenizer()
    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config}[architecture]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_key_value_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    if save_dir is not None:
        os.makedirs(save_dir, exist_ok=True)
        model.save_pretrained(save_dir)
        tokenizer.save_pretrained(save_dir)
    return model, tokenizer


def build_tiny_seq2seq_lm(save_dir: Optional[str] = None, tokenizer=None, *, d_model: int = 32, seed: int = 0):
    """Build a randomly initialised T5-style encoder-decoder sized for ``tokenizer``.

    Returns ``(model, tokenizer)``; with ``save_dir``, both are also saved there with ``save_pretrained``.
    """
    from transformers import AutoModelForSeq2SeqLM, T5Config

    tokenizer = tokenizer if tokenizer is not None else train_bpe_tokenizer(add_bos=False)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(config)
    if save_dir is not None:
        os.makedirs(save_dir, exist_ok=True)
        model.save_pretrained(save_dir)
        tokenizer.save_pretrained(save_dir)
    return model, tokenizer
