"""Built-in filters on hand-built samples, with exact expected keep flags."""

from __future__ import annotations

import math

import pytest

from iterframe.plugins import ComponentOptionError, create_component
from iterframe.plugins.components import Sample

NAN = math.nan


def samples(*rows):
    """``(prompt_id, completion, reward)`` rows -> samples of iteration 0."""
    return [
        Sample(
            iteration=0, prompt_id=prompt_id, prompt=f"prompt {prompt_id}", completion=completion, reward=reward
        )
        for prompt_id, completion, reward in rows
    ]


def select(name, batch, **options):
    return create_component("filter", name, options).select(batch)


def test_threshold_keeps_rewards_at_or_above_min_reward_and_never_nan(plugin_manager):
    batch = samples((0, "a", 0.2), (0, "b", 0.5), (1, "c", 0.9), (1, "d", NAN), (2, "e", 0.49))
    assert select("threshold", batch, min_reward=0.5) == [False, True, True, False, False]


def test_threshold_default_keeps_correct_answers_of_a_binary_reward(plugin_manager):
    assert select("threshold", samples((0, "a", 1.0), (0, "b", 0.0))) == [True, False]


def test_top_fraction_ranks_the_whole_iteration_globally(plugin_manager):
    batch = samples((0, "a", 0.1), (0, "b", 0.9), (1, "c", 0.8), (1, "d", 0.7), (2, "e", 0.2), (2, "f", 0.3))
    # ceil(0.5 * 6) = 3 best across all prompts: 0.9, 0.8, 0.7; prompt 2 gets none.
    assert select("top-fraction", batch, fraction=0.5) == [False, True, True, True, False, False]


def test_top_fraction_rounds_up_and_breaks_ties_by_order(plugin_manager):
    batch = samples((0, "a", 1.0), (1, "b", 1.0), (2, "c", 1.0), (3, "d", 0.0))
    # ceil(0.4 * 4) = 2: of three tied samples, the first two.
    assert select("top-fraction", batch, fraction=0.4) == [True, True, False, False]


def test_top_fraction_never_keeps_unscored_samples(plugin_manager):
    batch = samples((0, "a", NAN), (0, "b", NAN), (1, "c", 0.1))
    assert select("top-fraction", batch, fraction=1.0) == [False, False, True]


def test_top_fraction_of_no_samples_is_empty(plugin_manager):
    assert select("top-fraction", [], fraction=0.5) == []


@pytest.mark.parametrize("fraction", ["0", "-0.1", "1.01"])
def test_top_fraction_rejects_fractions_outside_zero_one(plugin_manager, fraction):
    with pytest.raises(ComponentOptionError, match=r"filter 'top-fraction': fraction must be in \(0, 1\]"):
        create_component("filter", "top-fraction", {"fraction": fraction})


def test_best_of_n_keeps_the_k_best_of_each_prompt(plugin_manager):
    batch = samples(
        (0, "a", 0.1), (0, "b", 0.9), (0, "c", 0.5), (1, "d", 0.3), (1, "e", 0.3), (1, "f", NAN), (2, "g", NAN)
    )
    assert select("best-of-n", batch, k=1) == [False, True, False, True, False, False, False]
    assert select("best-of-n", batch, k=2) == [False, True, True, True, True, False, False]


def test_best_of_n_groups_by_prompt_even_when_samples_interleave(plugin_manager):
    batch = samples((0, "a", 0.2), (1, "b", 0.6), (0, "c", 0.4), (1, "d", 0.1))
    assert select("best-of-n", batch, k=1) == [False, True, True, False]


def test_best_of_n_rejects_k_below_one(plugin_manager):
    with pytest.raises(ComponentOptionError, match="k must be >= 1, got 0"):
        create_component("filter", "best-of-n", {"k": 0})


