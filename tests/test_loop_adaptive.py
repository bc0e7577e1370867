"""Adaptive per-prompt sampling: ``loop.until_accepted`` samples prompts in rounds until enough of their samples
pass the filters, ``loop.redistribute`` hands the budget solved prompts saved to unsolved ones."""

from __future__ import annotations

import collections

import pytest
from loop_fakes import make_loop

from iterframe.loop import LoopConfig, PromptRecord
from iterframe.loop.adaptive import allocate_round
from iterframe.loop.artifacts import read_samples, samples_path
from iterframe.plugins import create_component
from iterframe.plugins.components import Completion, Generator

TOKENS_PER_SAMPLE = 5


class CountingGenerator(Generator):
    """The n-th completion ever drawn for a prompt is ``"<prompt>#<n>"`` (``TOKENS_PER_SAMPLE`` tokens each)."""

    name = "counting"

    def __init__(self):
        super().__init__()
        self.drawn = collections.Counter()
        self.calls = []

    def generate(self, prompts, num_samples):
        self.calls.append((list(prompts), num_samples))
        completions = []
        for prompt in prompts:
            completions.append(
                [
                    Completion(f"{prompt}#{self.drawn[prompt] + j}", TOKENS_PER_SAMPLE, "stop")
                    for j in range(num_samples)
                ]
            )
            self.drawn[prompt] += num_samples
        return completions


def solved_at(prompts, completions, references):
    """A prompt ``<kind><i>`` with reference ``n`` is answered right by its n-th sample (``-1``: never)."""
    return [
        float(int(completion.split("#")[1]) == int(reference))
        for completion, reference in zip(completions, references)
    ]


def mixed_prompts(easy: int, hard: int, impossible: int, hard_at: int = 3) -> list[PromptRecord]:
    """Easy prompts are solved by their first sample, hard ones by sample ``hard_at``, impossible ones never."""
    kinds = [("easy", 0)] * easy + [("hard", hard_at)] * hard + [("never", -1)] * impossible
    return [
        PromptRecord(prompt_id=i, prompt=f"{kind}{i}", reference=str(at)) for i, (kind, at) in enumerate(kinds)
    ]


def run(tiny_llama_path, output_dir, prompts, **options):
    generator = CountingGenerator()
    loop = make_loop(
        tiny_llama_path,
        output_dir,
        prompts=prompts,
        generator=generator,
        reward=solved_at,
        filters=[
            create_component("filter", "threshold", {"min_reward": 1.0}),
            create_component("filter", "best-of-n"),
        ],
        iterations=1,
        prompts_per_iteration=len(prompts),
        shuffle_prompts=False,
        **options,
    )
    (row,) = loop.run()
    return row, generator


def test_rounds_stop_solved_prompts_and_keep_as_many_for_fewer_tokens(plugin_manager, tiny_llama_path, tmp_path):
    prompts = mixed_prompts(easy=4, hard=2, impossible=2)
    full, _ = run(tiny_llama_path, tmp_path / "full", prompts, samples_per_prompt=8)
    adaptive, generator = run(
        tiny_llama_path,
        tmp_path / "adaptive",
        prompts,
        samples_per_prompt=8,
        until_accepted=1,
        samples_per_round=2,
    )
    assert adaptive["num_kept"] == full["num_kept"] == 6  # one per easy and hard prompt
    assert full["generated_tokens"] == 8 * 8 * TOKENS_PER_SAMPLE
    # easy prompts: one round of 2; hard ones: 2 rounds (solved by sample 3); impossible ones: 4 rounds of 2
    assert adaptive["num_generated"] == 4 * 2 + 2 * 4 + 2 * 8
    assert adaptive["generated_tokens"] == adaptive["num_generated"] * TOKENS_PER_SAMPLE < full["generated_tokens"]
    assert adaptive["kept_per_1k_generated_tokens"] > full["kept_per_1k_generated_tokens"]
    assert adaptive["kept_per_1k_generated_tokens"] == pytest.approx(1000 * 6 / (32 * TOKENS_PER_SAMPLE))
    assert (adaptive["prompts/solved"], adaptive["prompts/exhausted"], adaptive["sampling/rounds"]) == (6, 2, 4)
    assert [len(prompts_of_call) for prompts_of_call, _ in generator.calls] == [8, 4, 2, 2]


def test_samples_of_a_prompt_stay_together_and_number_on_across_rounds(plugin_manager, tiny_llama_path, tmp_path):
    prompts = mixed_prompts(easy=1, hard=1, impossible=0)
    run(tiny_llama_path, tmp_path / "out", prompts, samples_per_prompt=4, until_accepted=1)
    rows = read_samples(samples_path(tmp_path / "out", 0))
    assert [(row["prompt"], row["sample_index"], row["completion"]) for row in rows] == [
        ("easy0", 0, "easy0#0"),
        ("hard1", 0, "hard1#0"),
        ("hard1", 1, "hard1#1"),
        ("hard1", 2, "hard1#2"),
        ("hard1", 3, "hard1#3"),
    ]
    assert [row["kept"] for row in rows] == [True, False, False, False, True]


def test_redistribute_gives_saved_budget_to_unsolved_prompts(plugin_manager, tiny_llama_path, tmp_path):
    prompts = mixed_prompts(easy=3, hard=1, impossible=0, hard_at=6)  # the hard prompt needs 7 samples
    alone, _ = run(tiny_llama_path, tmp_path / "alone", prompts, samples_per_prompt=4, until_accepted=1)
    assert (alone["prompts/solved"], alone["prompts/exhausted"], alone["num_kept"]) == (3, 1, 3)
    shared, _ = run(
        tiny_llama_path, tmp_path / "shared", prompts, samples_per_prompt=4, until_accepted=1, redistribute=True
    )
    assert (shared["prompts/solved"], shared["prompts/exhausted"], shared["num_kept"]) == (4, 0, 4)
    assert shared["num_generated"] == 3 + 7 <= 4 * 4


def test_without_until_accepted_every_prompt_gets_its_whole_budget_in_one_call(
    plugin_manager, tiny_llama_path, tmp_path
):
    row, generator = run(tiny_llama_path, tmp_path / "out", mixed_prompts(2, 1, 1), samples_per_prompt=3)
    assert generator.calls == [(["easy0", "easy1", "hard2", "never3"], 3)]
    assert row["num_generated"] == 12
    assert "prompts/solved" not in row and "sampling/rounds" not in row


@pytest.mark.parametrize(
    ("spent", "solved", "redistribute", "expected"),
    [
        ([0, 0, 0], [False, False, False], False, [2, 2, 2]),
        ([2, 4, 3], [True, False, False], False, [0, 0, 1]),  # budget 4: one left for the third
        ([2, 4, 3], [True, False, False], True, [0, 2, 1]),  # the first saved 2: both go to the second
        ([1, 4, 4], [True, False, False], True, [0, 2, 1]),  # a pool of 3 spent in prompt order
        ([4, 4], [False, False], True, [0, 0]),  # nobody saved anything: all exhausted
    ],
)
def test_allocate_round(spent, solved, redistribute, expected):
    assert allocate_round(spent, solved, budget=4, per_round=2, redistribute=redistribute) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"until_accepted": 5, "samples_per_prompt": 4},
            r"until_accepted \(5\) is above samples_per_prompt \(4\)",
        ),
        ({"redistribute": True}, "redistribute works with adaptive sampling only: set until_accepted"),
        ({"samples_per_round": 2}, "samples_per_round works with adaptive sampling only"),
        ({"until_accepted": -1}, "until_accepted must be an integer >= 0"),
    ],
)
def test_adaptive_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig(output_dir="out", **options)
