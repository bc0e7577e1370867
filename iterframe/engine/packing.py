"""Padding-free micro-batches: a micro-batch's samples laid end to end in one row, each attending only to itself.

The model runs on exactly the samples' tokens (no padding in any matrix product), positions restart at 0 for
each sample, and the language-model head is computed only where a label carries loss. Attention goes through
``packed_sdpa``, registered with transformers' attention interface: one causal ``scaled_dot_product_attention``
per sample, so no sample sees another. Used for transformers' own decoder-only models with the sdpa or eager
kernel; the trainer pads micro-batches for every other model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Optional

import torch
import torch.nn.functional as F

from iterframe.engine.model_support import native_decoder_reason

__all__ = ["ATTENTION_NAME", "packed_attention", "packed_sdpa", "unsupported_reason"]

#: The name ``packed_sdpa`` is registered under in transformers' attention interface.
ATTENTION_NAME = "iterframe_packed_sdpa"


@dataclasses.dataclass
class _PackedPass:
    """The packed forward (and backward) pass under way: ``(start, end)`` of each sample in the row, and how
    many attention calls it made. Process-wide, not per thread: autograd may recompute a checkpointed forward
    on its own device thread."""

    segments: Optional[list[tuple[int, int]]] = None
    calls: int = 0


_ACTIVE = _PackedPass()


def packed_sdpa(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """Causal attention within each sample of a packed row. ``query`` is [1, heads, tokens, dim], ``key`` and
    ``value`` [1, kv heads, tokens, dim]; returns ``([1, tokens, heads, dim], None)`` like transformers' own
    attention functions."""
    segments = _ACTIVE.segments
    if segments is None:
        raise RuntimeError(
            f"The {ATTENTION_NAME!r} attention only runs inside iterframe's padding-free training step."
        )
    _ACTIVE.calls += 1
    groups = query.shape[1] // key.shape[1]
    dropout = dropout if module.training else 0.0
    outputs = []
    for start, end in segments:
        keys, values = key[:, :, start:end], value[:, :, start:end]
        if groups > 1:
            keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
        outputs.append(
            F.scaled_dot_product_attention(
                query[:, :, start:end], keys, values, is_causal=True, scale=scaling, dropout_p=dropout
            )
        )
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, packed_sdpa)


def _base_model(model):
    """The transformers model inside DDP/PEFT wrappers (the one whose config names the attention kernel)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def unsupported_reason(model) -> Optional[str]:
    """Why ``model`` cannot train on packed rows (``None`` when it can): it must be one of transformers' own
    decoder-only implementations, with the sdpa or eager attention kernel, no sliding window, and a forward that
    takes ``position_ids`` and ``logits_to_keep``."""
    base = _base_model(model)
    reason = native_decoder_reason(base, "padding-free training")
    if reason is not None:
        return reason
    layer_types = getattr(base.config, "layer_types", None) or []
    if getattr(base.config, "sliding_window", None) or "sliding_attention" in layer_types:
        return "the model uses sliding-window attention"
    parameters = inspect.signature(base.forward).parameters
    missing = [name for name in ("position_ids", "logits_to_keep") if name not in parameters]
    if missing:
        return f"the model's forward takes no {' or '.join(missing)}"
    return None


@contextlib.contextmanager
def packed_attention(model, segments: list[tuple[int, int]]):
    """Route ``model``'s attention through ``packed_sdpa`` for the given samples' ``(start, end)`` while the
    block runs (forward and backward, so recomputation under gradient checkpointing sees them too); raises if
    no layer used it (a model that does not go through transformers' attention interface)."""
    config = _base_model(model).config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION_NAME
    _ACTIVE.segments, _ACTIVE.calls = list(segments), 0
    try:
        yield
        if _ACTIVE.calls == 0:
            raise RuntimeError(
                f"{type(_base_model(model)).__name__} did not call transformers' attention interface, so its "
                "samples could not be kept apart in a packed row; set padding_free=False."
            )
    finally:
        config._attn_implementation = previous
        _ACTIVE.segments, _ACTIVE.calls = None, 0


_register()
