"""The language-model head run only where a label carries loss, and the cross-entropy over it in chunks.

With a large vocabulary the head and the cross-entropy are a large share of a step (49k logits per position on
SmolLM2), and most positions of a chat sample are prompt, which carries no loss. Here the model runs with its
head bypassed (it computes logits for no position), its last hidden states are gathered at the positions whose
next-token label is not -100, and the head and the cross-entropy run on those in chunks of at most
:data:`CHUNK_LOGITS` logits; a chunk's logits are recomputed in backward rather than kept, so no micro-batch holds
tokens x vocabulary floats. Loss and gradients are those of the full path (``tests/test_label_logits.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from iterframe.engine.batching import IGNORE_INDEX
from iterframe.engine.packing_support import PACKABLE_ARCHITECTURES, base_model

__all__ = ["CHUNK_LOGITS", "LOGIT_TRANSFORMS", "chunked_cross_entropy", "head_inputs", "logit_transform"]

#: The most logits (positions x vocabulary) one chunk of the loss computes at once: 32 MiB of float32.
CHUNK_LOGITS = 2**23


def _softcap(base) -> Optional[Callable]:
    cap = getattr(base.config, "final_logit_softcapping", None)
    return None if cap is None else (lambda logits: torch.tanh(logits / cap) * cap)


#: What an architecture's forward does to its head's output before returning it as logits, where it does
#: anything (every other architecture of :data:`~iterframe.engine.packing_support.PACKABLE_ARCHITECTURES`
#: returns the head's output as it is).
LOGIT_TRANSFORMS: dict[str, Callable] = {
    "cohere": lambda base: lambda logits: logits * base.logit_scale,
    "granite": lambda base: lambda logits: logits / base.config.logits_scaling,
    "gemma2": _softcap,
    "gemma3_text": _softcap,
}


def _identity(logits: torch.Tensor) -> torch.Tensor:
    return logits


def logit_transform(model) -> Optional[Callable]:
    """The function that turns ``model``'s head output into its logits, for one of transformers' own decoders
    whose forward is known (:data:`~iterframe.engine.packing_support.PACKABLE_ARCHITECTURES`); ``None`` for any
    other model, whose loss then goes through its full logits."""
    base = base_model(model)
    config = getattr(base, "config", None)
    module = type(base).__module__
    if config is None or getattr(config, "is_encoder_decoder", False) or not module.startswith("transformers."):
        return None
    if type(base).__name__.startswith("FSDP") or base.get_output_embeddings() is None:
        return None
    model_type = getattr(config, "model_type", None)
    if model_type not in PACKABLE_ARCHITECTURES:
        return None
    return (LOGIT_TRANSFORMS[model_type](base) if model_type in LOGIT_TRANSFORMS else None) or _identity


class _HeadInputs:
    hidden_states: Optional[torch.Tensor] = None


@contextlib.contextmanager
def head_inputs(model) -> Iterator[_HeadInputs]:
    """While active, the model's head hands over the hidden states it is given (``captured.hidden_states``) and
    computes logits for none of them."""
    captured = _HeadInputs()

    def bypass(module, args):
        if not args:
            raise RuntimeError("The language-model head was called without its hidden states as an argument.")
        captured.hidden_states = args[0]
        return (args[0][..., :0, :], *args[1:])

    handle = base_model(model).get_output_embeddings().register_forward_pre_hook(bypass)
    try:
        yield captured
    finally:
        handle.remove()


def _chunk_loss(head, transform, hidden_states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = transform(head(hidden_states)).float()
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_cross_entropy(model, transform, hidden_states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``model``'s logits at the flat positions ``hidden_states`` [positions, hidden]
    against ``targets`` [positions], at most :data:`CHUNK_LOGITS` logits at a time (when there is more than one
    chunk, each chunk's logits are recomputed in backward instead of kept)."""
    head = base_model(model).get_output_embeddings()
    vocabulary = int(getattr(head, "out_features", 0) or head.weight.shape[0])
    rows = max(1, CHUNK_LOGITS // vocabulary)
    if hidden_states.shape[0] <= rows:
        return _chunk_loss(head, transform, hidden_states, targets)
    total = hidden_states.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden_states.shape[0], rows):
        chunk = slice(start, start + rows)
        total = total + checkpoint(
            _chunk_loss, head, transform, hidden_states[chunk], targets[chunk], use_reentrant=False
        )
    return total
