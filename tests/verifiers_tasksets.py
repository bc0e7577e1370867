"""A tiny verifiers taskset for ``tests/test_verifiers_plugin.py``, importable by id (``verifiers_tasksets``) and
by worker processes: sums from a ``datasets.Dataset`` built here, scored by two weighted async rewards and a
metric. Importing it needs ``verifiers``."""

from __future__ import annotations

import asyncio

import verifiers.v1 as vf
from datasets import Dataset

__all__ = ["SumTaskset"]

PROBLEMS = [("2 + 2", "4"), ("3 + 4", "7"), ("10 + 5", "15")]
SYSTEM_PROMPT = "Answer with the number only."


class SumData(vf.TaskData):
    answer: str


class SumTask(vf.Task[SumData]):
    @vf.reward(weight=0.75)
    async def exact(self, task: SumData, trace: vf.Trace) -> float:
        return float(trace.last_reply == task.answer)

    @vf.reward(weight=0.25)
    async def mentions(self, task: SumData, trace: vf.Trace) -> float:
        await asyncio.sleep(0)  # a reward that awaits, as one calling a service does
        return float(task.answer in trace.last_reply)

    @vf.metric
    async def reply_chars(self, trace: vf.Trace) -> float:
        return float(len(trace.last_reply))


class SumConfig(vf.TasksetConfig):
    num_tasks: int = 3


class SumTaskset(vf.Taskset[SumTask, SumConfig]):
    def load(self):
        rows = Dataset.from_list([{"question": q, "answer": a} for q, a in PROBLEMS[: self.config.num_tasks]])
        for row in rows:
            data = SumData(prompt=f"{row['question']} =", answer=row["answer"], system_prompt=SYSTEM_PROMPT)
            yield SumTask(data, self.config.task)
