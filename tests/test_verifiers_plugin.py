"""The separately installed ``iterframe-verifiers`` package, with the real ``verifiers``: a taskset's prompts
(``--dataset verifiers:TASKSET_ID?OPTION=VALUE``) and its own weighted reward functions as the reward, scored from
the reply alone, without a model client. The tasksets are built here (``tests/verifiers_tasksets.py`` and below),
from a ``datasets.Dataset``: no hub, no network.

It must be installed first: ``pip install -e plugins/iterframe-verifiers`` (which installs ``verifiers``).
"""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

pytest.importorskip(
    "verifiers.v1", reason="verifiers is not installed (pip install -e plugins/iterframe-verifiers)"
)

import verifiers.v1 as vf  # noqa: E402
from verifiers_tasksets import PROBLEMS, SYSTEM_PROMPT, SumConfig, SumData, SumTask, SumTaskset  # noqa: E402

from iterframe.loop.datasets import DatasetSettings, PromptSetError, load_prompt_sets  # noqa: E402
from iterframe.plugins import create_component, reset_plugin_manager  # noqa: E402
from iterframe.plugins.components import RunContext, Sample  # noqa: E402
from iterframe.plugins.reward_pool import RewardPool  # noqa: E402

DISTRIBUTION = "iterframe-verifiers"
SPEC = "verifiers:verifiers_tasksets"


@pytest.fixture
def plugin_loaded(load_only_plugin):
    load_only_plugin(DISTRIBUTION)


def prompts_of(path: str):
    return load_prompt_sets(DatasetSettings(path=path))[0]


def samples_for(records, completions, finish_reason="stop") -> list[Sample]:
    return [
        Sample(
            0, r.prompt_id, r.prompt, text, reference=r.reference, info={"extra": r.extra, "finish_reason": reason}
        )
        for r, text, reason in zip(records, completions, [finish_reason] * len(completions))
    ]


def rows_as_records(rows):
    from iterframe.loop.config import PromptRecord

    return [
        PromptRecord(
            i,
            row["prompt"],
            row.get("reference"),
            {k: v for k, v in row.items() if k not in ("prompt", "reference")},
        )
        for i, row in enumerate(rows)
    ]


def in_process(reward):
    return reward.with_options(type(reward.options)(workers=0))


def test_the_prompt_source_gives_each_tasks_chat_prompt_and_answer(plugin_loaded):
    records = prompts_of(f"{SPEC}?num_tasks=2")
    assert [record.prompt for record in records] == [
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": f"{question} ="}]
        for question, _ in PROBLEMS[:2]
    ]
    assert [record.reference for record in records] == ["4", "7"]
    assert records[1].extra["verifiers"]["taskset"] == "verifiers_tasksets?num_tasks=2"
    assert records[1].extra["verifiers"]["data"]["answer"] == "7"


def test_select_options_pick_tasks_as_verifiers_select_does(plugin_loaded):
    records = prompts_of(f"{SPEC}?select.skip=1&select.limit=1")
    assert [record.reference for record in records] == ["7"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_taskset_xyz", r"verifiers cannot load taskset 'no_such_taskset_xyz'"),
        ("verifiers_tasksets?num_taskz=2", r"taskset 'verifiers_tasksets' does not take \{'num_taskz': 2\}"),
        ("verifiers_tasksets?select.limit=0", r"select options \{'limit': 0\}"),
        ("?select.limit=2", r"name a verifiers taskset"),
    ],
)
def test_a_bad_spec_names_what_is_wrong(plugin_loaded, spec, message):
    with pytest.raises(PromptSetError, match=r"prompt source 'verifiers' \(plugin 'iterframe-verifiers'\)"):
        prompts_of(f"verifiers:{spec}")
    with pytest.raises(PromptSetError, match=message):
        prompts_of(f"verifiers:{spec}")


def test_the_reward_is_the_weighted_sum_of_the_tasks_reward_functions(plugin_loaded):
    records = prompts_of(SPEC)
    reward = create_component("reward", "verifiers", {"workers": 0})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    # exact (weight 0.75) and mentions (weight 0.25, awaited): both, mentions only, neither
    assert reward.score(samples_for(records, ["4", "It is 7.", "fifteen"])) == [1.0, 0.25, 0.0]