def test_dedup_drops_repeats_of_normalised_text_within_a_prompt(plugin_manager):
    batch = samples(
        (0, "The answer is 4", 1.0),
        (0, "the  answer is 4\n", 1.0),
        (0, "The answer is 5", 0.0),
        (1, "THE ANSWER IS 4", 1.0),
        (1, " the answer is 4", 1.0),
    )
    assert select("dedup", batch) == [True, False, True, True, False]


def test_dedup_across_prompts_keeps_only_the_first_occurrence(plugin_manager):
    batch = samples((0, "x = 1", 1.0), (1, "X = 1", 1.0), (2, "x = 2", 1.0))
    assert select("dedup", batch, per_prompt=False) == [True, False, True]


def test_length_keeps_completions_within_character_bounds(plugin_manager):
    batch = samples((0, "", 1.0), (0, "ab", 1.0), (0, "abcd", 1.0), (0, "abcdef", 1.0))
    assert select("length", batch) == [False, True, True, True]
    assert select("length", batch, min_chars=2, max_chars=4) == [False, True, True, False]
    assert select("length", batch, min_chars=0, max_chars="none") == [True, True, True, True]


def test_length_rejects_max_below_min(plugin_manager):
    with pytest.raises(ComponentOptionError, match=r"max_chars \(2\) is below min_chars \(3\)"):
        create_component("filter", "length", {"min_chars": 3, "max_chars": 2})


def test_drop_uniform_drops_prompts_whose_samples_all_scored_the_same(plugin_manager):
    batch = samples(
        (0, "a", 1.0), (0, "b", 1.0),  # all right: no signal
        (1, "c", 0.0), (1, "d", 1.0),  # mixed: kept
        (2, "e", 0.0), (2, "f", 0.0),  # all wrong: no signal
        (3, "g", 1.0),  # a single sample is uniform
        (4, "h", 0.0), (4, "i", NAN), (4, "j", 1.0),  # mixed; the unscored sample is not kept
    )  # fmt: skip
    assert select("drop-uniform", batch) == [False, False, True, True, False, False, False, True, False, True]


def test_drop_uniform_tolerance_treats_close_rewards_as_equal(plugin_manager):
    batch = samples((0, "a", 0.50), (0, "b", 0.52), (1, "c", 0.1), (1, "d", 0.9))
    assert select("drop-uniform", batch, tolerance=0.05) == [False, False, True, True]


def test_drop_uniform_min_std_treats_reward_model_noise_as_no_signal(plugin_manager):
    batch = samples(
        (0, "a", 0.71), (0, "b", 0.70), (0, "c", 0.72), (0, "d", 0.69),  # std 0.011: noise
        (1, "e", 0.20), (1, "f", 0.90), (1, "g", 0.25), (1, "h", 0.85),  # std 0.33: signal
    )  # fmt: skip
    assert select("drop-uniform", batch) == [True] * 8  # any difference counts by default
    assert select("drop-uniform", batch, min_std=0.05) == [False] * 4 + [True] * 4
    reasons = create_component("filter", "drop-uniform", {"min_std": 0.05}).drop_reasons(batch, [False] * 8)
    assert reasons[0]["min_std"] == 0.05 and reasons[0]["reward_std"] == pytest.approx(0.01118, abs=1e-4)
    with pytest.raises(ComponentOptionError, match="min_std must be >= 0"):
        create_component("filter", "drop-uniform", {"min_std": -0.1})


def test_filters_chain_in_order_each_seeing_what_the_previous_kept(plugin_manager):
    batch = samples(
        (0, "4", 1.0), (0, "4 ", 1.0), (0, "5", 0.0),
        (1, "7", 0.0), (1, "8", 0.0),
        (2, "9", 1.0), (2, "10", 0.0),
    )  # fmt: skip
    kept = batch
    for name, options in [("drop-uniform", {}), ("dedup", {}), ("threshold", {"min_reward": 1.0})]:
        flags = create_component("filter", name, options).select(kept)
        kept = [sample for sample, keep in zip(kept, flags) if keep]
    assert [(sample.prompt_id, sample.completion) for sample in kept] == [(0, "4"), (2, "9")]


