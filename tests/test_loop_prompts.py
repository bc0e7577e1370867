"""Prompt drawing: shuffled, without replacement until the set is used up, then a new seeded epoch."""

from __future__ import annotations

import pytest
from loop_fakes import ScriptedGenerator, make_loop, make_prompts

from iterframe.loop.prompt_sampler import PromptSampler


def test_each_epoch_visits_every_prompt_once():
    sampler = PromptSampler(5, seed=3)
    drawn = sampler.draw_indices(15)
    for epoch in range(3):
        assert sorted(drawn[epoch * 5 : epoch * 5 + 5]) == [0, 1, 2, 3, 4]


def test_draw_crossing_an_epoch_boundary_continues_in_the_next_epoch():
    sampler = PromptSampler(5, seed=3)
    first = sampler.draw_indices(4)
    crossing = sampler.draw_indices(3)
    assert sorted(first + crossing[:1]) == [0, 1, 2, 3, 4]
    assert (sampler.epoch, sampler.position) == (1, 2)


def test_order_is_seeded_and_differs_between_epochs_and_seeds():
    assert PromptSampler(20, seed=1).draw_indices(40) == PromptSampler(20, seed=1).draw_indices(40)
    order = PromptSampler(20, seed=1).draw_indices(40)
    assert order[:20] != order[20:]
    assert PromptSampler(20, seed=2).draw_indices(20) != order[:20]


def test_unshuffled_sampler_keeps_dataset_order():
    assert PromptSampler(3, shuffle=False).draw_indices(5) == [0, 1, 2, 0, 1]


def test_state_dict_round_trip_continues_the_same_stream():
    sampler = PromptSampler(7, seed=5)
    sampler.draw_indices(9)
    restored = PromptSampler(7, seed=0)
    restored.load_state_dict(sampler.state_dict())
    assert restored.draw_indices(10) == sampler.draw_indices(10)


def test_empty_prompt_set_is_an_error():
    with pytest.raises(ValueError, match="prompt set is empty"):
        PromptSampler(0)


def test_loop_draws_prompts_per_iteration_and_reports_the_epoch(tiny_llama_path, tmp_path):
    generator = ScriptedGenerator()
    rows = make_loop(
        tiny_llama_path,
        tmp_path / "out",
        generator=generator,
        prompts=make_prompts(5),
        iterations=5,
        prompts_per_iteration=2,
        samples_per_prompt=1,
        seed=7,
    ).run()
    drawn = [prompt for prompts, _ in generator.calls for prompt in prompts]
    assert len(drawn) == 10
    assert sorted(drawn[:5]) == sorted(drawn[5:]) == ["p0", "p1", "p2", "p3", "p4"]
    expected = [PromptSampler(5, seed=7).draw_indices(10)]
    assert drawn == [f"p{index}" for index in expected[0]]
    assert [row["prompt_epoch"] for row in rows] == [0, 0, 0, 1, 1]
