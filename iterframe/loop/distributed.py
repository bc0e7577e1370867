"""Sharding an iteration's work across processes and gathering it back in a deterministic order.

Every process holds the same list (the prompts drawn with the run's seed, the kept samples); process ``rank`` of
``world`` works on ``items[rank::world]``, and :func:`gather_in_order` gives every process the whole list back in
the original order, so global steps (filters, metrics) see exactly what a one-process run sees.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, TypeVar, Union

__all__ = ["gather_in_order", "group", "interleave", "largest_share", "shard"]

T = TypeVar("T")


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """The share of process ``rank`` of ``world``: ``items[rank::world]``."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not a process of a world of {world}; need 0 <= rank < world.")
    return list(items[rank::world])


def largest_share(selected: Sequence[bool], world: int) -> int:
    """The most items of ``selected`` (a flag per item) that any process's :func:`shard` holds."""
    return max(sum(selected[rank::world]) for rank in range(world))


def interleave(shards: Sequence[Sequence[T]]) -> list[T]:
    """Undo :func:`shard`: ``shards[r]`` is ``items[r::len(shards)]``; return ``items``."""
    world = len(shards)
    total = sum(len(part) for part in shards)
    for rank, part in enumerate(shards):
        expected = len(range(rank, total, world))
        if len(part) != expected:
            raise ValueError(
                f"shard {rank} holds {len(part)} items; a strided split of {total} items gives it {expected}."
            )
    return [shards[index % world][index // world] for index in range(total)]


def group(items: Sequence[T], size: Union[int, Sequence[int]]) -> list[list[T]]:
    """``items`` in consecutive groups (the samples of one prompt): all of ``size`` items, or, when ``size`` is a
    list, of each of its sizes in turn."""
    if isinstance(size, int):
        if size < 1 or len(items) % size:
            raise ValueError(f"{len(items)} items do not split into groups of {size}.")
        size = [size] * (len(items) // size)
    if sum(size) != len(items) or any(count < 0 for count in size):
        raise ValueError(f"{len(items)} items do not split into groups of {list(size)}.")
    starts = itertools.accumulate(size[:-1], initial=0)
    return [list(items[start : start + count]) for start, count in zip(starts, size)]


def gather_in_order(local_items: list[Any], num_processes: int) -> list[Any]:
    """Every process's ``local_items`` (its :func:`shard` of a list), gathered on every process in the original
    order. One process: ``local_items`` as given."""
    if num_processes == 1:
        return list(local_items)
    from accelerate.utils import gather_object

    return interleave(gather_object([list(local_items)]))