# --- why a sample was dropped ----------------------------------------------------------------------------------


def dropped_reasons(name, batch, **options):
    """``{position: reason}`` of the samples the filter drops."""
    component = create_component("filter", name, options)
    keep = component.select(batch)
    reasons = component.drop_reasons(batch, keep)
    return {position: reason for position, (kept, reason) in enumerate(zip(keep, reasons)) if not kept}


def test_threshold_reason_is_the_reward_and_the_minimum(plugin_manager):
    batch = samples((0, "a", 0.2), (0, "b", 0.9), (1, "c", NAN))
    assert dropped_reasons("threshold", batch, min_reward=0.5) == {
        0: {"reward": 0.2, "min_reward": 0.5},
        2: {"reward": None, "min_reward": 0.5},
    }


def test_top_fraction_reason_is_the_rank_against_the_cut(plugin_manager):
    batch = samples((0, "a", 0.1), (0, "b", 0.9), (1, "c", 0.8), (1, "d", 0.7))
    assert dropped_reasons("top-fraction", batch, fraction=0.5) == {
        0: {"rank": 4, "top": 2, "of": 4, "fraction": 0.5},
        3: {"rank": 3, "top": 2, "of": 4, "fraction": 0.5},
    }


def test_best_of_n_reason_is_the_rank_within_the_prompt(plugin_manager):
    batch = samples((0, "a", 0.1), (0, "b", 0.9), (0, "c", 0.5), (1, "d", 0.7))
    assert dropped_reasons("best-of-n", batch, k=1) == {
        0: {"rank_in_prompt": 3, "k": 1},
        2: {"rank_in_prompt": 2, "k": 1},
    }


def test_dedup_reason_names_the_sample_it_repeats(plugin_manager):
    batch = samples((0, "x", 1.0), (0, "y", 1.0), (0, " X ", 1.0), (1, "x", 1.0))
    for index, sample in enumerate(batch):
        sample.info["sample_index"] = 10 + index
    assert dropped_reasons("dedup", batch) == {2: {"duplicate_of_prompt_id": 0, "duplicate_of_sample_index": 10}}
    assert dropped_reasons("dedup", batch, per_prompt=False) == {
        2: {"duplicate_of_prompt_id": 0, "duplicate_of_sample_index": 10},
        3: {"duplicate_of_prompt_id": 0, "duplicate_of_sample_index": 10},
    }


def test_length_reason_is_the_length_and_the_bounds(plugin_manager):
    batch = samples((0, "", 1.0), (0, "abc", 1.0), (0, "abcdef", 1.0))
    assert dropped_reasons("length", batch, min_chars=1, max_chars=4) == {
        0: {"chars": 0, "min_chars": 1, "max_chars": 4},
        2: {"chars": 6, "min_chars": 1, "max_chars": 4},
    }


def test_drop_uniform_reason_is_the_prompts_reward_spread(plugin_manager):
    batch = samples((0, "a", 1.0), (0, "b", 1.0), (1, "c", 0.0), (1, "d", 1.0), (2, "e", NAN))
    uniform = {"reward_spread": 0.0, "tolerance": 0.0, "reward_std": 0.0, "min_std": 0.0}
    assert dropped_reasons("drop-uniform", batch) == {
        0: uniform,
        1: uniform,
        4: {"reward_spread": None, "tolerance": 0.0, "reward_std": None, "min_std": 0.0},
    }


def test_drop_truncated_drops_completions_cut_at_max_new_tokens_and_says_so(plugin_manager):
    batch = samples((0, "done", 1.0), (0, "cut", 1.0), (1, "unknown", 1.0))
    batch[0].info = {"finish_reason": "stop", "num_tokens": 3}
    batch[1].info = {"finish_reason": "length", "num_tokens": 64}
    component = create_component("filter", "drop-truncated")
    keep = component.select(batch)
    assert keep == [True, False, True]
    assert component.drop_reasons(batch, keep)[1] == {"finish_reason": "length", "num_tokens": 64}
