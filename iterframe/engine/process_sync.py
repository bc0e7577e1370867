"""Agreement between training processes: counts summed over ranks, and as many micro-batches on every rank."""

from __future__ import annotations

import torch

from iterframe.engine import batching

__all__ = ["equalized_across_processes", "global_sum"]


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
