"""``IterativeSFTConfig``: ``transformers.TrainingArguments`` plus the options of ``IterativeSFTTrainer.step``."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Union

import torch
import transformers
from transformers import TrainingArguments

from iterframe.engine.json_object import parse_json_object

__all__ = [
    "IterativeSFTConfig",
    "TRUNCATION_MODES",
    "accelerator_device_present",
    "multi_process_on_cpu_only",
    "resolve_torch_dtype",
]

TRUNCATION_MODES = ("keep_end", "keep_start")


def _bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _refuse_an_unread_fsdp_version(fsdp, fsdp_config) -> None:
    """transformers 5 reads ``fsdp_config``'s ``version``; 4.x does not (FSDP runs in the version of
    accelerate's ``FSDP_VERSION``, which ``accelerate launch`` sets from its config, else v1): a version that would
    be ignored is refused rather than run as another."""
    if int(transformers.__version__.split(".")[0]) >= 5 or not fsdp or not isinstance(fsdp_config, dict):
        return
    version = fsdp_config.get("version", fsdp_config.get("fsdp_version"))
    running = os.environ.get("FSDP_VERSION", "1")
    if version is not None and str(version) != running:
        raise ValueError(
            f"fsdp_config sets version {version}, which transformers {transformers.__version__} does not read: "
            f"FSDP v{running} would run. Set fsdp_version: {version} in an accelerate config and start with "
            "accelerate launch --config_file (see examples/accelerate/fsdp.yaml), or use transformers 5."
        )


def resolve_torch_dtype(value: Any, field_name: str = "model_init_kwargs['dtype']"):
    """Turn a dtype given as a string (``"bfloat16"``, ``"torch.float16"``, ``"auto"``) into a ``torch.dtype``."""
    if value is None or value == "auto" or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        dtype = getattr(torch, value.removeprefix("torch."), None)
        if isinstance(dtype, torch.dtype):
            return dtype
    raise ValueError(
        f"{field_name}={value!r} is not a torch dtype. Use 'auto' or a name such as 'float32', 'bfloat16' or "
        "'float16'."
    )


def accelerator_device_present() -> bool:
    """Whether this machine has a device accelerate trains on instead of the CPU: CUDA, ROCm, XPU, MPS, MTIA, and
    the ones plugged into torch (NPU, HPU, MLU, MUSA, SDAA...)."""
    if hasattr(torch, "accelerator") and torch.accelerator.is_available():
        return True
    import accelerate.utils

    names = ("is_xpu_available", "is_mps_available", "is_npu_available", "is_hpu_available", "is_mlu_available")
    names += ("is_musa_available", "is_sdaa_available")
    checks = [getattr(accelerate.utils, name, None) for name in names]  # older accelerate lacks some
    return torch.cuda.is_available() or any(check() for check in checks if check is not None)


def multi_process_on_cpu_only() -> bool:
    """Several processes (``WORLD_SIZE > 1``) and no accelerator device: accelerate sets up a process group (gloo)
    for them only when told to use the CPU. With a device of any kind, accelerate picks it and its backend."""
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return world_size > 1 and not accelerator_device_present()


@dataclasses.dataclass
class IterativeSFTConfig(TrainingArguments):
    """Training arguments of :class:`~iterframe.IterativeSFTTrainer`.

    Everything of ``transformers.TrainingArguments`` applies; the fields below are added or have another default.
    With ``max_steps=-1`` (the default) the learning rate follows a constant schedule after
    ``warmup_steps`` (asking for another ``lr_scheduler_type``, or a warmup ratio, is an error then); with
    ``max_steps > 0`` it follows ``lr_scheduler_type`` (default linear) over ``max_steps`` updates, and a
    ``step()`` that would go past them is refused.
    """

    model_init_kwargs: Optional[Union[dict, str]] = dataclasses.field(
        default=None,
        metadata={
            "help": "Keyword arguments for `from_pretrained` when the trainer is given a model id or path, e.g. "
            '\'{"dtype": "bfloat16", "device_map": "auto"}\'. A JSON string is accepted.'
        },
    )
    max_length: Optional[int] = dataclasses.field(
        default=None,
        metadata={"help": "Longest sequence trained, in tokens; longer ones are truncated (see truncation_mode)."},
    )
    truncation_mode: str = dataclasses.field(
        default="keep_end",
        metadata={
            "help": "Which tokens survive truncation: 'keep_end' keeps the last max_length tokens, 'keep_start' "
            "the first.",
            "choices": list(TRUNCATION_MODES),
        },
    )
    optimize_device_cache: bool = dataclasses.field(
        default=False,
        metadata={"help": "Run the garbage collector and empty the accelerator cache after every step()."},
    )
    group_by_length: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "False (the default): micro-batches of samples drawn in a fresh random order on every step() "
            "call, as plain SGD would. True: samples of similar length share a micro-batch (least padding, for "
            "models that cannot pack), but the same samples then meet in every epoch and an update sees one "
            "length class, which learns measurably worse when length follows the answer."
        },
    )
    pad_to_multiple_of: Optional[int] = dataclasses.field(
        default=None,
        metadata={"help": "Pad each micro-batch to a multiple of this many tokens (8 suits tensor cores)."},
    )
    padding_free: Optional[bool] = dataclasses.field(
        default=None,
        metadata={
            "help": "Train each micro-batch's samples laid end to end in one row, with no padding (each sample "
            "attends only to itself). Default: on where the model allows it (transformers' own decoder-only "
            "models with sdpa or eager attention, no sliding window) and pad_to_multiple_of is unset; true: "
            "required; false: padded micro-batches."
        },
    )
    # Different defaults from TrainingArguments.
    lr_scheduler_type: Optional[str] = dataclasses.field(
        default=None,
        metadata={
            "help": "The learning-rate schedule over max_steps updates ('linear', 'cosine', 'constant', ...). "
            "Default: 'linear' when max_steps > 0, else constant after warmup_steps. A schedule other than a "
            "constant one, or a warmup ratio, needs max_steps > 0 (iterframe run sets it from its iterations)."
        },
    )
    logging_steps: float = dataclasses.field(
        default=10, metadata={"help": "Log every this many optimizer updates (a float < 1 is a ratio)."}
    )
    report_to: Union[None, str, list[str]] = dataclasses.field(
        default="none",
        metadata={"help": "Integrations to report logs to ('wandb', 'tensorboard', 'all', 'none')."},
    )
    bf16: Optional[bool] = dataclasses.field(
        default=None,
        metadata={
            "help": "bfloat16 mixed precision. Default: on when a CUDA device supports bf16 and fp16 is off."
        },
    )

    def __post_init__(self):
        if self.truncation_mode not in TRUNCATION_MODES:
            raise ValueError(
                f"truncation_mode={self.truncation_mode!r} is not supported; use one of {list(TRUNCATION_MODES)}."
            )
        if self.max_length is not None and (isinstance(self.max_length, bool) or self.max_length < 1):
            raise ValueError(f"max_length={self.max_length!r} must be a positive integer or None.")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of={self.pad_to_multiple_of!r} must be a positive integer or None.")
        if self.padding_free and self.pad_to_multiple_of is not None:
            raise ValueError(
                f"padding_free=True leaves no padding to round, but pad_to_multiple_of={self.pad_to_multiple_of}; "
                "unset one of them."
            )
        _refuse_an_unread_fsdp_version(self.fsdp, self.fsdp_config)
        self.model_init_kwargs = self._parse_model_init_kwargs(self.model_init_kwargs)
        #: whether lr_scheduler_type was asked for (a default schedule needs no horizon: see engine/schedule.py)
        self.lr_scheduler_requested = self.lr_scheduler_type is not None
        if self.lr_scheduler_type is None:
            self.lr_scheduler_type = "linear" if self.max_steps > 0 else "constant_with_warmup"
        if multi_process_on_cpu_only():
            self.use_cpu = True  # CPU DDP (gloo) under torchrun / accelerate launch
        if self.bf16 is None:
            self.bf16 = not self.fp16 and _bf16_supported()
        super().__post_init__()

    @staticmethod
    def _parse_model_init_kwargs(value) -> Optional[dict]:
        if value is None or isinstance(value, dict):
            kwargs = dict(value) if value is not None else None
        elif isinstance(value, str):
            kwargs = parse_json_object(value, "model_init_kwargs")
        else:
            raise TypeError(f"model_init_kwargs must be a dict or a JSON string, got {type(value).__name__}.")
        if kwargs:
            for key in ("dtype", "torch_dtype"):
                if key in kwargs:
                    kwargs[key] = resolve_torch_dtype(kwargs[key], f"model_init_kwargs[{key!r}]")
        return kwargs
