"""The ``verifiers`` reward: a reply scored by its task's own ``Task.score``, as verifiers scores a rollout.

Each sample becomes a verifiers ``Trace``: the task's opening messages, then the completion as the one sampled
assistant message (with its finish reason, so ``trace.is_truncated`` holds for a cut-off reply). ``Task.score``
awaits the task's ``@vf.reward`` functions (and plugged judges) concurrently, as it does in a verifiers rollout;
the score is ``trace.reward``, the sum of each reward times its weight. No model client is involved: only a
judge, if the task config plugs one, calls its own endpoint.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Optional

import iterframe

from .source import COLUMN, prompt_messages
from .tasksets import check_scorable, scoring_setup, taskset_of

__all__ = ["VerifiersReward", "reply_trace", "run_coroutine"]


def run_coroutine(coroutine):
    """``coroutine``'s result, run to completion here, or on a fresh thread when this thread already runs an event
    loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def reply_trace(task, completion: str, finish_reason: Optional[str] = None):
    """The trace of ``task`` answered by ``completion`` in one model call that ended for ``finish_reason``
    (``"stop"``, ``"length"`` or unknown)."""
    import verifiers.v1 as vf
    from verifiers.v1.graph import MessageNode
    from verifiers.v1.trace import AgentInfo, ModelCall, TraceTask

    messages = [*prompt_messages(task.data), vf.AssistantMessage(content=completion)]
    last = len(messages) - 1
    nodes = [
        MessageNode(parent=index - 1 if index else None, message=message, sampled=index == last)
        for index, message in enumerate(messages)
    ]
    finish_reason = finish_reason if finish_reason in ("stop", "length") else None
    return vf.Trace(
        task=TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
        agent=AgentInfo(config=vf.AgentConfig()),
        nodes=nodes,
        calls=[ModelCall(node=last, finish_reason=finish_reason)],
        is_completed=True,
        ok=True,
    )


class VerifiersReward(iterframe.PooledReward):
    """Scores a sample of a ``verifiers:TASKSET`` prompt with its task's weighted ``@vf.reward`` functions.

    A prompt's samples are scored in one call and awaited concurrently, as verifiers scores a group of rollouts.
    ``VerifiersReward.for_taskset(taskset)`` scores with a taskset (or single-agent env) built in code instead of
    the one each sample's prompt names.
    """

    name = "verifiers"
    description = (
        "The verifiers task's own weighted @vf.reward functions (and judges) on the reply, no model client "
        "(verifiers: prompts)."
    )

    batching = "prompt"
    _task_type: Any = None
    _task_config: Any = None

    @classmethod
    def for_taskset(cls, source, **options) -> VerifiersReward:
        """This reward for the tasks of ``source`` (a ``vf.Taskset``, a ``vf.SingleAgentEnv`` or a spec);
        ``options`` are its options (``workers``, ``timeout_s``). Worker processes unpickle its task type and
        config, so a task class defined in code must be at the top level of an importable module (or set
        ``workers=0``)."""
        taskset = taskset_of(source)
        reward = cls(cls.Options(**options))
        reward._task_type, reward._task_config = type(taskset).task_type(), taskset.config.task
        return reward

    def __setstate__(self, state: dict[str, Any]) -> None:
        import verifiers.v1  # noqa: F401 - imported here, a worker's start, not within a sample's timeout

        self.__dict__.update(state)

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("_setups", "_checked")}

    def _setup_for(self, column: Any, prompt_id: int) -> tuple[type, Any]:
        if self._task_type is not None:
            return self._task_type, self._task_config
        spec = column.get("taskset")
        if spec is None:
            raise ValueError(
                f"prompt {prompt_id} comes from a taskset built in code; score it with "
                "iterframe_verifiers.VerifiersReward.for_taskset(taskset)."
            )
        setups = self.__dict__.setdefault("_setups", {})
        if spec not in setups:
            setups[spec] = scoring_setup(spec)
        return setups[spec]

    def _task(self, sample: iterframe.Sample):
        column = (sample.info.get("extra") or {}).get(COLUMN)
        if not isinstance(column, dict) or "data" not in column:
            raise ValueError(
                f"the sample of prompt {sample.prompt_id} has no {COLUMN!r} column; the verifiers reward scores "
                "prompts of --dataset verifiers:TASKSET (or rows of iterframe_verifiers.taskset_rows)."
            )
        task_type, task_config = self._setup_for(column, sample.prompt_id)
        task = task_type(task_type.data_type().model_validate(column["data"]), task_config)
        checked = self.__dict__.setdefault("_checked", set())
        if task_type not in checked:
            check_scorable(task)
            checked.add(task_type)
        return task

    async def _score_one(self, sample: iterframe.Sample) -> float:
        task = self._task(sample)
        trace = reply_trace(task, sample.completion, sample.info.get("finish_reason"))
        deadline = task.data.timeout.scoring
        await asyncio.wait_for(task.score(trace), timeout=deadline)
        return trace.reward

    async def _score_all(self, samples: list[iterframe.Sample]) -> list:
        return await asyncio.gather(*(self._score_one(sample) for sample in samples), return_exceptions=True)

    def score(self, samples: list[iterframe.Sample]) -> list:
        """One score per sample (``trace.reward``), or the exception that kept it from being scored."""
        return run_coroutine(self._score_all(samples))
