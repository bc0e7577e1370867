"""What ``IterativeSFTTrainer(...)`` resolves before training: its config, its model and its pad id."""

from __future__ import annotations

import gc
import os
import warnings
from typing import Optional

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    PreTrainedModel,
    TrainingArguments,
)

from iterframe.engine.config import TRUNCATION_MODES, IterativeSFTConfig

__all__ = [
    "absolute_if_local",
    "empty_device_cache",
    "forward_deprecated_kwargs",
    "join_process_group",
    "load_model",
    "pad_token_id",
    "resolve_args",
]


def absolute_if_local(model_id: str) -> str:
    """A model folder that exists here made absolute; a Hub id unchanged.

    The model remembers the path it was loaded from (``config._name_or_path``), and adapters, model cards and
    checkpoints record it as their base model, so a relative path would only work from the folder it was given
    in.
    """
    return os.path.abspath(model_id) if os.path.isdir(model_id) else model_id


def config_from_training_arguments(args: TrainingArguments) -> IterativeSFTConfig:
    values = {}
    for name in TrainingArguments.__dataclass_fields__:
        field = TrainingArguments.__dataclass_fields__[name]
        if field.init and hasattr(args, name):
            values[name] = getattr(args, name)
    if str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) == "linear":
        values["lr_scheduler_type"] = None  # TrainingArguments' default: no schedule was asked for
    return IterativeSFTConfig(**values)


def resolve_args(args, model_id: Optional[str]) -> IterativeSFTConfig:
    if args is None:
        name = (model_id or "model").rstrip("/").split("/")[-1]
        return IterativeSFTConfig(output_dir=f"{name}-IterativeSFT")
    if isinstance(args, IterativeSFTConfig):
        return args
    if isinstance(args, TrainingArguments):
        return config_from_training_arguments(args)
    raise TypeError(f"args must be an IterativeSFTConfig or TrainingArguments, got {type(args).__name__}.")


def forward_deprecated_kwargs(args: IterativeSFTConfig, **kwargs) -> None:
    for name, value in kwargs.items():
        if value is None:
            continue
        warnings.warn(
            f"Passing {name} to IterativeSFTTrainer is deprecated; set IterativeSFTConfig({name}=...).",
            FutureWarning,
            stacklevel=3,
        )
        if name == "truncation_mode" and value not in TRUNCATION_MODES:
            raise ValueError(f"truncation_mode={value!r} is not supported; use one of {list(TRUNCATION_MODES)}.")
        if name == "max_length" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"max_length={value!r} must be a positive integer or None.")
        setattr(args, name, value)


def join_process_group(args: TrainingArguments) -> None:
    """Set up the run's process group before a model loads: under ZeRO-3 it loads already partitioned over the
    processes, which DeepSpeed's own communication layer must then know (accelerate leaves it unset on CPUs)."""
    _ = args.device
    if args.deepspeed:
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            import deepspeed

            deepspeed.init_distributed()  # wraps torch's process group when there is one; no-op when set


def load_model(model_id: str, init_kwargs: dict) -> PreTrainedModel:
    init_kwargs = dict(init_kwargs)
    if "torch_dtype" in init_kwargs and "dtype" not in init_kwargs:
        init_kwargs["dtype"] = init_kwargs.pop("torch_dtype")
    config = AutoConfig.from_pretrained(model_id, trust_remote_code=init_kwargs.get("trust_remote_code", False))
    model_class = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    return model_class.from_pretrained(model_id, **init_kwargs)


def pad_token_id(tokenizer) -> int:
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        pad_id = getattr(tokenizer, "eos_token_id", None)
    return 0 if pad_id is None else int(pad_id)


def empty_device_cache() -> None:
    """Return freed memory to the accelerator (``optimize_device_cache``)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif hasattr(torch, "xpu") and torch.xpu.is_available():
        torch.xpu.empty_cache()
    elif torch.backends.mps.is_available():
        torch.mps.empty_cache()
