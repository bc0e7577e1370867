"""Padding-free micro-batches: a micro-batch's samples laid end to end in one row, each attending only to itself.

The model runs on exactly the samples' tokens (no padding in any matrix product), positions restart at 0 for
each sample, and the language-model head is computed only where a label carries loss. Attention goes through
``packed_sdpa``, registered with transformers' attention interface: per layer, one
``scaled_dot_product_attention`` call over a right-padded ``[samples, longest]`` view of the row (gathered with
one index copy, scattered back with one more), causal within each sample, so no sample sees another.

Which models may pack is an allow-list of architectures (:mod:`iterframe.engine.packing_support`), each proven
exact by ``tests/test_packing_architectures.py``. Nothing outlives a packed pass, and nothing is shared between
models: while the pass runs, the configs that the model's layers read name ``packed_sdpa`` as their kernel and
carry where the samples sit (:class:`PackedLayout`); afterwards both are restored exactly.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F

from iterframe.engine.packing_support import attention_configs, base_model, unsupported_reason

__all__ = [
    "ATTENTION_NAME",
    "LAYOUT_ATTRIBUTE",
    "PackedLayout",
    "packed_attention",
    "packed_sdpa",
    "unsupported_reason",
]

#: The name ``packed_sdpa`` is registered under in transformers' attention interface.
ATTENTION_NAME = "iterframe_packed_sdpa"
#: The attribute of a layer's config that holds the pass's :class:`PackedLayout` while the pass runs.
LAYOUT_ATTRIBUTE = "_iterframe_packed_layout"


class PackedLayout:
    """Where each sample of a packed row sits: its ``(start, end)``, and each token's place in the right-padded
    ``[samples, longest]`` view that attention runs on. ``calls`` counts the attention calls that used it."""

    def __init__(self, segments: list[tuple[int, int]]):
        self.segments = [(int(start), int(end)) for start, end in segments]
        lengths = [end - start for start, end in self.segments]
        self.num_samples, self.longest, self.num_tokens = len(lengths), max(lengths), sum(lengths)
        self.equal_lengths = all(length == self.longest for length in lengths)
        self.padded_index = None
        if not self.equal_lengths:
            rows = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
            starts = torch.tensor([start for start, _ in self.segments])
            self.padded_index = rows * self.longest + torch.arange(self.num_tokens) - starts[rows]
        self.calls = 0

    def to_padded(self, states: torch.Tensor) -> torch.Tensor:
        """``[1, heads, tokens, dim]`` -> ``[samples, heads, longest, dim]`` (zeros after each sample's end)."""
        tokens = states.transpose(1, 2)[0]  # [tokens, heads, dim]
        if self.padded_index is not None and self.padded_index.device != states.device:
            self.padded_index = self.padded_index.to(states.device)
        if self.equal_lengths:
            padded = tokens.reshape(self.num_samples, self.longest, *tokens.shape[1:])
        else:
            padded = tokens.new_zeros(self.num_samples * self.longest, *tokens.shape[1:])
            padded = padded.index_copy(0, self.padded_index, tokens)
            padded = padded.view(self.num_samples, self.longest, *tokens.shape[1:])
        return padded.transpose(1, 2)

    def from_padded(self, states: torch.Tensor) -> torch.Tensor:
        """``[samples, heads, longest, dim]`` -> ``[1, tokens, heads, dim]``, the padding dropped."""
        tokens = states.transpose(1, 2).reshape(
            self.num_samples * self.longest, *states.shape[1:2], states.shape[-1]
        )
        if not self.equal_lengths:
            tokens = tokens.index_select(0, self.padded_index)
        return tokens[None]


def _causal_mask(longest: int, window: Optional[int], device) -> torch.Tensor:
    """Causal attention, limited to the last ``window`` positions when given (query ``i`` sees keys
    ``i - window < j <= i``, as transformers' sliding-window mask)."""
    positions = torch.arange(longest, device=device)
    distance = positions[:, None] - positions[None, :]
    return (distance >= 0) & (distance < window) if window is not None else distance >= 0


def _soft_capped_attention(query, key, value, mask, scaling, softcap, dropout):
    """Attention whose logits are soft-capped (``softcap * tanh(logits / softcap)``) before the mask, as
    transformers' eager attention does for Gemma 2."""
    scores = torch.matmul(query, key.transpose(2, 3)) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = F.dropout(F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype), p=dropout)
    return torch.matmul(weights, value)


def packed_sdpa(
    module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, sliding_window=None, **kwargs
):
    """Causal attention within each sample of a packed row: ``query`` is [1, heads, tokens, dim], ``key`` and
    ``value`` [1, kv heads, tokens, dim]; returns ``([1, tokens, heads, dim], None)`` like transformers' own
    attention functions. One ``scaled_dot_product_attention`` call covers every sample. A sliding window comes
    from the call or, for models that apply it only through their mask, from the attention module."""
    layout: Optional[PackedLayout] = vars(getattr(module, "config", None) or module).get(LAYOUT_ATTRIBUTE)
    if layout is None:
        raise RuntimeError(
            f"The {ATTENTION_NAME!r} attention only runs inside iterframe's padding-free training step "
            f"(on a layer whose config holds the step's sample layout)."
        )
    if kwargs.get("s_aux") is not None:
        raise RuntimeError(f"{ATTENTION_NAME!r} does not implement attention sinks (s_aux); train padded instead.")
    layout.calls += 1
    groups = query.shape[1] // key.shape[1]
    query, key, value = layout.to_padded(query), layout.to_padded(key), layout.to_padded(value)
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    window = sliding_window if sliding_window is not None else getattr(module, "sliding_window", None)
    window = window if window is not None and layout.longest > window else None
    dropout = dropout if module.training else 0.0
    softcap = kwargs.get("softcap")
    if softcap is not None:
        mask = _causal_mask(layout.longest, window, query.device)
        output = _soft_capped_attention(query, key, value, mask, scaling, softcap, dropout)
    else:
        mask = None if window is None else _causal_mask(layout.longest, window, query.device)
        output = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, is_causal=mask is None, scale=scaling, dropout_p=dropout
        )
    return layout.from_padded(output), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, packed_sdpa)


@contextlib.contextmanager
def packed_attention(model, segments: list[tuple[int, int]]):
    """Route ``model``'s attention through ``packed_sdpa`` for the given samples' ``(start, end)`` while the
    block runs (forward and backward, so recomputation under gradient checkpointing sees them too); raises if
    no layer used it (a model that does not go through transformers' attention interface).

    Only the configs the model's layers read are changed, without transformers' setter (which would also
    overwrite sub-configs, such as a vision tower's), and each is restored to exactly what it was."""
    base = base_model(model)
    configs = attention_configs(base)
    layout = PackedLayout(segments)
    saved = [
        (config.__dict__.get("_attn_implementation_internal"), LAYOUT_ATTRIBUTE in vars(config))
        for config in configs
    ]
    try:
        for config in configs:
            vars(config).update({"_attn_implementation_internal": ATTENTION_NAME, LAYOUT_ATTRIBUTE: layout})
        yield layout
        if layout.calls == 0:
            raise RuntimeError(
                f"{type(base).__name__} did not call transformers' attention interface, so its samples could "
                "not be kept apart in a packed row; set padding_free=False."
            )
    finally:
        for config, (kernel, had_layout) in zip(configs, saved):
            vars(config)["_attn_implementation_internal"] = kernel
            if not had_layout:
                vars(config).pop(LAYOUT_ATTRIBUTE, None)


_register()
