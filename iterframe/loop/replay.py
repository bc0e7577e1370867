"""A capped buffer of kept samples carried across iterations and trained on again."""

from __future__ import annotations

import dataclasses
from typing import Any

from iterframe.plugins.components import Sample

__all__ = ["ReplayBuffer"]


def _key(sample: Sample) -> tuple:
    return (sample.prompt_id, sample.completion)


class ReplayBuffer:
    """Holds up to ``capacity`` samples kept in earlier iterations, newest first; the oldest leave first.

    Args:
        capacity: most samples held; ``0`` turns the buffer off (it stays empty).
        distinct: hold each (prompt, completion) once: a sample kept again replaces its older copy, so a prompt
            solved in every iteration weighs no more in training than one solved once.
    """

    def __init__(self, capacity: int = 0, distinct: bool = False):
        if capacity < 0:
            raise ValueError(f"replay_buffer_size must be >= 0 (0 turns replay off), got {capacity}.")
        self.capacity = capacity
        self.distinct = distinct
        self.samples: list[Sample] = []

    def __len__(self) -> int:
        return len(self.samples)

    def _merged(self, kept_samples: list[Sample]) -> list[Sample]:
        """``kept_samples`` in front of the held ones; with ``distinct``, each (prompt, completion) once, newest
        copy first."""
        merged = list(kept_samples) + self.samples
        if not self.distinct:
            return merged
        distinct, seen = [], set()
        for sample in merged:
            if _key(sample) not in seen:
                seen.add(_key(sample))
                distinct.append(sample)
        return distinct

    def training_samples(self, kept_samples: list[Sample]) -> list[Sample]:
        """What an iteration trains on: its kept samples, then the held ones (with ``distinct``, the held copies of
        kept samples left out)."""
        return self._merged(kept_samples)

    def add(self, kept_samples: list[Sample]) -> None:
        """Put an iteration's kept samples in front; drop the oldest beyond ``capacity``."""
        self.samples = self._merged(kept_samples)[: self.capacity]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable contents (samples as dicts of their fields)."""
        return {"capacity": self.capacity, "samples": [dataclasses.asdict(sample) for sample in self.samples]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the contents of a :meth:`state_dict`, trimmed to this buffer's capacity."""
        self.samples = [Sample(**fields) for fields in state["samples"]][: self.capacity]
