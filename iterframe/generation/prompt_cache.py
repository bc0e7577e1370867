"""The KV cache of a batch of prompts, computed once and repeated for each prompt's K samples."""

from __future__ import annotations

import inspect
from typing import Optional

import torch

__all__ = ["cache_argument", "shared_prompt_cache"]


def cache_argument(model, parameters) -> Optional[str]:
    """The name under which ``model`` takes and returns its KV cache (``cache`` in transformers 5,
    ``past_key_values`` before), or ``None`` when it cannot continue from a prefilled cache the way ``generate``
    would have filled it (encoder-decoders, forwards without ``position_ids`` such as wrapped models, a fixed
    cache implementation, beam search)."""
    generation_config = getattr(model, "generation_config", None)
    if (
        getattr(model.config, "is_encoder_decoder", False)
        or getattr(generation_config, "cache_implementation", None)
        or (getattr(generation_config, "num_beams", 1) or 1) > 1
        or "position_ids" not in parameters
    ):
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def shared_prompt_cache(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_samples: int):
    """``(argument name, cache)``: the KV cache of every left-padded prompt but its last token, computed once and
    repeated for the prompt's ``num_samples`` samples; ``None`` when there is nothing to share or the model cannot
    continue from it.

    ``generate(num_return_sequences=K)`` copies each prompt K times before its first forward pass. Given this
    cache it runs only the prompts' last tokens, at the same positions and with the same attention, so the logits,
    and hence the samples drawn with a given seed, are those it would have produced, for one prompt pass, not K.
    """
    from transformers import DynamicCache

    if num_samples < 2 or input_ids.shape[1] < 2:
        return None
    parameters = inspect.signature(model.forward).parameters
    argument = cache_argument(model, parameters)
    if argument is None:
        return None
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # generate's positions for left-padded rows
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
    inputs = {name: tensor[:, :-1] for name, tensor in inputs.items()}
    if "logits_to_keep" in parameters:
        inputs["logits_to_keep"] = 1
    cache = getattr(model(**inputs, use_cache=True), argument, None)
    if not isinstance(cache, DynamicCache):
        return None
    cache.batch_repeat_interleave(num_samples)
    return argument, cache
