"""Trainable weights that still live in their checkpoint file's memory mapping get memory of their own.

On the CPU, ``from_pretrained`` leaves a safetensors checkpoint's weights as views of the file, mapped
copy-on-write: reading them is cheap, but the first write to each 4 KiB page (the optimizer's first update) makes
the kernel copy it, one page fault at a time. On a 2-core machine that first update took 2.1-2.3 s for
SmolLM2-135M's 538 MB of weights against 0.1 s for the next ones; copying the weights once when the trainer is
built takes 0.2 s. :func:`own_trainable_weights` does that copy for the weights the optimizer will write (frozen
ones, e.g. a LoRA base, stay mapped and shared with the page cache).
"""

from __future__ import annotations

import bisect
import logging
from typing import Optional

import torch

__all__ = ["file_mapped_ranges", "is_file_mapped", "own_trainable_weights"]

logger = logging.getLogger(__name__)

_MAPS = "/proc/self/maps"


def file_mapped_ranges(maps_path: str = _MAPS) -> Optional[list[tuple[int, int]]]:
    """The ``(start, end)`` address ranges of this process mapped from files, sorted; ``None`` where the system
    does not say (no ``/proc/self/maps``)."""
    try:
        with open(maps_path, encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return None
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[4] == "0" or fields[5].startswith("["):  # anonymous, or [heap], [stack]...
            continue
        start, end = (int(address, 16) for address in fields[0].split("-"))
        ranges.append((start, end))
    return sorted(ranges)


def is_file_mapped(tensor: torch.Tensor, ranges: list[tuple[int, int]]) -> bool:
    """Whether ``tensor``'s storage starts inside one of ``ranges`` (from :func:`file_mapped_ranges`)."""
    address = tensor.untyped_storage().data_ptr()
    index = bisect.bisect_right(ranges, (address, float("inf"))) - 1
    return index >= 0 and ranges[index][0] <= address < ranges[index][1]


def own_trainable_weights(model: torch.nn.Module) -> int:
    """Copy every trainable CPU parameter whose storage is mapped from a file into memory of its own, in place
    (the same ``Parameter`` objects, so tied weights stay tied); return the bytes copied. Where the system does
    not say what is mapped, every trainable CPU parameter is copied. Parameters sharing a storage share the copy.
    """
    ranges = file_mapped_ranges()
    copies: dict[int, torch.UntypedStorage] = {}
    copied = 0
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.requires_grad or parameter.device.type != "cpu":
                continue
            storage = parameter.untyped_storage()
            key = storage.data_ptr()
            if key not in copies:
                if ranges is not None and not is_file_mapped(parameter, ranges):
                    continue
                copies[key] = storage.clone()
                copied += storage.nbytes()
            owned = torch.empty(0, dtype=parameter.dtype)
            parameter.data = owned.set_(
                copies[key], parameter.storage_offset(), parameter.size(), parameter.stride()
            )
    if copied:
        logger.debug("Copied %.1f MB of trainable weights out of their checkpoint's file mapping.", copied / 2**20)
    return copied
