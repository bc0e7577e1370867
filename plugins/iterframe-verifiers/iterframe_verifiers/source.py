"""The ``verifiers`` prompt source: a taskset's tasks as prompts, ``--dataset verifiers:TASKSET_ID?OPTION=VALUE``.

Each row's ``prompt`` is the conversation verifiers' chat harness sends: the task's ``system_prompt`` as a system
message, then its prompt (a text prompt as the user's message). ``reference`` is the task's ``answer`` field when
its data has one. The ``verifiers`` column holds the spec and the task's data, from which the ``verifiers`` reward
rebuilds the task to score a reply.
"""

from __future__ import annotations

from typing import Any, Optional

from .tasksets import check_scorable, taskset_of

__all__ = ["COLUMN", "prompt_messages", "taskset_rows"]

#: The column (in each sample's ``info["extra"]``) holding ``{"taskset": spec or None, "data": task data}``.
COLUMN = "verifiers"


def prompt_messages(data) -> list:
    """The task's opening messages (``vf`` message objects): its system prompt, then its prompt."""
    import verifiers.v1 as vf

    prompt = [vf.UserMessage(content=data.prompt)] if isinstance(data.prompt, str) else list(data.prompt or [])
    system = [] if data.system_prompt is None else [vf.SystemMessage(content=data.system_prompt)]
    return system + prompt


def _chat_message(message, task_name: str) -> dict[str, str]:
    import verifiers.v1 as vf
    from verifiers.v1.types import content_text

    content = message.content
    if isinstance(content, list) and any(not isinstance(part, vf.TextContentPart) for part in content):
        raise ValueError(f"task {task_name}'s prompt holds images; iterframe's prompts are text.")
    text = content_text(content) if content is not None else ""
    return {"role": message.role, "content": text}


def _row(task, spec: Optional[str]) -> dict[str, Any]:
    name = task.data.name or f"{type(task).__name__} {task.data.idx}"
    row = {
        "prompt": [_chat_message(message, name) for message in prompt_messages(task.data)],
        COLUMN: {"taskset": spec, "data": task.data.model_dump(mode="json")},
    }
    if "answer" in type(task.data).model_fields:
        row["reference"] = task.data.answer
    return row


def taskset_rows(source) -> list[dict[str, Any]]:
    """The prompt rows of every task of ``source`` (a spec, a ``vf.Taskset`` or a ``vf.SingleAgentEnv``).

    Raises:
        ValueError: the taskset is endless, or a task cannot be scored from a reply (see
            :func:`~iterframe_verifiers.tasksets.check_scorable`), or is not of the taskset's declared task type.
    """
    taskset = taskset_of(source)
    spec = source if isinstance(source, str) else None
    if not taskset.bounded:
        raise ValueError(f"{type(taskset).__name__} yields tasks forever; bound it with select.limit=N.")
    if type(taskset).toolsets(taskset.config):
        raise ValueError(f"{type(taskset).__name__} gives the model tools; iterframe generates one reply without.")
    task_type, checked = type(taskset).task_type(), set()
    rows = []
    for task in taskset:
        if type(task) not in checked:
            if type(task) is not task_type:
                yielded, declared = type(task).__name__, type(taskset).__name__
                raise ValueError(
                    f"{declared} yields {yielded} tasks but declares {task_type.__name__}; declare the task type "
                    f"(class {declared}(vf.Taskset[{yielded}])), which scoring rebuilds each task as."
                )
            check_scorable(task)
            checked.add(type(task))
        rows.append(_row(task, spec))
    if not rows:
        raise ValueError(f"{type(taskset).__name__} yields no tasks.")
    return rows
