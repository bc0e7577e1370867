"""The ``reasoning-gym`` prompt source: ``reasoning-gym:TASK?size=N&seed=S&OPTION=VALUE...``.

``TASK`` is a reasoning-gym dataset name (``chain_sum``, ``basic_arithmetic``, ...). ``size`` (default 500) and
``seed`` (default 0, so a resumed run sees the same prompts) and every other ``OPTION`` go to the task's config
(values are read as JSON where they parse: ``3``, ``0.5``, ``true``, ``[1, 2]``; else as text).
``system_prompt=NAME`` (one of reasoning-gym's ``SYSTEM_PROMPTS``, e.g. ``default``) makes chat prompts: that
system message, then the question as the user's.

Each row holds the question as ``prompt``, the task's answer as ``reference`` and reasoning-gym's ``metadata``
(with ``source_dataset``), which the ``reasoning-gym`` reward needs to score.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

__all__ = ["DEFAULT_SEED", "DEFAULT_SIZE", "load_reasoning_gym", "parse_spec"]

DEFAULT_SIZE = 500
DEFAULT_SEED = 0


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``("chain_sum", {"size": 200, "seed": 1})`` for ``"chain_sum?size=200&seed=1"``."""
    task, _, query = spec.partition("?")
    task = task.strip()
    if not task:
        raise ValueError("name a reasoning-gym task, as in reasoning-gym:chain_sum?size=200&seed=1")
    options: dict[str, Any] = {"size": DEFAULT_SIZE, "seed": DEFAULT_SEED}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        options[key.strip()] = _value(value)
    return task, options


def load_reasoning_gym(spec: str) -> list[dict[str, Any]]:
    """The rows of ``reasoning-gym:SPEC`` (see the module docstring)."""
    import reasoning_gym
    from reasoning_gym.factory import DATASETS
    from reasoning_gym.utils import SYSTEM_PROMPTS

    from iterframe.plugins.options import did_you_mean

    task, options = parse_spec(spec)
    system_prompt = options.pop("system_prompt", None)
    if task not in DATASETS:
        raise ValueError(
            f"reasoning-gym has no task {task!r}.{did_you_mean(task, DATASETS)} "
            f"Tasks: {', '.join(sorted(DATASETS))}."
        )
    if system_prompt is not None and system_prompt not in SYSTEM_PROMPTS:
        raise ValueError(f"system_prompt={system_prompt!r} is not one of {', '.join(SYSTEM_PROMPTS)}.")
    try:
        dataset = reasoning_gym.create_dataset(task, **options)
    except (TypeError, ValueError, AssertionError) as error:
        raise ValueError(f"task {task!r} does not take {options}: {type(error).__name__}: {error}") from None
    rows = []
    for entry in dataset:
        question = entry["question"]
        prompt: Any = question
        if system_prompt is not None:
            system = {"role": "system", "content": SYSTEM_PROMPTS[system_prompt]}
            prompt = [system, {"role": "user", "content": question}]
        rows.append({"prompt": prompt, "reference": entry["answer"], "metadata": entry["metadata"]})
    return rows