def test_the_reward_scores_in_the_worker_pool(plugin_loaded):
    records = prompts_of(SPEC)
    # A fresh worker's first scoring can take past the default 10 s on a loaded 2-core machine.
    reward = create_component("reward", "verifiers", {"workers": 1, "timeout_s": 120})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    pool = RewardPool(reward, "Reward 'verifiers'")
    try:
        outcomes = pool.score(samples_for(records, ["4", "7 it is", "16"]))
    finally:
        pool.close()
    assert [outcome.score for outcome in outcomes] == [1.0, 0.25, 0.0]


def test_a_taskset_or_env_built_in_code_gives_prompts_and_reward():
    from iterframe_verifiers import VerifiersReward, taskset_rows

    taskset = SumTaskset(SumConfig(num_tasks=2))
    env = vf.load_environment(vf.resolve_env_config({"taskset": {"id": "verifiers_tasksets", "num_tasks": 2}}))
    for source in (taskset, env):
        rows = taskset_rows(source)
        assert [row["reference"] for row in rows] == ["4", "7"] and rows[0]["verifiers"]["taskset"] is None
        reward = in_process(VerifiersReward.for_taskset(source))
        assert reward.score(samples_for(rows_as_records(rows), ["4", "8"])) == [1.0, 0.0]


def test_a_multi_agent_env_is_refused():
    from iterframe_verifiers import taskset_rows

    env = vf.load_environment(
        vf.resolve_env_config({"id": "best_of_n", "taskset": {"id": "verifiers_tasksets", "num_tasks": 1}})
    )
    with pytest.raises(ValueError, match=r"BestOfNEnv is a multi-agent env, whose score\(\) compares"):
        taskset_rows(env)


def test_prompts_of_a_taskset_built_in_code_need_it_to_be_scored(plugin_loaded):
    from iterframe_verifiers import taskset_rows

    records = rows_as_records(taskset_rows(SumTaskset(SumConfig())))
    reward = create_component("reward", "verifiers", {"workers": 0})
    (entry,) = reward.score(samples_for(records[:1], ["4"]))
    assert isinstance(entry, ValueError) and "VerifiersReward.for_taskset(taskset)" in str(entry)


class UndeclaredTaskset(vf.Taskset):
    def load(self):
        yield SumTask(SumData(prompt="2 + 2 =", answer="4"), self.config.task)


def test_a_taskset_that_does_not_declare_its_task_type_is_refused():
    from iterframe_verifiers import taskset_rows

    declare = r"declare the task type \(class UndeclaredTaskset\(vf\.Taskset\[SumTask\]\)\)"
    with pytest.raises(ValueError, match=declare):
        taskset_rows(UndeclaredTaskset(vf.TasksetConfig()))


class CutOffTask(vf.Task[SumData]):
    @vf.reward
    async def finished(self, trace: vf.Trace) -> float:
        return 0.0 if trace.is_truncated else 1.0


class CutOffTaskset(vf.Taskset[CutOffTask]):
    def load(self):
        yield CutOffTask(SumData(prompt="2 + 2 =", answer="4"), self.config.task)


def test_a_cut_off_reply_is_truncated_for_the_tasks_rewards():
    from iterframe_verifiers import VerifiersReward, taskset_rows

    taskset = CutOffTaskset(vf.TasksetConfig())
    records = rows_as_records(taskset_rows(taskset))
    reward = in_process(VerifiersReward.for_taskset(taskset))
    assert reward.score(samples_for(records, ["4"], finish_reason="stop")) == [1.0]
    assert reward.score(samples_for(records, ["4 and"], finish_reason="length")) == [0.0]


class SyncRewardTask(vf.Task[SumData]):
    @vf.reward
    def exact(self, task: SumData, trace: vf.Trace) -> float:
        return float(trace.last_reply == task.answer)

    @vf.reward
    async def mentions(self, task: SumData, trace: vf.Trace) -> float:
        return float(task.answer in trace.last_reply)


