"""Draws each iteration's prompts: shuffled, without replacement until the set is used up, then a new epoch."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["PromptSampler"]

T = TypeVar("T")


class PromptSampler:
    """Deterministic stream of prompts in seeded, per-epoch shuffled order.

    Epoch ``e`` visits every prompt once in the order of ``random.Random(f"{seed}:{e}")``; a draw that runs
    past the end of an epoch continues with the next one. The whole position is ``(epoch, position)``, so the
    state is three integers (:meth:`state_dict`), never the permutation itself.

    Args:
        num_prompts: size of the prompt set (> 0).
        seed: permutation seed.
        shuffle: ``False`` visits prompts in their given order every epoch.
    """

    def __init__(self, num_prompts: int, seed: int = 0, shuffle: bool = True):
        if num_prompts < 1:
            raise ValueError("The prompt set is empty: the loop needs at least one prompt to generate from.")
        self.num_prompts = num_prompts
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(self.num_prompts))
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def draw_indices(self, count: int) -> list[int]:
        """The next ``count`` prompt indices; starts new epochs as needed."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}.")
        indices = []
        while len(indices) < count:
            if self.position == self.num_prompts:
                self.epoch += 1
                self.position = 0
                self._order = self._epoch_order(self.epoch)
            take = min(count - len(indices), self.num_prompts - self.position)
            indices.extend(self._order[self.position : self.position + take])
            self.position += take
        return indices

    def draw(self, items: Sequence[T], count: int) -> list[T]:
        """The next ``count`` elements of ``items`` (which must have ``num_prompts`` elements)."""
        if len(items) != self.num_prompts:
            raise ValueError(f"The sampler was built for {self.num_prompts} prompts, got {len(items)}.")
        return [items[index] for index in self.draw_indices(count)]

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position: ``num_prompts``, ``seed``, ``shuffle``, ``epoch``, ``position``."""
        return {
            "num_prompts": self.num_prompts,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`.

        Raises:
            ValueError: the saved sampler drew from a prompt set of another size.
        """
        if state["num_prompts"] != self.num_prompts:
            raise ValueError(
                f"The run being resumed drew from {state['num_prompts']} prompts, but this prompt set has "
                f"{self.num_prompts}. Resume with the same dataset, or start over with overwrite."
            )
        self.seed = state["seed"]
        self.shuffle = state["shuffle"]
        self.epoch = state["epoch"]
        self.position = state["position"]
        self._order = self._epoch_order(self.epoch)
