"""Invariants of the loop's parts, property-tested: the prompt sampler, the filter chain and the built-in filters,
the replay buffer, and metrics rows written to ``metrics.jsonl``. (``step()``'s invariants are in
tests/test_trainer_properties.py.)"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from iterframe.builtin.filters import normalise_text
from iterframe.loop import FAILED_REWARD
from iterframe.loop.artifacts import read_metrics, truncate_metrics, write_metrics_row
from iterframe.loop.prompt_sampler import PromptSampler
from iterframe.loop.replay import ReplayBuffer
from iterframe.loop.stages import filter_samples
from iterframe.plugins import create_component
from iterframe.plugins.components import Sample

FAST = settings(max_examples=100, deadline=None)

# --- the prompt sampler -------------------------------------------------------------------------------------


@FAST
@given(
    num_prompts=st.integers(1, 30),
    draws=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
    shuffle=st.booleans(),
)
def test_sampler_draws_every_prompt_exactly_once_per_epoch(num_prompts, draws, seed, shuffle):
    sampler = PromptSampler(num_prompts, seed=seed, shuffle=shuffle)
    drawn = [index for count in draws for index in sampler.draw_indices(count)]
    assert len(drawn) == sum(draws)
    for start in range(0, len(drawn), num_prompts):
        epoch = drawn[start : start + num_prompts]
        assert len(set(epoch)) == len(epoch)  # no prompt twice within an epoch
        if len(epoch) == num_prompts:
            assert sorted(epoch) == list(range(num_prompts))  # a finished epoch visited every prompt
    if not shuffle:
        assert drawn == [index % num_prompts for index in range(len(drawn))]


@FAST
@given(
    num_prompts=st.integers(1, 20),
    before=st.lists(st.integers(1, 25), max_size=6),
    after=st.lists(st.integers(1, 25), min_size=1, max_size=6),
    seed=st.integers(0, 1000),
)
def test_sampler_state_restored_continues_the_same_stream(num_prompts, before, after, seed):
    uninterrupted = PromptSampler(num_prompts, seed=seed)
    for count in before:
        uninterrupted.draw_indices(count)
    restored = PromptSampler(num_prompts, seed=seed + 1)  # the saved seed wins over the constructor's
    restored.load_state_dict(uninterrupted.state_dict())
    assert [restored.draw_indices(count) for count in after] == [uninterrupted.draw_indices(c) for c in after]


# --- filters ------------------------------------------------------------------------------------------------

REWARDS = st.one_of(st.floats(-2, 2, allow_nan=False), st.just(math.nan))
COMPLETIONS = st.sampled_from(["a", "A ", " a", "b", "", "ab", "b  a"])


@st.composite
def scored_samples(draw) -> list[Sample]:
    rows = draw(st.lists(st.tuples(st.integers(0, 4), REWARDS, COMPLETIONS), max_size=24))
    return [
        Sample(iteration=0, prompt_id=prompt_id, prompt=f"p{prompt_id}", completion=completion, reward=reward)
        for prompt_id, reward, completion in rows
    ]


def _mask(name: str, options: dict, samples: list[Sample]) -> list[bool]:
    mask = create_component("filter", name, options).select(samples)
    assert len(mask) == len(samples) and all(isinstance(keep, bool) for keep in mask)
    return mask


@FAST
@given(samples=scored_samples(), minimum=st.floats(-2, 2), fraction=st.floats(0.01, 1.0), k=st.integers(1, 4))
def test_reward_filters_never_keep_a_failed_sample(samples, minimum, fraction, k):
    for name, options in (
        ("threshold", {"min_reward": minimum}),
        ("top-fraction", {"fraction": fraction}),
        ("best-of-n", {"k": k}),
        ("drop-uniform", {}),
    ):
        for sample, keep in zip(samples, _mask(name, options, samples)):
            assert not (keep and math.isnan(sample.reward)), name


@FAST
@given(samples=scored_samples(), minimum=st.floats(-2, 2))
def test_threshold_keeps_exactly_the_samples_at_or_above_it(samples, minimum):
    expected = [not math.isnan(sample.reward) and sample.reward >= minimum for sample in samples]
    assert _mask("threshold", {"min_reward": minimum}, samples) == expected


@FAST
@given(samples=scored_samples(), k=st.integers(1, 4))
def test_best_of_n_keeps_the_k_best_scored_samples_of_each_prompt(samples, k):
    mask = _mask("best-of-n", {"k": k}, samples)
    for prompt_id in {sample.prompt_id for sample in samples}:
        group = [(s.reward, keep) for s, keep in zip(samples, mask) if s.prompt_id == prompt_id]
        scored = [(reward, keep) for reward, keep in group if not math.isnan(reward)]
        kept = [reward for reward, keep in scored if keep]
        dropped = [reward for reward, keep in scored if not keep]
        assert len(kept) == min(k, len(scored))
        assert not dropped or min(kept) >= max(dropped)


@FAST
@given(samples=scored_samples(), per_prompt=st.booleans())
def test_dedup_keeps_the_first_of_each_distinct_completion(samples, per_prompt):
    mask = _mask("dedup", {"per_prompt": per_prompt}, samples)
    seen = set()
    for sample, keep in zip(samples, mask):
        key = (sample.prompt_id if per_prompt else None, normalise_text(sample.completion))
        assert keep == (key not in seen)
        seen.add(key)


def _run_filter_chain(samples: list[Sample], filters: list) -> tuple[list[Sample], dict[str, int]]:
    """The loop's own filter stage (:func:`iterframe.loop.stages.filter_samples`) with no hook plugins."""
    no_hooks = SimpleNamespace(call=lambda *args, **kwargs: [])
    return filter_samples(samples, filters, no_hooks, 0)


