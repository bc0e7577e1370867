"""Built-in filters. Each sees every sample of the iteration that earlier filters kept and returns keep flags.

Samples whose reward is not finite (``nan``) are never kept by the reward-based filters.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Optional

from iterframe.plugins.components import Filter, Sample
from iterframe.plugins.hookspecs import hookimpl

__all__ = [
    "BestOfNFilter",
    "DedupFilter",
    "DropTruncatedFilter",
    "DropUniformFilter",
    "LengthFilter",
    "ThresholdFilter",
    "TopFractionFilter",
    "normalise_text",
]


def _scored(sample: Sample) -> bool:
    return isinstance(sample.reward, (int, float)) and math.isfinite(sample.reward)


def _by_prompt(samples: list[Sample]) -> dict[int, list[int]]:
    """Sample positions grouped by ``prompt_id``, in first-seen order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for position, sample in enumerate(samples):
        groups[sample.prompt_id].append(position)
    return groups


def _ranked(samples: list[Sample], positions: list[int]) -> list[int]:
    """The scored ``positions``, highest reward first; ties go to the earlier sample."""
    return sorted(
        (position for position in positions if _scored(samples[position])), key=lambda p: -samples[p].reward
    )


def _best_positions(samples: list[Sample], positions: list[int], count: int) -> set[int]:
    """The ``count`` highest-reward scored positions; ties go to the earlier sample."""
    return set(_ranked(samples, positions)[:count])


def _ranks(samples: list[Sample], positions: list[int]) -> dict[int, int]:
    """1-based rank of each scored position among ``positions`` (unscored positions have none)."""
    return {position: rank for rank, position in enumerate(_ranked(samples, positions), start=1)}


def _reward_or_none(sample: Sample):
    return sample.reward if _scored(sample) else None


def normalise_text(text: str) -> str:
    """Case-folded, with runs of whitespace collapsed to one space and the ends stripped."""
    return " ".join(text.split()).casefold()


class ThresholdFilter(Filter):
    """Keeps samples whose reward is at least ``min_reward`` (ReST-EM, expert iteration)."""

    name = "threshold"
    description = "Keep samples whose reward is >= min_reward."

    @dataclasses.dataclass
    class Options:
        min_reward: float = dataclasses.field(default=0.5, metadata={"help": "Smallest reward kept."})

    def select(self, samples: list[Sample]) -> list[bool]:
        return [_scored(sample) and sample.reward >= self.options.min_reward for sample in samples]

    def drop_reasons(self, samples, keep):
        return [{"reward": _reward_or_none(sample), "min_reward": self.options.min_reward} for sample in samples]


class TopFractionFilter(Filter):
    """Keeps the best ``ceil(fraction * n)`` samples of the whole iteration (RAFT)."""

    name = "top-fraction"
    description = "Keep the best fraction of all the iteration's samples (global ranking, as in RAFT)."

    @dataclasses.dataclass
    class Options:
        fraction: float = dataclasses.field(
            default=0.25, metadata={"help": "Share kept, in (0, 1]: the best ceil(fraction * n) samples."}
        )

        def __post_init__(self):
            if not 0 < self.fraction <= 1:
                raise ValueError(f"fraction must be in (0, 1], got {self.fraction}.")

    def select(self, samples: list[Sample]) -> list[bool]:
        best = _best_positions(samples, list(range(len(samples))), self._count(samples))
        return [position in best for position in range(len(samples))]

    def _count(self, samples: list[Sample]) -> int:
        return math.ceil(self.options.fraction * len(samples))

    def drop_reasons(self, samples, keep):
        ranks = _ranks(samples, list(range(len(samples))))
        top = self._count(samples)
        return [
            {"rank": ranks.get(position), "top": top, "of": len(samples), "fraction": self.options.fraction}
            for position in range(len(samples))
        ]


class BestOfNFilter(Filter):
    """Keeps the ``k`` best samples of each prompt (best-of-n distillation)."""

    name = "best-of-n"
    description = "Keep the k highest-reward samples of each prompt."

    @dataclasses.dataclass
    class Options:
        k: int = dataclasses.field(default=1, metadata={"help": "Samples kept per prompt."})

        def __post_init__(self):
            if self.k < 1:
                raise ValueError(f"k must be >= 1, got {self.k}.")

    def select(self, samples: list[Sample]) -> list[bool]:
        best: set[int] = set()
        for positions in _by_prompt(samples).values():
            best |= _best_positions(samples, positions, self.options.k)
        return [position in best for position in range(len(samples))]

    def drop_reasons(self, samples, keep):
        ranks: dict[int, int] = {}
        for positions in _by_prompt(samples).values():
            ranks.update(_ranks(samples, positions))
        return [{"rank_in_prompt": ranks.get(position), "k": self.options.k} for position in range(len(samples))]


