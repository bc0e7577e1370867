"""TRL's ``async def`` reward functions: awaited, one call per prompt, the calls awaited concurrently; in the run's
process (also when it already runs an event loop) and in a worker process."""

from __future__ import annotations

import asyncio

import framework_functions
import pytest

from iterframe.loop.stages import score_samples
from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext, Sample


@pytest.fixture(autouse=True)
def no_calls():
    framework_functions.CALLS.clear()


def samples_of(groups: list[list[str]]) -> list[Sample]:
    """The completions of each prompt (prompt i is ``"Qi"``); each sample's ``calls`` column says how many calls
    the function must see in flight together: one per prompt."""
    return [
        Sample(0, prompt_id, f"Q{prompt_id}", completion, info={"extra": {"calls": len(groups)}})
        for prompt_id, completions in enumerate(groups)
        for completion in completions
    ]


def reward_of(function: str, **options):
    reward = create_component("reward", "trl", {"function": f"framework_functions:{function}", **options})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    return reward


def test_an_async_function_is_called_once_per_prompt_and_the_calls_awaited_concurrently(plugin_manager):
    reward = reward_of("async_length_reward", workers=0)
    scores = reward.score(samples_of([["a", "bb"], ["ccc"], ["dddd", "e"]]))
    assert scores == [1.0, 2.0, 3.0, 4.0, 1.0]  # each call waited for the other two: all three were in flight
    assert [call["completions"] for call in framework_functions.CALLS] == [["a", "bb"], ["ccc"], ["dddd", "e"]]


def test_an_async_function_is_awaited_when_the_caller_runs_an_event_loop(plugin_manager):
    reward = reward_of("async_length_reward", workers=0)

    async def caller():
        return reward.score(samples_of([["a"], ["bb"]]))

    assert asyncio.run(caller()) == [1.0, 2.0]


def test_an_object_with_an_async_call_is_awaited(plugin_manager):
    reward = reward_of("async_length_orm", workers=0)
    assert reward.score(samples_of([["a", "bb"]])) == [1.0, 2.0]


def test_an_async_function_is_awaited_in_a_worker_process(plugin_manager):
    reward = reward_of("async_length_reward", workers=1)
    samples = [Sample(0, i, f"Q{i}", "x" * (i + 1), info={"extra": {"calls": 1}}) for i in range(2)]
    score_samples(reward, samples, iteration=0)
    assert [sample.reward for sample in samples] == [1.0, 2.0]
    assert framework_functions.CALLS == []  # called in the worker, not here