@FAST
@given(samples=scored_samples(), minimum=st.floats(-2, 2), k=st.integers(1, 3), per_prompt=st.booleans())
def test_filter_chain_keeps_an_ordered_subset_and_accounts_for_every_sample(samples, minimum, k, per_prompt):
    for sample in samples:
        if math.isnan(sample.reward):
            sample.dropped_by = f"{FAILED_REWARD}:no-score"  # as the loop marks failed samples before filtering
    filters = [
        create_component("filter", "threshold", {"min_reward": minimum}),
        create_component("filter", "dedup", {"per_prompt": per_prompt}),
        create_component("filter", "best-of-n", {"k": k}),
    ]
    kept, dropped_counts = _run_filter_chain(samples, filters)
    positions = [next(i for i, sample in enumerate(samples) if sample is kept_sample) for kept_sample in kept]
    assert positions == sorted(positions)  # a subset, in the input order
    assert all(sample.kept and sample.dropped_by is None for sample in kept)
    not_kept = [sample for sample in samples if not sample.kept]
    assert all(sample.dropped_by is not None for sample in not_kept)
    failed = sum(sample.dropped_by == f"{FAILED_REWARD}:no-score" for sample in samples)
    assert len(kept) + sum(dropped_counts.values()) + failed == len(samples)
    assert Counter(s.dropped_by for s in not_kept if s.dropped_by != f"{FAILED_REWARD}:no-score") == +Counter(
        dropped_counts
    )


# --- the replay buffer --------------------------------------------------------------------------------------


@FAST
@given(capacity=st.integers(0, 12), batches=st.lists(st.integers(0, 8), max_size=10))
def test_replay_buffer_holds_the_newest_samples_up_to_its_capacity(capacity, batches):
    buffer, added = ReplayBuffer(capacity), []
    for iteration, size in enumerate(batches):
        batch = [Sample(iteration, index, "p", f"{iteration}-{index}") for index in range(size)]
        buffer.add(batch)
        added = batch + added
        assert len(buffer) <= capacity
        assert [s.completion for s in buffer.samples] == [s.completion for s in added[:capacity]]
    restored = ReplayBuffer(capacity)
    restored.load_state_dict(buffer.state_dict())
    assert restored.samples == buffer.samples


# --- metrics.jsonl ------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    writes=st.lists(st.tuples(st.integers(0, 6), st.floats(allow_nan=True, allow_infinity=True)), max_size=12),
    keep_through=st.integers(-1, 6),
)
def test_metrics_rows_are_unique_sorted_and_the_last_write_wins(writes, keep_through):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "metrics.jsonl")
        for iteration, value in writes:
            write_metrics_row(path, {"iteration": iteration, "reward/mean": value})
        rows = read_metrics(path)
        last_written = dict(writes)
        assert [row["iteration"] for row in rows] == sorted(last_written)
        for row in rows:
            value = last_written[row["iteration"]]
            assert row["reward/mean"] == (value if math.isfinite(value) else None)
        truncate_metrics(path, keep_through)
        assert [row["iteration"] for row in read_metrics(path)] == [
            i for i in sorted(last_written) if i <= keep_through
        ]