class DedupFilter(Filter):
    """Drops completions whose normalised text was already kept (per prompt, or across the iteration)."""

    name = "dedup"
    description = "Drop repeated completions (compared case-folded with whitespace collapsed); the first is kept."

    @dataclasses.dataclass
    class Options:
        per_prompt: bool = dataclasses.field(
            default=True, metadata={"help": "Compare within each prompt (true) or across all prompts (false)."}
        )

    def select(self, samples: list[Sample]) -> list[bool]:
        return [first is None for first in self._first_copies(samples)]

    def _first_copies(self, samples: list[Sample]) -> list[Optional[Sample]]:
        """For each sample, the earlier sample it repeats (``None`` for a first occurrence)."""
        first_seen: dict[tuple, Sample] = {}
        firsts = []
        for sample in samples:
            key = (sample.prompt_id if self.options.per_prompt else None, normalise_text(sample.completion))
            firsts.append(first_seen.get(key))
            first_seen.setdefault(key, sample)
        return firsts

    def drop_reasons(self, samples, keep):
        return [
            None
            if first is None
            else {
                "duplicate_of_prompt_id": first.prompt_id,
                "duplicate_of_sample_index": first.info.get("sample_index"),
            }
            for first in self._first_copies(samples)
        ]


class LengthFilter(Filter):
    """Keeps completions whose length in characters lies within bounds."""

    name = "length"
    description = "Keep completions with min_chars <= len(completion) <= max_chars."

    @dataclasses.dataclass
    class Options:
        min_chars: int = dataclasses.field(default=1, metadata={"help": "Shortest completion kept."})
        max_chars: Optional[int] = dataclasses.field(
            default=None, metadata={"help": "Longest completion kept (none: no upper bound)."}
        )

        def __post_init__(self):
            if self.min_chars < 0:
                raise ValueError(f"min_chars must be >= 0, got {self.min_chars}.")
            if self.max_chars is not None and self.max_chars < self.min_chars:
                raise ValueError(f"max_chars ({self.max_chars}) is below min_chars ({self.min_chars}).")

    def select(self, samples: list[Sample]) -> list[bool]:
        upper = math.inf if self.options.max_chars is None else self.options.max_chars
        return [self.options.min_chars <= len(sample.completion) <= upper for sample in samples]

    def drop_reasons(self, samples, keep):
        bounds = {"min_chars": self.options.min_chars, "max_chars": self.options.max_chars}
        return [{"chars": len(sample.completion), **bounds} for sample in samples]


class DropUniformFilter(Filter):
    """Drops every sample of a prompt whose samples all scored the same: they carry no signal about what is
    better. "The same" allows for noise: rewards within ``tolerance`` of each other, or whose standard deviation
    is at most ``min_std`` (a reward model's scores of equally good answers differ a little). A prompt with a
    single scored sample counts as uniform; unscored samples are never kept."""

    name = "drop-uniform"
    description = "Drop prompts whose samples all got the same reward (all right or all wrong), noise allowed for."

    @dataclasses.dataclass
    class Options:
        tolerance: float = dataclasses.field(
            default=0.0, metadata={"help": "Rewards within this distance of each other count as the same."}
        )
        min_std: float = dataclasses.field(
            default=0.0,
            metadata={
                "help": "A prompt whose rewards' standard deviation (population) is at most this counts as "
                "uniform: for continuous rewards, whose scores differ by noise (0: any difference is signal)."
            },
        )

        def __post_init__(self):
            for name in ("tolerance", "min_std"):
                if not getattr(self, name) >= 0:
                    raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")

    def select(self, samples: list[Sample]) -> list[bool]:
        keep = [False] * len(samples)
        for positions, spread, std in self._spreads(samples):
            if spread is not None and spread > self.options.tolerance and std > self.options.min_std:
                for position in positions:
                    keep[position] = _scored(samples[position])
        return keep

    def _spreads(self, samples: list[Sample]) -> list[tuple[list[int], Optional[float], Optional[float]]]:
        """Each prompt's sample positions, and the spread and standard deviation of their finite rewards (``None``:
        none scored)."""
        spreads = []
        for positions in _by_prompt(samples).values():
            rewards = [samples[position].reward for position in positions if _scored(samples[position])]
            if not rewards:
                spreads.append((positions, None, None))
                continue
            mean = sum(rewards) / len(rewards)
            std = math.sqrt(sum((reward - mean) ** 2 for reward in rewards) / len(rewards))
            spreads.append((positions, max(rewards) - min(rewards), std))
        return spreads

    def drop_reasons(self, samples, keep):
        reasons: list[Optional[dict]] = [None] * len(samples)
        options = self.options
        for positions, spread, std in self._spreads(samples):
            for position in positions:
                reasons[position] = {
                    "reward_spread": spread,
                    "tolerance": options.tolerance,
                    "reward_std": std,
                    "min_std": options.min_std,
                }
        return reasons


class DropTruncatedFilter(Filter):
    """Drops completions the generator cut at ``max_new_tokens`` (``finish_reason == "length"``): an unfinished
    answer, even one a verifier accepts, teaches the model to run on past it. Samples with another or no recorded
    finish reason are kept."""

    name = "drop-truncated"
    description = "Drop completions cut at max_new_tokens (finish_reason 'length'); put it before a threshold."

    def select(self, samples: list[Sample]) -> list[bool]:
        return [sample.info.get("finish_reason") != "length" for sample in samples]

    def drop_reasons(self, samples, keep):
        return [
            {"finish_reason": sample.info.get("finish_reason"), "num_tokens": sample.info.get("num_tokens")}
            for sample in samples
        ]


@hookimpl
def register_filters(register):
    for filter_class in (
        ThresholdFilter,
        TopFractionFilter,
        BestOfNFilter,
        DedupFilter,
        LengthFilter,
        DropUniformFilter,
        DropTruncatedFilter,
    ):
        register(filter_class)
