"""The stages of an iteration that work on samples: completions become samples, samples get rewards, and the
``on_samples_scored`` hooks and the filter chain decide which are kept."""

from __future__ import annotations

import inspect
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Optional

from iterframe.loop.checks import component_name
from iterframe.loop.config import PromptRecord
from iterframe.plugins.components import Completion, Filter, Reward, Sample
from iterframe.plugins.errors import ComponentValueError, blame, describe_origin
from iterframe.plugins.reward_pool import FAILURE_REASONS, scorer_for

__all__ = [
    "FAILED_REWARD",
    "FAILURE_REASONS",
    "FunctionReward",
    "apply_filters",
    "call_reward_function",
    "check_failed_rate",
    "check_mask",
    "check_reasons",
    "failure_reason",
    "filter_samples",
    "samples_from_completions",
    "score_samples",
]

#: ``dropped_by`` of a failed sample is this prefix and the reason: ``failed-reward:timeout`` (its scoring ran past
#: the reward's ``timeout_s``), ``failed-reward:error`` (it raised) or ``failed-reward:no-score`` (the reward gave
#: ``None``, NaN or infinity). A failed sample is never kept and counts in no reward statistic.
FAILED_REWARD = "failed-reward"


def call_reward_function(function: Callable, samples: list[Sample]):
    """Call a reward function the way its signature asks: ``f(prompts, completions, references)`` when it takes
    three positional arguments, else ``f(samples)`` (a list of :class:`~iterframe.Sample`)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: the documented three-list form
        signature = None
    if signature is None or _accepts(signature, 3):
        return function(
            [sample.prompt for sample in samples],
            [sample.completion for sample in samples],
            [sample.reference for sample in samples],
        )
    if _accepts(signature, 1):
        return function(samples)
    raise TypeError(
        f"reward function {getattr(function, '__name__', function)!r}{signature} takes neither (samples) nor "
        "(prompts, completions, references)."
    )


def _accepts(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*([None] * count))
    except TypeError:
        return False
    return True


class FunctionReward(Reward):
    """Wraps a function as a reward component: ``f(samples) -> list[float]`` or
    ``f(prompts, completions, references) -> list[float]`` (see :func:`call_reward_function`)."""

    description = "A Python function used as the reward."

    def __init__(self, function: Callable[..., Sequence[float]]):
        super().__init__()
        self.function = function
        self.name = getattr(function, "__name__", type(function).__name__)

    def score(self, samples: list[Sample]) -> list[float]:
        return list(call_reward_function(self.function, samples))


def samples_from_completions(
    records: list[PromptRecord], completions: list[list[Completion]], generator_name: str, iteration: int
) -> list[Sample]:
    """One :class:`Sample` per completion, in record order; ``info`` records where each came from (and, for
    completions with token ids, the ``tokenizer_hash`` their generator gave)."""
    samples = []
    for record, record_completions in zip(records, completions):
        for index, completion in enumerate(record_completions):
            info = {
                "sample_index": index,
                "generator": generator_name,
                "num_tokens": completion.num_tokens,
                "finish_reason": completion.finish_reason,
            }
            if record.extra:
                info["extra"] = dict(record.extra)
            token_ids = getattr(completion, "token_ids", None)
            prompt_token_ids = getattr(completion, "prompt_token_ids", None)
            if getattr(completion, "tokenizer_hash", None) is not None:
                info["tokenizer_hash"] = completion.tokenizer_hash
            samples.append(
                Sample(
                    iteration=iteration,
                    prompt_id=record.prompt_id,
                    prompt=record.prompt,
                    completion=completion.text,
                    reference=record.reference,
                    info=info,
                    prompt_token_ids=None if prompt_token_ids is None else [int(i) for i in prompt_token_ids],
                    completion_token_ids=None if token_ids is None else [int(i) for i in token_ids],
                )
            )
    return samples


def failure_reason(sample: Sample) -> Optional[str]:
    """``timeout``, ``error`` or ``no-score`` for a sample whose scoring failed, else ``None``."""
    prefix = FAILED_REWARD + ":"
    dropped_by = sample.dropped_by
    return dropped_by[len(prefix) :] if dropped_by and dropped_by.startswith(prefix) else None


def score_samples(reward: Reward, samples: list[Sample], iteration: int, scorer=None) -> None:
    """Set each sample's reward, scored by ``scorer`` (default: :func:`~iterframe.plugins.reward_pool.scorer_for`
    the reward, for this call only), and the ``info`` entries the reward set on it while scoring (also in a worker
    process). A sample that gets no finite score is failed: NaN reward, ``dropped_by`` ``failed-reward:REASON`` and
    the reason's message as its ``drop_reason`` (``{"error": message}``)."""
    if not samples:
        return
    own_scorer = scorer is None
    scorer = scorer_for(reward) if own_scorer else scorer
    try:
        with blame("reward", reward, iteration):
            outcomes = scorer.score(samples)
    finally:
        if own_scorer:
            scorer.close()
    for sample, outcome in zip(samples, outcomes):
        if outcome.info:  # what the reward recorded, from a worker process as from this one
            sample.info.update(outcome.info)
        if outcome.failure is None:
            sample.reward = outcome.score
        else:
            sample.reward, sample.dropped_by = math.nan, f"{FAILED_REWARD}:{outcome.failure}"
            sample.drop_reason = {"error": outcome.message}


