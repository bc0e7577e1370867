"""The trainer's current weights as full tensors under checkpoint names, ready for ``model.load_weights``.

* Wrappers are looked through: DDP, DeepSpeed engines, ``torch.compile``; FSDP (v1) roots are kept and their
  full parameters summoned (``summon_full_params``, read-only); FSDP2 ``DTensor`` parameters are materialised with
  ``full_tensor()``.
* DeepSpeed ZeRO-3 parameters are gathered (``deepspeed.zero.GatheredParameters``) a module at a time.
* PEFT adapters are merged: each adapted layer is merged, its weights copied, and its original weights restored
  bit for bit, so the trained model is left exactly as it was and never holds more than one merged layer.

All processes must iterate :func:`full_weights` together (the gathers are collective). A yielded tensor may be a
view of a gathered parameter: use it before asking for the next one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["checkpoint_name", "full_weights", "gathered", "strip_wrappers", "sync_source"]

#: Name segments that wrappers insert between a model's own module names.
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def checkpoint_name(name: str) -> str:
    """``name`` without the segments FSDP, activation checkpointing and ``torch.compile`` insert."""
    for segment in WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    return name


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def strip_wrappers(model):
    """``model`` without DDP / DataParallel / DeepSpeed engine / ``torch.compile`` wrappers (FSDP v1 roots are
    kept: their full parameters are summoned through them)."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif type(model).__name__ == "DeepSpeedEngine":
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def sync_source(model, trainer=None):
    """The module to read ``model``'s weights through: the trainer's prepared (wrapped) model when ``model`` is
    the trainer's own, so that FSDP shards can be summoned; ``model`` otherwise."""
    wrapped = getattr(trainer, "model_wrapped", None)
    if trainer is not None and model is getattr(trainer, "model", None) and wrapped is not None:
        return wrapped
    return model


def _is_fsdp_root(module) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover - torch built without distributed
        return False
    return isinstance(module, FullyShardedDataParallel)


def _is_dtensor(tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch built without distributed
        return False
    return isinstance(tensor, DTensor)


def gathered(params):
    """A context in which ZeRO-3-partitioned ``params`` hold their full data (read-only gather); a no-op
    context for ordinary parameters."""
    partitioned = [param for param in params if hasattr(param, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned)


def _full(param) -> torch.Tensor:
    """The full value of a parameter (inside :func:`gathered` for ZeRO-3 ones)."""
    return param.full_tensor().detach() if _is_dtensor(param) else param.detach()


@contextlib.contextmanager
def _unsharded(model):
    """Yield the model whose parameters hold full values: an FSDP v1 root's inner module with its full
    parameters summoned (changes are not written back), anything else unchanged."""
    if not _is_fsdp_root(model):
        yield model
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(model, recurse=True, writeback=False):
        yield model.module


def full_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(checkpoint name, full tensor)`` for every parameter of ``model`` as it computes now (PEFT
    adapters merged). Every process must iterate it to the end, in step with the others."""
    with _unsharded(strip_wrappers(model)) as module:
        from iterframe.engine.adapters import is_peft_model

        if is_peft_model(module):
            yield from _merged_adapter_weights(module)
        else:
            yield from _plain_weights(module)


def _check_not_flat(name: str) -> None:
    if name.endswith("_flat_param"):
        raise ValueError(
            f"Parameter {name!r} is an FSDP flat parameter: the vllm generator reads FSDP (v1) models through "
            "their original parameters; set fsdp_use_orig_params: true in the accelerate config (its default)."
        )


def _plain_weights(module) -> Iterator[tuple[str, torch.Tensor]]:
    for name, param in module.named_parameters():
        _check_not_flat(name)
        with gathered([param]):
            yield checkpoint_name(name), _full(param)


# --- PEFT ---------------------------------------------------------------------------------------------------


def _check_mergeable(peft_model) -> None:
    config = peft_model.peft_config.get(peft_model.active_adapter)
    if config is not None and getattr(config, "is_prompt_learning", False):
        raise ValueError(
            f"The active adapter is a prompt-learning adapter ({config.peft_type}), which cannot be merged into "
            "the weights that vLLM runs; use an adapter that merges, such as LoRA (--peft lora)."
        )
    if any(_is_dtensor(param) for param in peft_model.parameters()):
        raise NotImplementedError(
            "PEFT adapters on FSDP2 (DTensor) parameters cannot be merged for the vllm generator; use DeepSpeed "
            "ZeRO-3 or FSDP v1 (fsdp_version: 1) for PEFT runs with vLLM."
        )


def _merged_adapter_weights(peft_model) -> Iterator[tuple[str, torch.Tensor]]:
    """Weights of ``peft_model`` under the base model's checkpoint names, adapters merged into them."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper, ModulesToSaveWrapper

    _check_mergeable(peft_model)
    base = peft_model.get_base_model()
    covered: list[str] = []  # prefixes of modules already yielded as a whole
    seen: set[int] = set()  # parameters already yielded (tied weights are sent once)
    for module_name, module in base.named_modules():
        if any(module_name.startswith(prefix) for prefix in covered):
            continue
        if isinstance(module, BaseTunerLayer):
            covered.append(module_name + ".")
            yield from _merged_layer_weights(module_name, module, seen)
        elif isinstance(module, ModulesToSaveWrapper):
            covered.append(module_name + ".")
            yield from _module_weights(module_name, _active_copy(module), seen)
        elif isinstance(module, AuxiliaryTrainingWrapper):
            raise NotImplementedError(
                f"{type(module).__name__} at {module_name!r} cannot be merged for the vllm generator; only "
                "LoRA-style adapters and modules_to_save are supported."
            )
        else:
            yield from _module_weights(module_name, module, seen, recurse=False)


def _module_weights(prefix: str, module, seen: set[int], recurse: bool = True):
    for name, param in module.named_parameters(recurse=recurse):
        _check_not_flat(name)
        if id(param) in seen:
            continue
        seen.add(id(param))
        with gathered([param]):
            yield checkpoint_name(_join(prefix, name)), _full(param)


def _active_copy(wrapper):
    """The module a ``modules_to_save`` wrapper computes with now: the trained copy of the active adapter, or
    the original module when adapters are off."""
    active = [name for name in wrapper.active_adapters if name in wrapper.modules_to_save]
    if wrapper.disable_adapters or not active:
        return wrapper.original_module
    return wrapper.modules_to_save[active[0]]


def _merged_layer_weights(prefix: str, layer, seen: set[int]) -> Iterator[tuple[str, torch.Tensor]]:
    """The base layer's weights with the layer's active adapters merged in; the layer is left as it was."""
    base_params = dict(layer.get_base_layer().named_parameters())
    seen.update(id(param) for param in base_params.values())
    with gathered(list(layer.parameters())), torch.no_grad():
        if layer.merged or layer.disable_adapters:  # the base weights already are what the layer computes
            weights = {name: _full(param).clone() for name, param in base_params.items()}
        else:
            originals = {name: param.detach().clone() for name, param in base_params.items()}
            layer.merge()
            try:
                weights = {name: param.detach().clone() for name, param in base_params.items()}
            finally:
                if layer.merged:
                    layer.unmerge()
                for name, param in base_params.items():  # exact bits back, whatever unmerge's rounding
                    param.data.copy_(originals[name])
    for name, tensor in weights.items():
        yield checkpoint_name(_join(prefix, name)), tensor
