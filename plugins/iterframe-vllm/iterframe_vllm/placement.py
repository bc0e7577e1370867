"""Which processes host an engine, and which processes' prompts one engine serves together.

Colocated (``colocate=true``): every training process runs its own engine on its own GPU. With
``tensor_parallel_size=T`` the processes form groups of ``T`` consecutive ranks whose engines are one
tensor-parallel engine; a group pools its prompts, every member runs the same generation, and each keeps the
completions of its own prompts.

Separate (``colocate=false``): the main process alone hosts the engine, on the GPU(s) of ``device``; every
process sends its prompts to it and receives its own completions back.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from .options import VLLMOptions

__all__ = [
    "GenerationGroup",
    "ProcessLayout",
    "group_ranks",
    "hosts_engine",
    "make_generation_group",
    "split_by_counts",
]


@dataclasses.dataclass(frozen=True)
class ProcessLayout:
    """Where this process sits in the run: global rank, number of processes, rank on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def of_trainer(cls, trainer) -> ProcessLayout:
        """The layout of ``trainer.accelerator`` (a single process when the trainer has none)."""
        accelerator = getattr(trainer, "accelerator", None)
        if accelerator is None:
            return cls()
        return cls(accelerator.process_index, accelerator.num_processes, accelerator.local_process_index)


def hosts_engine(layout: ProcessLayout, options: VLLMOptions) -> bool:
    """Whether this process runs an engine."""
    return options.colocate or layout.rank == 0


def group_ranks(layout: ProcessLayout, options: VLLMOptions) -> list[int]:
    """Global ranks whose prompts are generated together with this process's."""
    if not options.colocate:
        return list(range(layout.world_size))
    size = options.tensor_parallel_size
    if layout.world_size % size:
        raise ValueError(
            f"tensor_parallel_size={size} with colocate=true splits each engine over {size} training processes, "
            f"but the run has {layout.world_size}; launch a multiple of {size} processes (accelerate launch "
            "--num_processes N), or run a separate engine with colocate=false and device=cuda:A,cuda:B,..."
        )
    first = layout.rank // size * size
    return list(range(first, first + size))


def split_by_counts(items: list, counts: list[int]) -> list[list]:
    """Cut ``items`` into consecutive parts of the given lengths."""
    if sum(counts) != len(items):
        raise ValueError(f"Cannot cut {len(items)} items into parts of {counts} (they add up to {sum(counts)}).")
    parts, start = [], 0
    for count in counts:
        parts.append(items[start : start + count])
        start += count
    return parts


class GenerationGroup:
    """The processes one engine serves together, with the two collectives generation needs.

    Args:
        ranks: their global ranks, in order.
        rank: this process's global rank.
        process_group: the ``torch.distributed`` group joining them (``None``: the default group).
    """

    def __init__(self, ranks: list[int], rank: int, process_group: Optional[Any] = None):
        if rank not in ranks:
            raise ValueError(f"Rank {rank} is not in its generation group {ranks}.")
        self.ranks = list(ranks)
        self.rank = rank
        self.process_group = process_group

    @property
    def size(self) -> int:
        return len(self.ranks)

    @property
    def index(self) -> int:
        """This process's position in the group."""
        return self.ranks.index(self.rank)

    def gather(self, value) -> list:
        """Every member's ``value``, in rank order (all members call it together)."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        gathered: list = [None] * self.size
        dist.all_gather_object(gathered, value, group=self.process_group)
        return gathered

    def broadcast_from_first(self, value):
        """The first member's ``value``, on every member (all members call it together)."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        holder = [value]
        dist.broadcast_object_list(holder, src=self.ranks[0], group=self.process_group)
        return holder[0]


def make_generation_group(layout: ProcessLayout, options: VLLMOptions) -> GenerationGroup:
    """This process's generation group; creating colocated tensor-parallel groups is a collective call (every
    process calls it, in the same order)."""
    ranks = group_ranks(layout, options)
    if len(ranks) == 1 or len(ranks) == layout.world_size:
        return GenerationGroup(ranks, layout.rank)
    import torch.distributed as dist

    size = options.tensor_parallel_size
    all_groups = [list(range(first, first + size)) for first in range(0, layout.world_size, size)]
    process_group, _ = dist.new_subgroups_by_enumeration(all_groups)
    return GenerationGroup(ranks, layout.rank, process_group)
