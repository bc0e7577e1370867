"""Which models may train on packed (padding-free) rows: an allow-list of architectures proven exact.

Each architecture on :data:`PACKABLE_ARCHITECTURES` passed ``tests/test_packing_architectures.py``: every
sample's logits in a packed row equal its logits run alone, with sequences longer than the model's sliding
window where it has one, under its default (causal) attention; a config switch that changes the mask
(:data:`MASK_SWITCHES`) takes a model off the list. :data:`EXCLUDED_ARCHITECTURES` names the ones that failed
that sweep and why; every other architecture trains padded because nobody has proven it exact.
"""

from __future__ import annotations

import inspect
import logging
from typing import Optional

import torch
import transformers

from iterframe.engine.model_support import native_decoder_reason

__all__ = [
    "EXCLUDED_ARCHITECTURES",
    "MASK_SWITCHES",
    "MINIMUM_TRANSFORMERS",
    "PACKABLE_ARCHITECTURES",
    "PACKING_OVERHEAD",
    "PackingCostModel",
    "attention_configs",
    "base_model",
    "ignores_right_padding",
    "mask_switch_reason",
    "resolve_padding_free",
    "unsupported_reason",
]

logger = logging.getLogger(__name__)

#: ``config.model_type`` of the decoder-only architectures whose packed rows are exact (see the module doc).
PACKABLE_ARCHITECTURES = frozenset(
    {
        *("cohere", "gemma", "gemma2", "gemma3_text", "gpt2", "gptj", "gpt_neox", "granite", "llama", "mistral"),
        *("mixtral", "olmo", "olmo2", "olmo3", "opt", "phi", "phi3", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe"),
        *("smollm3", "stablelm", "starcoder2"),
    }
)

#: Architectures whose packed rows are exact only from a transformers version on (before it, their layers do not
#: all go through the attention interface with their config, or their forward lacks ``logits_to_keep``).
MINIMUM_TRANSFORMERS = {"gptj": "5.24", "qwen2_moe": "5.24", "stablelm": "5.24"}

#: Architectures the sweep showed to mix samples (or fail) in a packed row, and why.
EXCLUDED_ARCHITECTURES = {
    "lfm2": "its short-convolution layers carry each sample's state into the next sample of a packed row",
    "jamba": "its Mamba layers carry each sample's state into the next sample of a packed row",
    "qwen3_next": "its linear-attention (gated DeltaNet) layers carry state from one sample into the next",
    "llama4_text": "its chunked local attention is applied through the attention mask, which packed rows skip",
    "falcon": "its attention layers need the attention mask, which packed rows skip",
    "bloom": "its ALiBi attention does not go through transformers' attention interface",
}


#: Config switches that change an allow-listed architecture's attention mask away from the causal one its packed
#: rows were proven with: each one's packing-safe value, and what it does otherwise.
MASK_SWITCHES = {
    "use_bidirectional_attention": (False, "makes attention bidirectional (every token sees the ones after it)"),
}


def mask_switch_reason(model) -> Optional[str]:
    """Why ``model``'s attention is not the causal attention its architecture packs with (``None`` when it is): a
    config switch of :data:`MASK_SWITCHES` set in any config the model reads, or, whatever switch did it, an
    attention layer that is not causal (``is_causal`` false)."""
    for config in attention_configs(model):
        for name, (safe, effect) in MASK_SWITCHES.items():
            value = getattr(config, name, safe)
            if value not in (safe, None):
                return f"its config sets {name}={value!r}, which {effect}"
    for name, module in model.named_modules():
        if getattr(module, "is_causal", True) is False:
            return f"its attention layer {name} is not causal (is_causal=False)"
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def base_model(model):
    """The transformers model inside DDP/PEFT wrappers (the one whose config names the attention kernel)."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attention_configs(model) -> list:
    """The distinct config objects the model and its submodules read (each layer reads its attention kernel
    from its own ``config``), the model's own first."""
    configs = {id(model.config): model.config}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            configs.setdefault(id(config), config)
    return list(configs.values())


def unsupported_reason(model) -> Optional[str]:
    """Why ``model`` cannot train on packed rows (``None`` when it can): it must be one of transformers' own
    decoder-only implementations of an architecture on :data:`PACKABLE_ARCHITECTURES`, with the sdpa or eager
    attention kernel, and a forward that takes ``position_ids`` and ``logits_to_keep``."""
    base = base_model(model)
    reason = native_decoder_reason(base, "padding-free training")
    if reason is not None:
        return reason
    model_type = getattr(base.config, "model_type", None)
    if model_type in EXCLUDED_ARCHITECTURES:
        return f"the {model_type} architecture cannot pack samples exactly: {EXCLUDED_ARCHITECTURES[model_type]}"
    if model_type not in PACKABLE_ARCHITECTURES:
        return (
            f"the {model_type} architecture is not on the padding-free allow-list (architectures proven exact: "
            f"{', '.join(sorted(PACKABLE_ARCHITECTURES))})"
        )
    minimum = MINIMUM_TRANSFORMERS.get(model_type)
    if minimum is not None and _version(transformers.__version__) < _version(minimum):
        return (
            f"packed rows of the {model_type} architecture are proven exact from transformers {minimum} on "
            f"(this is {transformers.__version__})"
        )
    reason = mask_switch_reason(base)
    if reason is not None:
        return f"packed rows of the {model_type} architecture are exact only with causal attention, but {reason}"
    parameters = inspect.signature(base.forward).parameters
    missing = [name for name in ("position_ids", "logits_to_keep") if name not in parameters]
    if missing:
        return f"the model's forward takes no {' or '.join(missing)}"
    return None


def ignores_right_padding(model) -> bool:
    """Whether ``model``'s outputs at the real positions of a right-padded micro-batch are the same without its
    attention mask: a decoder on :data:`PACKABLE_ARCHITECTURES` (where it may pack) attends causally by position
    in every layer and mixes positions nowhere else (its packed rows prove it), so no real position sees the
    padding after it, and the padded positions carry no loss."""
    return unsupported_reason(model) is None


def resolve_padding_free(model, requested: Optional[bool], pad_to_multiple_of: Optional[int]) -> bool:
    """Whether ``step()`` trains ``model`` on packed rows: ``requested`` (``padding_free``) when set, else
    whether the model can and ``pad_to_multiple_of`` is unset. ``True`` on a model that cannot pack raises a
    ``ValueError`` naming the reason; a model trained padded by default logs the reason once, here."""
    reason = unsupported_reason(model)
    if requested and reason is not None:
        raise ValueError(
            f"padding_free=True, but {reason}; set padding_free=False (or leave it unset to decide per model)."
        )
    if requested is not None:
        return bool(requested)
    if reason is not None:
        logger.info("Training on padded micro-batches (padding_free=False): %s.", reason)
    return reason is None and pad_to_multiple_of is None


#: What a packed micro-batch costs beyond its multiply-adds, as multiply-adds: the extra tensor operations of
#: the packed path (index copies into and out of the padded attention view per layer when the samples' lengths
#: differ, the layout and the loss positions per micro-batch) at ``operation cost`` each, plus, per token and
#: layer, ``copy width / hidden_size`` of the layers' work for the copies. Fitted on CPUs with
#: ``benchmarks/packing_choice.py``, which times micro-batches both ways (benchmarks/README.md): a small op costs
#: about as much as 70k multiply-adds, and an equal-length micro-batch packs only where it saves much of the head.
PACKING_OVERHEAD = {
    "operation cost": 70_000,
    "operations per layer": {"mixed lengths": 14, "equal lengths": 30},
    "operations per micro-batch": 10,
    "copy width": 24.0,
}


def _full_numel(parameter) -> int:
    """A parameter's size in the model, also when DeepSpeed ZeRO-3 keeps only a shard of it in this process."""
    return int(getattr(parameter, "ds_numel", parameter.numel()))


def _full_shape(parameter) -> tuple[int, ...]:
    return tuple(getattr(parameter, "ds_shape", parameter.shape))


class PackingCostModel:
    """Chooses, for each micro-batch, packed or padded: whichever costs less, in multiply-adds.

    Per token, the model's layers cost ``body`` multiply-adds (every weight but the input embeddings and the
    language-model head) and the head ``head``. A padded micro-batch runs the layers at all ``samples x longest``
    positions, and the head there too unless ``head_at_labels`` (the loss runs it only where a target carries
    loss, :mod:`iterframe.engine.label_logits`); a packed one runs the layers at its tokens only and the head
    only where a target carries loss, plus its overhead (:data:`PACKING_OVERHEAD`). Called with a micro-batch's
    samples, it says whether to pack.
    """

    def __init__(self, model, head_at_labels: bool = False):
        self.head_at_labels = head_at_labels
        base = base_model(model)
        embeddings, head = base.get_input_embeddings(), base.get_output_embeddings()
        total = sum(_full_numel(parameter) for parameter in base.parameters())
        self.head = _full_numel(head.weight) if head is not None else 0
        tied = head is not None and head.weight is embeddings.weight
        self.body = max(total - _full_numel(embeddings.weight) - (0 if tied else self.head), 1)
        self.hidden_size = _full_shape(embeddings.weight)[-1]
        self.num_layers = int(getattr(base.config, "num_hidden_layers", 1) or 1)

    def padded_cost(self, lengths: list[int], loss_positions: int = 0) -> float:
        head_positions = max(loss_positions, 1) if self.head_at_labels else len(lengths) * max(lengths)
        return len(lengths) * max(lengths) * self.body + head_positions * self.head

    def packed_cost(self, lengths: list[int], loss_positions: int) -> float:
        equal = min(lengths) == max(lengths)
        operations = (
            PACKING_OVERHEAD["operations per micro-batch"]
            + self.num_layers
            * (PACKING_OVERHEAD["operations per layer"]["equal lengths" if equal else "mixed lengths"])
        )
        copies = 0.0 if equal else PACKING_OVERHEAD["copy width"] / self.hidden_size
        return (
            sum(lengths) * self.body * (1 + copies)
            + max(loss_positions, 1) * self.head
            + operations * PACKING_OVERHEAD["operation cost"]
        )

    def __call__(self, samples) -> bool:
        lengths = [len(sample.input_ids) for sample in samples]
        padded = self.padded_cost(lengths)
        if self.packed_cost(lengths, 0) >= padded or self.head_at_labels:  # loss positions cost alike both ways
            return self.packed_cost(lengths, 0) < padded
        loss_positions = int(torch.cat([sample.labels[1:] for sample in samples]).ne(-100).sum())
        return self.packed_cost(lengths, loss_positions) < padded
