"""Reward functions in the shapes other frameworks call: TRL's ``async def`` functions, verl's ``compute_score``
and OpenRLHF's ``reward_func``. Each records its calls in ``CALLS`` (in the process that calls it)."""

from __future__ import annotations

import asyncio

CALLS: list[dict] = []
_RENDEZVOUS: dict[int, dict] = {}


async def _meet(expected: int) -> None:
    """Return once ``expected`` calls in this event loop have arrived; a call left waiting alone for 5 s (the calls
    awaited one after the other) raises ``TimeoutError``."""
    state = _RENDEZVOUS.setdefault(id(asyncio.get_running_loop()), {"arrived": 0, "all_here": asyncio.Event()})
    state["arrived"] += 1
    if state["arrived"] >= expected:
        state["all_here"].set()
    await asyncio.wait_for(state["all_here"].wait(), timeout=5)


async def async_length_reward(prompts, completions, calls, **kwargs):
    """TRL style, async: the completions' lengths, once ``calls[0]`` calls are in flight together."""
    CALLS.append({"prompts": prompts, "completions": completions})
    await _meet(calls[0])
    return [float(len(completion)) for completion in completions]


class AsyncLengthOrm:
    """An object whose ``__call__`` is async (an ms-swift style ORM)."""

    async def __call__(self, completions, **kwargs):
        await asyncio.sleep(0)
        return [float(len(completion)) for completion in completions]


async_length_orm = AsyncLengthOrm()


def verl_exact(data_source, solution_str, ground_truth, extra_info=None):
    """verl style: 1.0 when the completion ends with the ground truth, with what it compared as metrics."""
    CALLS.append(
        {
            "data_source": data_source,
            "solution_str": solution_str,
            "ground_truth": ground_truth,
            "extra_info": extra_info,
        }
    )
    predicted = solution_str.strip().split()[-1] if solution_str.strip() else ""
    correct = predicted == str(ground_truth)
    return {"score": float(correct), "acc": correct, "pred": predicted}


def verl_float(data_source, solution_str, ground_truth, extra_info=None):
    """verl style, a plain number: the completion's length."""
    return len(solution_str)


async def verl_async(data_source, solution_str, ground_truth, extra_info=None):
    """verl style, async: the completion's length, once ``extra_info["calls"]`` calls are in flight together."""
    await _meet(extra_info["calls"])
    return {"score": float(len(solution_str))}


def verl_no_score(data_source, solution_str, ground_truth, extra_info=None):
    """A dict without ``score``: wrong."""
    return {"acc": 1.0}


def openrlhf_exact(queries, prompts, labels):
    """OpenRLHF style (examples/python/math_reward_func.py): the response is the query after its prompt; rewards,
    scores and extra_logs as tensors, extra_logs' accuracy one value for the batch."""
    import torch

    CALLS.append({"queries": queries, "prompts": prompts, "labels": labels})
    rewards = []
    for query, prompt, label in zip(queries, prompts, labels):
        response = query[len(prompt) :] if query.startswith(prompt) else query
        rewards.append(1.0 if response.strip() == label else 0.0)
    rewards = torch.tensor(rewards)
    lengths = torch.tensor([float(len(query)) for query in queries])
    return {
        "rewards": rewards + 0.5,
        "scores": rewards,
        "extra_logs": {"accuracy": rewards.mean(), "query_length": lengths},
    }


def openrlhf_tensor(queries, prompts, labels):
    """Older OpenRLHF style: a bare tensor of rewards, one ``tensor([r])`` per query."""
    import torch

    return [torch.tensor([float(len(query))]) for query in queries]


def openrlhf_too_few(queries, prompts, labels):
    """One reward short."""
    return {"rewards": [1.0] * (len(queries) - 1)}


def openrlhf_no_rewards(queries, prompts, labels):
    """A dict without ``rewards``: wrong."""
    return {"scores": [1.0] * len(queries)}
