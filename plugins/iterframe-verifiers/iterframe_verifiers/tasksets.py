"""Which verifiers taskset a run uses, and whether its tasks can be scored from a reply alone.

A taskset is named by a spec, ``TASKSET_ID?OPTION=VALUE&...``: ``TASKSET_ID`` is an installed taskset package (as
``vf.load_taskset`` imports it), each ``OPTION`` a field of its config (dotted for nested fields:
``task.rewards.exact.weight=2``) and ``select.*`` options pick its tasks as ``Taskset.select`` does
(``select.limit=100``, ``select.shuffle=true&select.seed=1``). Values are read as JSON where they parse (``3``,
``0.5``, ``true``), else as text. A taskset object built in code (or a single-agent env holding one) is used as is.
"""

from __future__ import annotations

import inspect
import json
import urllib.parse
from typing import Any

__all__ = ["check_scorable", "load_taskset", "parse_spec", "scoring_setup", "taskset_of"]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _nest(options: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        options = options.setdefault(part, {})
        if not isinstance(options, dict):
            raise ValueError(f"option {dotted!r} sets a field inside {part!r}, which is given a value too")
    options[leaf] = value


def parse_spec(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(taskset_id, config_options, select_options)`` of ``"ID?num_tasks=5&select.limit=2"``."""
    taskset_id, _, query = spec.partition("?")
    taskset_id = taskset_id.strip()
    if not taskset_id:
        raise ValueError("name a verifiers taskset, as in verifiers:TASKSET_ID?select.limit=100")
    options: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ValueError(f"option {key!r} of {spec!r} is not a (dotted) field name")
        _nest(options, key, _value(value))
    if "id" in options:
        raise ValueError(f"the taskset id is the part before '?', not an option: {taskset_id}?...")
    select = options.pop("select", {})
    if not isinstance(select, dict):
        raise ValueError("select is a group of options: select.limit=N, select.shuffle=true, select.seed=S, ...")
    return taskset_id, options, select


def _config(taskset_id: str, options: dict[str, Any]):
    """The taskset's validated config (its own config class, as ``vf.taskset_config_type`` resolves it)."""
    import pydantic
    import verifiers.v1 as vf

    try:
        config_type = vf.taskset_config_type(taskset_id)
    except (ImportError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"verifiers cannot load taskset {taskset_id!r}: {error}") from None
    try:
        return config_type.model_validate({**options, "id": taskset_id})
    except pydantic.ValidationError as error:
        raise ValueError(f"taskset {taskset_id!r} does not take {options}: {error}") from None


def _check_single_agent(taskset_id: str) -> None:
    import verifiers.v1 as vf

    env_class = vf.environment_class(taskset_id)
    if not issubclass(env_class, vf.SingleAgentEnv):
        raise ValueError(
            f"taskset {taskset_id!r} comes with the multi-agent env {env_class.__name__}, whose score() compares "
            "the agents' traces; iterframe scores one reply at a time, so it serves single-agent tasksets only."
        )


def load_taskset(spec: str):
    """The taskset ``spec`` names, its ``select.*`` options applied (see the module docstring)."""
    import pydantic
    import verifiers.v1 as vf

    taskset_id, options, select = parse_spec(spec)
    config = _config(taskset_id, options)
    _check_single_agent(taskset_id)
    taskset = vf.load_taskset(config)
    if select:
        try:
            taskset = taskset.select(vf.SelectConfig.model_validate(select))
        except (pydantic.ValidationError, ValueError) as error:
            raise ValueError(f"select options {select} of taskset {taskset_id!r}: {error}") from None
    return taskset


def taskset_of(source):
    """The taskset of ``source``: a spec (see :func:`load_taskset`), a ``vf.Taskset``, or a ``vf.SingleAgentEnv``
    (its taskset)."""
    import verifiers.v1 as vf

    if isinstance(source, str):
        return load_taskset(source)
    if isinstance(source, vf.Taskset):
        return source
    if isinstance(source, vf.SingleAgentEnv):
        return source.taskset
    if isinstance(source, vf.Env):
        raise ValueError(
            f"{type(source).__name__} is a multi-agent env, whose score() compares the agents' traces; iterframe "
            "scores one reply at a time: pass a single-agent env or its taskset."
        )
    raise TypeError(
        f"expected a verifiers taskset spec, vf.Taskset or vf.SingleAgentEnv, got {type(source).__name__}"
    )


def scoring_setup(spec: str) -> tuple[type, Any]:
    """``(task_type, task_config)`` of the taskset ``spec`` names, without loading its tasks: what scoring a
    reply to one of them needs."""
    import verifiers.v1 as vf

    taskset_id, options, _ = parse_spec(spec)
    config = _config(taskset_id, options)
    return vf.task_type(taskset_id), config.task


def _needs_runtime(fn) -> bool:
    parameter = inspect.signature(fn).parameters.get("runtime")
    return parameter is not None and parameter.default is inspect.Parameter.empty


def _is_async(fn) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(inspect.unwrap(fn))


def check_scorable(task) -> None:
    """Raise ``ValueError`` naming what keeps ``task`` from being scored from one reply: no prompt (the user
    opens the conversation), tools, a ``@vf.reward`` or ``@vf.metric`` function that needs the runtime the agent
    ran in, or one that is not ``async def`` (``Task.score`` awaits them all)."""
    problems = []
    if task.data.prompt is None:
        problems.append("it has no prompt (the user opens the conversation)")
    if type(task).toolsets(task.config):
        problems.append("it gives the model tools, and iterframe generates one reply without tools")
    for kind in ("reward", "metric"):
        for fn in task.hooks(kind):
            if _needs_runtime(fn):
                problems.append(
                    f"@vf.{kind} {fn.__name__} needs the runtime the agent ran in (its `runtime` parameter has no "
                    "default), and iterframe scores the reply alone"
                )
            elif not _is_async(fn):
                problems.append(f"@vf.{kind} {fn.__name__} is not `async def` (verifiers awaits every one)")
    for judge in task.plugged_judges():
        if _needs_runtime(judge.score):
            problems.append(f"judge {judge.reward_name} needs the runtime the agent ran in")
    if problems:
        raise ValueError(f"task {type(task).__name__} cannot be scored from a reply: " + "; ".join(problems) + ".")
