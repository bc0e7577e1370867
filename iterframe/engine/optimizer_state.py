"""Restoring a checkpoint's optimizer and learning-rate scheduler state, on every engine and transformers
version."""

from __future__ import annotations

import os

import torch

__all__ = ["load"]


def load(trainer, checkpoint: str) -> None:
    """Restore the optimizer and scheduler state that ``checkpoint`` holds into ``trainer``.

    A process of a multi-process CPU run trains on an indexed device (``cpu:1``). transformers 4.x loads the
    optimizer state onto that device, which ``torch.load`` cannot restore ("don't know how to restore data
    location ... cpu:0"); 5.x loads it onto ``cpu``. That case is loaded here onto ``cpu``, as 5.x does, under
    either version; every other one (one process, GPUs, DeepSpeed, FSDP) is transformers' own."""
    device = trainer.args.device
    optimizer_file = os.path.join(checkpoint, "optimizer.pt")
    scheduler_file = os.path.join(checkpoint, "scheduler.pt")
    indexed_cpu = trainer.args.world_size > 1 and device.type == "cpu" and device.index is not None
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    if not indexed_cpu or sharded or not (os.path.isfile(optimizer_file) and os.path.isfile(scheduler_file)):
        trainer._load_optimizer_and_scheduler(checkpoint)
        return
    trainer.optimizer.load_state_dict(torch.load(optimizer_file, map_location="cpu", weights_only=True))
    trainer.lr_scheduler.load_state_dict(torch.load(scheduler_file, map_location="cpu", weights_only=True))