class SyncRewardTaskset(vf.Taskset[SyncRewardTask]):
    def load(self):
        yield SyncRewardTask(SumData(prompt="2 + 2 =", answer="4"), self.config.task)


def test_a_sync_reward_function_is_refused_naming_it_as_verifiers_cannot_await_it():
    from iterframe_verifiers import VerifiersReward, reply_trace, taskset_rows

    taskset = SyncRewardTaskset(vf.TasksetConfig())
    task = next(iter(taskset))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # verifiers leaves the async reward's coroutine unawaited
        with pytest.raises(vf.TaskError, match="awaitable is required"):  # verifiers' own scoring fails
            asyncio.run(task.score(reply_trace(task, "4")))
        gc.collect()
    with pytest.raises(ValueError, match=r"@vf\.reward exact is not `async def`") as refused:
        taskset_rows(taskset)
    assert "mentions" not in str(refused.value)
    records = rows_as_records(
        [{"prompt": "2 + 2 =", "verifiers": {"taskset": None, "data": task.data.model_dump()}}]
    )
    (entry,) = in_process(VerifiersReward.for_taskset(taskset)).score(samples_for(records, ["4"]))
    assert isinstance(entry, ValueError) and "exact is not `async def`" in str(entry)


class RuntimeTask(vf.Task[SumData]):
    @vf.reward
    async def tests_pass(self, trace: vf.Trace, runtime: vf.Runtime) -> float:
        return 1.0


class NoPromptTask(vf.Task[SumData]):
    @vf.reward
    async def exact(self, trace: vf.Trace) -> float:
        return 1.0


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (RuntimeTask(SumData(prompt="2 + 2 =", answer="4")), r"@vf\.reward tests_pass needs the runtime"),
        (NoPromptTask(SumData(answer="4")), r"it has no prompt \(the user opens the conversation\)"),
    ],
)
def test_a_task_that_needs_more_than_the_reply_is_refused(task, message):
    from iterframe_verifiers.tasksets import check_scorable

    with pytest.raises(ValueError, match=message):
        check_scorable(task)


class FailingTask(vf.Task[SumData]):
    @vf.reward
    async def exact(self, task: SumData, trace: vf.Trace) -> float:
        if trace.last_reply == "slow":
            await asyncio.sleep(30)
        if trace.last_reply == "boom":
            raise ArithmeticError("cannot parse the reply")
        return float(trace.last_reply == task.answer)


class FailingTaskset(vf.Taskset[FailingTask]):
    def load(self):
        yield FailingTask(SumData(prompt="2 + 2 =", answer="4", timeout={"scoring": 0.2}), self.config.task)


def test_a_reward_function_that_raises_or_passes_the_tasks_scoring_timeout_fails_its_sample_alone():
    from iterframe_verifiers import VerifiersReward, taskset_rows

    taskset = FailingTaskset(vf.TasksetConfig())
    records = rows_as_records(taskset_rows(taskset)) * 3
    raised, timed_out, scored = in_process(VerifiersReward.for_taskset(taskset)).score(
        samples_for(records, ["boom", "slow", "4"])
    )
    assert isinstance(raised, vf.TaskError) and "ArithmeticError: cannot parse the reply" in str(raised)
    assert isinstance(timed_out, TimeoutError)
    assert scored == 1.0


def test_the_reward_scores_inside_a_running_event_loop_as_in_a_notebook(plugin_loaded):
    records = prompts_of(SPEC)
    reward = create_component("reward", "verifiers", {"workers": 0})

    async def notebook_cell():
        return reward.score(samples_for(records[:1], ["4"]))

    assert asyncio.run(notebook_cell()) == [1.0]


def test_blocked_by_the_allow_list(monkeypatch):
    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", "")
    reset_plugin_manager()
    try:
        with pytest.raises(PromptSetError, match="verifiers:verifiers_tasksets"):
            prompts_of(SPEC)
    finally:
        reset_plugin_manager()
