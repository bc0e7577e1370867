"""What iterframe's fast paths (the ``hf`` generator's decoding loop, padding-free training) need of a model."""

from __future__ import annotations

from typing import Optional

__all__ = ["ATTENTION_KERNELS", "native_decoder_reason", "vocab_size"]

#: The attention kernels both fast paths drive (they pass masks and call attention the way these take them).
ATTENTION_KERNELS = ("sdpa", "eager")


def _implementation_class(model) -> type:
    """The model's class; for a model FSDP2 sharded in place (``fully_shard`` gives it the class
    ``FSDP<Name>(FSDPModule, <Name>)``), the class it had."""
    model_class = type(model)
    bases = model_class.__bases__
    sharded_in_place = len(bases) == 2 and bases[0].__name__ == "FSDPModule"
    if sharded_in_place and model_class.__name__ == f"FSDP{bases[1].__name__}":
        return bases[1]
    return model_class


def native_decoder_reason(model, feature: str) -> Optional[str]:
    """Why ``model`` is not one of transformers' own decoder-only implementations running the sdpa or eager
    attention kernel (``None`` when it is); ``feature`` names what needs it, for the message."""
    config = getattr(model, "config", None)
    if config is None or not _implementation_class(model).__module__.startswith("transformers.models."):
        return "the model is not one of transformers' own implementations"
    if getattr(config, "is_encoder_decoder", False):
        return "the model is an encoder-decoder"
    kernel = getattr(config, "_attn_implementation", None)
    if kernel not in ATTENTION_KERNELS:
        return f"the model uses the {kernel!r} attention kernel ({feature} drives sdpa and eager)"
    return None


def vocab_size(model) -> Optional[int]:
    """How many token ids the model embeds (its input embeddings' rows, else ``config.vocab_size``)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and hasattr(embeddings, "num_embeddings"):
        return int(embeddings.num_embeddings)
    return getattr(model.config, "vocab_size", None)
