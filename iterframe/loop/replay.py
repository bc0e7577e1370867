"""A capped buffer of kept samples carried across iterations and trained on again."""

from __future__ import annotations

import dataclasses
from typing import Any

from iterframe.plugins.components import Sample

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """Holds up to ``capacity`` samples kept in earlier iterations, newest first; the oldest leave first.

    Args:
        capacity: most samples held; ``0`` turns the buffer off (it stays empty).
    """

    def __init__(self, capacity: int = 0):
        if capacity < 0:
            raise ValueError(f"replay_buffer_size must be >= 0 (0 turns replay off), got {capacity}.")
        self.capacity = capacity
        self.samples: list[Sample] = []

    def __len__(self) -> int:
        return len(self.samples)

    def add(self, kept_samples: list[Sample]) -> None:
        """Put an iteration's kept samples in front; drop the oldest beyond ``capacity``."""
        self.samples = (list(kept_samples) + self.samples)[: self.capacity]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable contents (samples as dicts of their fields)."""
        return {"capacity": self.capacity, "samples": [dataclasses.asdict(sample) for sample in self.samples]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the contents of a :meth:`state_dict`, trimmed to this buffer's capacity."""
        self.samples = [Sample(**fields) for fields in state["samples"]][: self.capacity]
