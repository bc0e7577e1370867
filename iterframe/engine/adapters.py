"""PEFT adapters (LoRA and friends): wrapping a model, building a LoRA config, merging for export."""

from __future__ import annotations

import os
from typing import Optional, Union

from iterframe.engine.file_modes import follow_umask

__all__ = ["build_lora_config", "check_adapters", "is_peft_model", "merged_copy", "wrap_with_adapters"]


def _require_peft():
    try:
        import peft
    except ImportError as error:  # pragma: no cover - peft is installed with the [peft] extra
        raise ImportError("Adapters need the `peft` package: pip install 'iterframe[peft]'.") from error
    return peft


def is_peft_model(model) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (without importing peft when it is not installed)."""
    return any(cls.__name__ == "PeftModel" for cls in type(model).__mro__)


def _refuse_prompt_learning(peft_config) -> None:
    if getattr(peft_config, "is_prompt_learning", False):
        raise ValueError(
            f"{type(peft_config).__name__} is a prompt-learning adapter: it puts virtual tokens before every "
            "input, which step() neither gives positions nor leaves out of the labels, so it cannot train here. "
            "Use weight adapters instead (LoraConfig, e.g. iterframe.engine.adapters.build_lora_config)."
        )


def check_adapters(model) -> None:
    """Refuse a ``PeftModel`` with a prompt-learning adapter (prompt tuning, prefix tuning, P-tuning), by name."""
    for peft_config in (getattr(model, "peft_config", None) or {}).values() if is_peft_model(model) else ():
        _refuse_prompt_learning(peft_config)


def build_lora_config(
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Union[str, list[str], None] = "all-linear",
    is_encoder_decoder: bool = False,
):
    """A ``peft.LoraConfig`` for a causal or encoder-decoder LM.

    Args:
        r: adapter rank.
        alpha: LoRA scaling numerator (``lora_alpha``).
        dropout: dropout on the adapter input.
        target_modules: module names (or ``"all-linear"``) to adapt.
        is_encoder_decoder: build a ``SEQ_2_SEQ_LM`` config instead of ``CAUSAL_LM``.
    """
    peft = _require_peft()
    if r < 1:
        raise ValueError(f"LoRA rank r={r} must be a positive integer.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout={dropout} must be in [0, 1).")
    if isinstance(target_modules, str) and target_modules != "all-linear":
        target_modules = [name.strip() for name in target_modules.split(",") if name.strip()]
    task_type = peft.TaskType.SEQ_2_SEQ_LM if is_encoder_decoder else peft.TaskType.CAUSAL_LM
    return peft.LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type=task_type
    )


def wrap_with_adapters(model, peft_config):
    """Return ``model`` wrapped as a ``PeftModel`` with ``peft_config`` (only adapter weights stay trainable)."""
    peft = _require_peft()
    if is_peft_model(model):
        raise ValueError("The model already has adapters; pass either a PeftModel or peft_config, not both.")
    if not isinstance(peft_config, peft.PeftConfig):
        raise TypeError(f"peft_config must be a peft.PeftConfig, got {type(peft_config).__name__}.")
    _refuse_prompt_learning(peft_config)
    return peft.get_peft_model(model, peft_config)


def merged_copy(model, save_dir: Optional[str] = None):
    """A standalone copy of ``model`` with adapters merged into the base weights (the model is unchanged).

    With ``save_dir``, the merged model is also saved there with ``save_pretrained``.
    """
    import copy

    if not is_peft_model(model):
        raise ValueError("merged_copy needs a model with adapters (a peft.PeftModel).")
    merged = copy.deepcopy(model).merge_and_unload()
    if save_dir is not None:
        merged.save_pretrained(save_dir)
        for name in os.listdir(save_dir):  # safetensors writes its files with mode 0600 whatever the umask
            if name.endswith(".safetensors"):
                follow_umask(os.path.join(save_dir, name))
    return merged
