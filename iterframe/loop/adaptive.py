"""Adaptive per-prompt sampling (``loop.until_accepted: k``): each prompt is sampled in rounds until ``k`` of its
samples pass the filters or its ``samples_per_prompt`` budget is spent, so solved prompts stop early; with
``loop.redistribute`` the budget they did not use goes to the unsolved prompts of the same iteration.

Between rounds the filter chain (without the ``on_samples_scored`` hooks) counts each prompt's accepted samples,
on copies of the decisions; after the last round the loop filters the whole iteration once, as always, and that
pass decides what is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from iterframe.loop.config import LoopConfig, PromptRecord
from iterframe.loop.stages import apply_filters
from iterframe.plugins.components import Filter, Sample

__all__ = ["AdaptiveSampling", "allocate_round"]


def allocate_round(
    spent: Sequence[int], solved: Sequence[bool], budget: int, per_round: int, redistribute: bool
) -> list[int]:
    """Samples each prompt gets in the next round (0: it is done).

    An unsolved prompt gets ``per_round`` samples, or what is left of its own ``budget`` when that is less. With
    ``redistribute``, a prompt short of ``per_round`` also draws, in prompt order, on the pool of budget that
    solved prompts left unused; the iteration never generates more than ``len(spent) * budget`` samples.
    """
    own_left = [max(budget - used, 0) for used in spent]
    counts = [0 if done else min(per_round, left) for done, left in zip(solved, own_left)]
    if redistribute:
        reserved = sum(left for done, left in zip(solved, own_left) if not done)
        pool = budget * len(spent) - sum(spent) - reserved
        for position, done in enumerate(solved):
            extra = 0 if done else min(per_round - counts[position], pool)
            counts[position] += extra
            pool -= extra
    return counts


class AdaptiveSampling:
    """Runs an iteration's sampling rounds.

    Args:
        config: the loop options (``until_accepted``, ``samples_per_round``, ``samples_per_prompt``,
            ``redistribute``).
        sample_round: ``sample_round(records, counts, iteration) -> samples``: generates ``counts[i]`` samples
            of ``records[i]``, scores them and returns them (every process's), record by record.
        filters: the filter chain that counts accepted samples between rounds.
    """

    def __init__(
        self,
        config: LoopConfig,
        sample_round: Callable[[list[PromptRecord], list[int], int], list[Sample]],
        filters: Sequence[Filter],
    ):
        self.target = config.until_accepted
        self.per_round = config.samples_per_round or config.until_accepted
        self.budget = config.samples_per_prompt
        self.redistribute = config.redistribute
        self.sample_round = sample_round
        self.filters = list(filters)

    def run(self, records: list[PromptRecord], iteration: int) -> tuple[list[Sample], dict[str, Any]]:
        """Sample ``records`` in rounds; return all their samples, record by record (``sample_index`` counts on
        across rounds), and the ``sampling/*`` and ``prompts/*`` metrics."""
        per_record: list[list[Sample]] = [[] for _ in records]
        solved = [False] * len(records)
        rounds = 0
        while True:
            counts = allocate_round([len(samples) for samples in per_record], solved, **self._allocation)
            active = [position for position, count in enumerate(counts) if count]
            if not active:
                break
            rounds += 1
            new_samples = iter(
                self.sample_round([records[p] for p in active], [counts[p] for p in active], iteration)
            )
            for position in active:
                for _ in range(counts[position]):
                    sample = next(new_samples)
                    sample.info["sample_index"] = len(per_record[position])
                    per_record[position].append(sample)
            accepted = self._accepted_counts(per_record, iteration)
            solved = [count >= self.target for count in accepted]
        samples = [sample for record_samples in per_record for sample in record_samples]
        num_solved = sum(solved)
        metrics = {
            "sampling/rounds": rounds,
            "prompts/solved": num_solved,
            "prompts/exhausted": len(records) - num_solved,
        }
        return samples, metrics

    @property
    def _allocation(self) -> dict[str, Any]:
        return {"budget": self.budget, "per_round": self.per_round, "redistribute": self.redistribute}

    def _accepted_counts(self, per_record: list[list[Sample]], iteration: int) -> list[int]:
        """How many samples of each record the filter chain would keep now (failed samples never count)."""
        position_of = {id(sample): position for position, samples in enumerate(per_record) for sample in samples}
        candidates = [sample for samples in per_record for sample in samples if sample.dropped_by is None]
        survivors, _ = apply_filters(candidates, self.filters, iteration)
        counts = [0] * len(per_record)
        for sample in survivors:
            counts[position_of[id(sample)]] += 1
        return counts
