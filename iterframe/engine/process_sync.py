"""Agreement between training processes: counts summed over ranks, as many micro-batches on every rank, and one
optimizer update per group of accumulated micro-batches on every engine accelerate drives (DDP, DeepSpeed ZeRO,
FSDP)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from iterframe.engine import batching

__all__ = ["accumulating", "backward", "equalized_across_processes", "global_sum", "is_deepspeed"]


def global_sum(accelerator, count: int) -> int:
    """``count`` summed over every process (``count`` itself with one process)."""
    if accelerator.num_processes == 1:
        return count
    tensor = torch.tensor([count], device=accelerator.device, dtype=torch.long)
    return int(accelerator.reduce(tensor, reduction="sum").item())


def equalized_across_processes(accelerator, micro_batches: list[batching.MicroBatch]) -> list[batching.MicroBatch]:
    """Under DDP every rank must run as many backward passes: pad with micro-batches that carry no loss."""
    if accelerator.num_processes == 1:
        return micro_batches
    count = torch.tensor([len(micro_batches)], device=accelerator.device, dtype=torch.long)
    most = int(accelerator.reduce(count, reduction="max").item())
    filler = batching.without_loss(micro_batches[-1])
    return micro_batches + [filler] * (most - len(micro_batches))


def is_deepspeed(accelerator) -> bool:
    """Whether ``accelerator`` drives a DeepSpeed engine."""
    return str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type)) == "DEEPSPEED"


@contextlib.contextmanager
def accumulating(accelerator, model, closes_update: bool) -> Iterator[None]:
    """Run one micro-batch's forward and backward inside an accumulated update.

    ``closes_update`` marks the update's last micro-batch: only then do gradients travel between processes, and
    under DeepSpeed only then does the engine step its optimizer (accelerate's ``sync_gradients``, which its
    DeepSpeed wrapper hands to the engine as the accumulation boundary). Before it, DDP and FSDP keep their
    gradients local (``no_sync``); DeepSpeed, whose ZeRO-2/3 refuse ``no_sync``, accumulates by itself.
    """
    gradient_state = accelerator.gradient_state
    gradient_state._set_sync_gradients(closes_update)
    local = closes_update or is_deepspeed(accelerator)
    try:
        with contextlib.nullcontext() if local else accelerator.no_sync(model):
            yield
    finally:
        gradient_state._set_sync_gradients(True)


def backward(accelerator, loss: torch.Tensor) -> None:
    """``accelerator.backward(loss)`` for a loss already weighted for its whole update: DeepSpeed is told not to
    divide it again by its accumulation count (``scale_wrt_gas=False``)."""
    if is_deepspeed(accelerator):
        accelerator.backward(loss, scale_wrt_gas=False)
    else:
        accelerator.backward(loss)
