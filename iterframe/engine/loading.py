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
    "GGUF_INSTALL_HINT",
    "absolute_if_local",
    "empty_device_cache",
    "forward_deprecated_kwargs",
    "is_gguf_file",
    "join_process_group",
    "load_config",
    "load_model",
    "load_tokenizer",
    "pad_token_id",
    "pretrained_source",
    "require_gguf",
    "resolve_args",
]

#: How to get what transformers needs to read GGUF files.
GGUF_INSTALL_HINT = "pip install 'iterframe[gguf]'"


def absolute_if_local(model_id: str) -> str:
    """A model folder that exists here made absolute; a Hub id unchanged.

    The model remembers the path it was loaded from (``config._name_or_path``), and adapters, model cards and
    checkpoints record it as their base model, so a relative path would only work from the folder it was given
    in.
    """
    return os.path.abspath(model_id) if os.path.isdir(model_id) or is_gguf_file(model_id) else model_id


def is_gguf_file(model_id: str) -> bool:
    """Whether ``model_id`` names a GGUF file (a path ending in ``.gguf``) rather than a folder or a Hub id."""
    return model_id.lower().endswith(".gguf") and os.path.isfile(os.path.expanduser(model_id))


def require_gguf() -> None:
    """Raise ``ImportError`` naming the extra to install when the ``gguf`` package is missing."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ImportError(f"Loading a GGUF file needs the gguf package: {GGUF_INSTALL_HINT}") from None


def pretrained_source(model_id: str, init_kwargs: Optional[dict] = None) -> tuple[str, dict]:
    """What ``from_pretrained`` is given for ``model_id``: a path to a ``.gguf`` file becomes its folder with
    ``gguf_file=`` its name; anything else is passed on unchanged with ``init_kwargs``.

    Raises:
        ValueError: a ``.gguf`` path and a different ``gguf_file`` in ``init_kwargs``.
        ImportError: a GGUF file without the ``gguf`` package.
    """
    kwargs = dict(init_kwargs or {})
    if is_gguf_file(model_id):
        path = os.path.abspath(os.path.expanduser(model_id))
        if kwargs.get("gguf_file") not in (None, os.path.basename(path)):
            raise ValueError(
                f"The model is the GGUF file {path!r} and model_init_kwargs names gguf_file="
                f"{kwargs['gguf_file']!r}; pass the file once, as the model or as gguf_file with its folder."
            )
        model_id, kwargs["gguf_file"] = os.path.dirname(path), os.path.basename(path)
    if kwargs.get("gguf_file"):
        require_gguf()
    return model_id, kwargs


def load_config(model_id: str, init_kwargs: Optional[dict] = None):
    """``AutoConfig`` of ``model_id`` (a folder, a Hub id or a ``.gguf`` file)."""
    model_id, kwargs = pretrained_source(model_id, init_kwargs)
    options = {key: kwargs[key] for key in ("gguf_file", "trust_remote_code") if key in kwargs}
    return AutoConfig.from_pretrained(model_id, **options)


def load_tokenizer(model_id: str, init_kwargs: Optional[dict] = None):
    """``AutoTokenizer`` of ``model_id`` (a folder, a Hub id or a ``.gguf`` file, whose chat template and special
    tokens come from the file's metadata)."""
    from transformers import AutoTokenizer

    model_id, kwargs = pretrained_source(model_id, init_kwargs)
    options = {key: kwargs[key] for key in ("gguf_file", "trust_remote_code") if key in kwargs}
    return AutoTokenizer.from_pretrained(model_id, **options)


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


def _dense_gguf_config():
    """A ``GgufConfig`` that unpacks every weight at load time, where transformers can keep GGUF weights packed
    (which cannot train); ``None`` where it always unpacks them."""
    try:
        from transformers.utils.quantization_config import GgufConfig
    except ImportError:
        return None
    try:
        return GgufConfig(dequantize=True)
    except TypeError:  # pragma: no cover - a GgufConfig without the choice
        return None


def _as_plain_model(model: PreTrainedModel) -> PreTrainedModel:
    """A model loaded from a GGUF file as an ordinary one: its (dequantized) weights train and ``save_pretrained``
    writes a plain checkpoint, without the GGUF quantization config."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        if getattr(quantizer, "packed_modules", None):
            raise ValueError("The GGUF weights were loaded packed, which cannot train; load them dequantized.")
        quantizer.remove_quantization_config(model)
    return model


def _write_rope_theta(config) -> None:
    """Keep ``rope_theta`` beside ``rope_parameters`` in the saved config: transformers 4.x reads only the former,
    and without it falls back to its default RoPE base."""
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict) and "rope_theta" in rope and getattr(config, "rope_theta", None) is None:
        config.rope_theta = rope["rope_theta"]


def load_model(model_id: str, init_kwargs: dict) -> PreTrainedModel:
    """The model of ``model_id`` (a folder, a Hub id or a ``.gguf`` file) with ``init_kwargs`` for
    ``from_pretrained``; a GGUF file's weights are dequantized to the configured dtype (float32 by default)."""
    model_id, init_kwargs = pretrained_source(model_id, init_kwargs)
    if "torch_dtype" in init_kwargs and "dtype" not in init_kwargs:
        init_kwargs["dtype"] = init_kwargs.pop("torch_dtype")
    config = load_config(model_id, init_kwargs)
    model_class = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    gguf = bool(init_kwargs.get("gguf_file"))
    if gguf and "quantization_config" not in init_kwargs and _dense_gguf_config() is not None:
        init_kwargs["quantization_config"] = _dense_gguf_config()
    model = model_class.from_pretrained(model_id, **init_kwargs)
    if gguf:
        _as_plain_model(model)
    _write_rope_theta(model.config)
    return model


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
