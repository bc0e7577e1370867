"""Reward functions in the shape TRL's GRPO trainer calls: ``f(prompts, completions, completion_ids, **columns)``.

``accuracy_reward`` has the signature of TRL's own ``accuracy_reward`` (chat completions and a ``solution``
column; ``None`` when the solution cannot be parsed), with a body of its own.
"""

from __future__ import annotations

import re
import time
from typing import Optional

CALLS: list[dict] = []


def accuracy_reward(
    completions: list[list[dict[str, str]]], solution: list[str], **kwargs
) -> list[Optional[float]]:
    """1.0 when the assistant's answer equals the solution (math-verify, with its signal-based timeouts), ``None``
    when the solution holds no answer."""
    from math_verify import parse, verify

    scores: list[Optional[float]] = []
    for completion, answer in zip(completions, solution):
        gold = parse(f"${answer}$")
        if not gold:
            scores.append(None)
            continue
        scores.append(float(verify(gold, parse(completion[0]["content"]))))
    return scores


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 when the text completion puts its answer in ``<answer>...</answer>``."""
    return [1.0 if re.search(r"<answer>.+</answer>", completion) else 0.0 for completion in completions]


def recording_reward(prompts, completions, completion_ids, **columns) -> list[float]:
    """Records what it was called with; scores each completion's number of token ids."""
    CALLS.append({"prompts": prompts, "completions": completions, "completion_ids": completion_ids, **columns})
    return [float(len(ids)) if ids is not None else 0.0 for ids in (completion_ids or [None] * len(completions))]


def difficulty_reward(prompts, completions, difficulty):
    """No ``**kwargs``: takes exactly the columns it names."""
    return [float(level) for level in difficulty]


def solution_only(completions, solution):
    return [1.0 for _ in completions]


class WordTokenizer:
    """A stand-in for a Hugging Face tokenizer: one id per whitespace-separated word."""

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": list(range(len(text.split())))}


def answer_column_reward(prompts, completions, answer, **kwargs) -> list[float]:
    """1.0 when the completion contains the ``answer`` column's value; records the answers it was given."""
    CALLS.append({"answer": list(answer)})
    return [1.0 if str(expected) in completion else 0.0 for completion, expected in zip(completions, answer)]


def len_reward(completions, solution, **kwargs) -> list[float]:
    """open-r1's ``len_reward`` (Kimi 1.5's length penalty), with an exact-match check in place of math-verify: a
    correct completion scores ``0.5 - (length - shortest) / (longest - shortest)`` among the completions of its
    call, a wrong one at most 0; all 0.0 when every completion has the same length."""
    contents = [
        completion[0]["content"] if isinstance(completion, list) else completion for completion in completions
    ]
    correct = [content.strip().endswith(str(answer)) for content, answer in zip(contents, solution)]
    lengths = [len(content) for content in contents]
    shortest, longest = min(lengths), max(lengths)
    if shortest == longest:
        return [0.0] * len(completions)
    rewards = []
    for length, is_correct in zip(lengths, correct):
        value = 0.5 - (length - shortest) / (longest - shortest)
        rewards.append(float(value if is_correct else min(0.0, value)))
    return rewards


def batch_size_reward(completions, **kwargs) -> list[float]:
    """Scores every completion with the number of completions in its call."""
    return [float(len(completions))] * len(completions)


def scripted_batch_reward(completions, **kwargs) -> list[float]:
    """Each completion's length; a batch with ``"hang"`` sleeps for a minute, one with ``"boom"`` raises."""
    if "hang" in completions:
        time.sleep(60)
    if "boom" in completions:
        raise ValueError("cannot score 'boom'")
    return [float(len(completion)) for completion in completions]
