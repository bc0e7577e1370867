"""Generating from a model whose parameters are sharded over the processes (DeepSpeed ZeRO-3, FSDP): every forward
pass gathers parameters from every process, so every process must run as many forward passes, in the same order,
or they all wait forever. A process whose rows are finished keeps joining the others' passes until every process is
done (as ``generate(synced_gpus=True)`` does)."""

from __future__ import annotations

import torch

__all__ = ["all_processes_finished", "most_across_processes", "needs_lockstep"]


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _is_sharded(model) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch < 2.6: FSDP2 lives elsewhere, or not at all
        FSDPModule = ()  # noqa: N806
    if any(isinstance(module, (FullyShardedDataParallel, FSDPModule)) for module in model.modules()):
        return True
    return any(hasattr(parameter, "ds_id") for parameter in model.parameters())  # a ZeRO-3 partition


def needs_lockstep(model) -> bool:
    """Whether the processes must run every forward pass of generation together: there are several and
    ``model``'s parameters are sharded over them (ZeRO-3 or FSDP)."""
    return _world_size() > 1 and _is_sharded(model)


def all_processes_finished(finished_here: bool, device: torch.device) -> bool:
    """Whether every process is finished (this one's answer is ``finished_here``); every process must call it
    at the same point."""
    import torch.distributed as dist

    unfinished = torch.tensor([0.0 if finished_here else 1.0], device=device)
    dist.all_reduce(unfinished)
    return unfinished.item() == 0.0


def most_across_processes(count: int, device: torch.device) -> int:
    """The largest ``count`` of any process; every process must call it at the same point."""
    import torch.distributed as dist

    most = torch.tensor([count], device=device, dtype=torch.long)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return int(most.item())