def check_failed_rate(reward: Reward, samples: list[Sample], max_failed_rate: float, iteration: int) -> None:
    """Stop the run when more than ``max_failed_rate`` of ``samples`` failed their scoring: a reward that fails
    that often gives no signal worth training on. The error names the reward and shows a few of its errors."""
    reasons = Counter(reason for reason in map(failure_reason, samples) if reason is not None)
    num_failed = sum(reasons.values())
    if not samples or num_failed / len(samples) <= max_failed_rate:
        return
    examples = list(dict.fromkeys(s.drop_reason["error"] for s in samples if failure_reason(s)))[:3]
    name, origin = component_name(reward), describe_origin(reward)
    counts = ", ".join(f"{reasons[reason]} {reason}" for reason in FAILURE_REASONS if reasons[reason])
    shown = "".join(f"\n  - {example}" for example in examples)
    raise ComponentValueError(
        f"Iteration {iteration}: reward {name!r} ({origin}) failed on {num_failed} of {len(samples)} samples "
        f"({counts}), more than loop.max_failed_rate={max_failed_rate:g}. Some of its errors:{shown}\n"
        "Fix the reward or its data (or raise its timeout_s); to train on the samples it did score, raise "
        "loop.max_failed_rate.",
        kind="reward",
        name=name,
        origin=origin,
        iteration=iteration,
    )


def filter_samples(
    samples: list[Sample], filters: Sequence[Filter], hooks, iteration: int
) -> tuple[list[Sample], dict[str, int]]:
    """Apply the ``on_samples_scored`` hooks (``hooks``: the run's :class:`~iterframe.plugins.hooks.Hooks`, or
    ``None`` for none), then the filter chain; mark the survivors kept, the others with who dropped them and why,
    and return the survivors with the drop count per plugin and filter (every filter of the chain, in order, 0
    when it dropped none)."""
    survivors = [sample for sample in samples if sample.dropped_by is None]
    dropped_counts: dict[str, int] = {}

    def check_verdict(verdict) -> None:
        check_mask(verdict, len(samples), "on_samples_scored")

    answers = (
        []
        if hooks is None
        else hooks.call("on_samples_scored", check=check_verdict, iteration=iteration, samples=samples)
    )
    for plugin_name, verdict in answers:
        if verdict is None:
            continue
        for sample, keep in zip(samples, verdict):
            if not keep and sample.dropped_by is None:
                sample.dropped_by = plugin_name
                dropped_counts[plugin_name] = dropped_counts.get(plugin_name, 0) + 1
        survivors = [sample for sample in survivors if sample.dropped_by is None]
    survivors, drops = apply_filters(survivors, filters, iteration)
    for name, dropped in drops:
        dropped_counts[name] = dropped_counts.get(name, 0) + len(dropped)
        for sample, reason in dropped:
            sample.dropped_by, sample.drop_reason = name, reason
    for sample in survivors:
        sample.kept = True
    return survivors, dropped_counts


def apply_filters(
    samples: list[Sample], filters: Sequence[Filter], iteration: int
) -> tuple[list[Sample], list[tuple[str, list[tuple[Sample, Optional[dict[str, Any]]]]]]]:
    """Run the filter chain over ``samples`` without changing them: each filter sees the survivors of the one
    before. Return the survivors and, per filter in chain order, its name and the ``(sample, reason)`` pairs it
    dropped (``reason`` from :meth:`~iterframe.Filter.drop_reasons`)."""
    survivors = list(samples)
    drops = []
    for filter_component in filters:
        name = component_name(filter_component)
        dropped: list[tuple[Sample, Optional[dict[str, Any]]]] = []
        if survivors:
            with blame("filter", filter_component, iteration):
                mask = filter_component.select(survivors)
                check_mask(mask, len(survivors), f"Filter {name!r}")
                reasons = [None] * len(survivors)
                if not all(mask):
                    reasons = filter_component.drop_reasons(survivors, list(mask))
                    check_reasons(reasons, len(survivors), f"Filter {name!r}")
            dropped = [(sample, reason) for sample, keep, reason in zip(survivors, mask, reasons) if not keep]
            survivors = [sample for sample, keep in zip(survivors, mask) if keep]
        drops.append((name, dropped))
    return survivors, drops


def check_mask(mask, expected: int, who: str) -> None:
    """A keep-mask (from a filter or an ``on_samples_scored`` hook) must have one entry per sample."""
    if not isinstance(mask, (list, tuple)) or len(mask) != expected:
        size = len(mask) if isinstance(mask, (list, tuple)) else type(mask).__name__
        raise ValueError(f"{who} must return a list of {expected} booleans (one per sample), got {size}.")


def check_reasons(reasons, expected: int, who: str) -> None:
    """``drop_reasons`` must give one dict or ``None`` per sample."""
    if not isinstance(reasons, (list, tuple)) or len(reasons) != expected:
        size = len(reasons) if isinstance(reasons, (list, tuple)) else type(reasons).__name__
        raise ValueError(f"{who}: drop_reasons must return a list of {expected} dicts or None, got {size}.")
    wrong = next((reason for reason in reasons if reason is not None and not isinstance(reason, dict)), None)
    if wrong is not None:
        raise ValueError(f"{who}: drop_reasons must return dicts or None, got {type(wrong).__name__}.")
