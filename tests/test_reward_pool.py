"""The reward worker pool: one sample per call, in worker processes, each within the reward's ``timeout_s``; a
sample whose scoring raises, hangs or kills its worker fails alone."""

from __future__ import annotations

import math
import os
import signal
import uuid

import pytest
from pool_rewards import AlarmReward, InfoReward, ScriptedPooledReward, UnpicklableReward, started, survivors

from iterframe.loop.stages import score_samples
from iterframe.plugins.components import RunContext, Sample
from iterframe.plugins.reward_pool import RewardPool, ScoreOutcome, checked_scores, score_outcomes, scorer_for


def samples_of(*completions: str) -> list[Sample]:
    return [
        Sample(iteration=0, prompt_id=index, prompt="p", completion=text) for index, text in enumerate(completions)
    ]


@pytest.fixture
def pool_of():
    """``pool_of(reward_class, **options)``: a pool over a set-up reward; every pool is closed after the test."""
    pools = []

    def build(reward_class, **options):
        reward = reward_class(reward_class.Options(**options))
        reward.setup(RunContext(trainer=None, tokenizer=None))
        pool = RewardPool(reward, f"Reward {reward_class.name!r}")
        pools.append(pool)
        return pool

    yield build
    for pool in pools:
        pool.close()


def test_pool_scores_each_sample_in_a_worker_in_order(pool_of):
    pool = pool_of(ScriptedPooledReward, workers=2)
    outcomes = pool.score(samples_of("a", "bb", "ccc", "pid"))
    assert [outcome.score for outcome in outcomes[:3]] == [1.0, 2.0, 3.0]
    assert outcomes[3].score not in (None, float(os.getpid()))  # scored in another process


@pytest.mark.parametrize("workers", [1, 0], ids=["worker", "in-process"])
def test_info_a_reward_records_while_scoring_reaches_the_runs_sample(workers):
    reward = InfoReward(InfoReward.Options(workers=workers))
    samples = samples_of("a", "bbb")
    samples[0].info["generator"] = "hf"
    score_samples(reward, samples, iteration=0)
    assert [sample.reward for sample in samples] == [1.0, 3.0]
    assert [sample.info["length"] for sample in samples] == [1, 3]
    assert samples[0].info["generator"] == "hf"  # what it did not set is kept
    assert (samples[0].info["scored_in"] != os.getpid()) == (workers > 0)


def test_a_sample_that_hangs_times_out_alone_and_the_pool_goes_on(pool_of):
    pool = pool_of(ScriptedPooledReward, workers=1, timeout_s=1.0)
    outcomes = pool.score(samples_of("a", "hang", "bb"))
    assert outcomes[0] == ScoreOutcome(score=1.0)
    assert outcomes[1].failure == "timeout" and "timeout_s=1 s" in outcomes[1].message
    assert outcomes[2] == ScoreOutcome(score=2.0)
    assert [outcome.score for outcome in pool.score(samples_of("cccc"))] == [4.0]


def test_a_sample_that_raises_fails_alone_with_its_error(pool_of):
    pool = pool_of(ScriptedPooledReward, workers=1)
    outcomes = pool.score(samples_of("boom", "a"))
    assert outcomes[0].failure == "error"
    assert outcomes[0].message.startswith("RuntimeError: cannot score prompt 0 (at ")
    assert outcomes[0].message.endswith("pool_rewards.py:47 in score)")
    assert outcomes[1].score == 1.0


def test_a_worker_that_dies_fails_its_sample_and_is_replaced(pool_of):
    pool = pool_of(ScriptedPooledReward, workers=1)
    outcomes = pool.score(samples_of("die", "a"))
    assert outcomes[0].failure == "error" and "exited with code 3" in outcomes[0].message
    assert outcomes[1].score == 1.0


def test_a_worker_that_died_while_idle_is_replaced_before_it_gets_a_sample(pool_of):
    pool = pool_of(ScriptedPooledReward, workers=1)
    assert pool.score(samples_of("a"))[0].score == 1.0
    worker = pool._workers[0].process
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert [outcome.score for outcome in pool.score(samples_of("bb", "ccc"))] == [2.0, 3.0]


def test_each_worker_runs_in_its_own_session(pool_of):
    pool = pool_of(ScriptedPooledReward, workers=2)
    sessions = {outcome.score for outcome in pool.score(samples_of("sid", "sid", "sid", "sid"))}
    assert os.getsid(0) not in sessions and len(sessions) >= 1
    assert sessions <= {float(worker.process.pid) for worker in pool._workers}


def test_a_timed_out_rewards_child_processes_are_killed_with_its_worker(pool_of):
    marker = f"iterframe-test-{uuid.uuid4().hex}"
    pool = pool_of(ScriptedPooledReward, workers=1, timeout_s=1.0)
    outcomes = pool.score(samples_of(f"spawn-and-hang {marker}", "a"))
    assert outcomes[0].failure == "timeout" and outcomes[1].score == 1.0
    assert survivors(marker) == []


def test_closing_the_pool_kills_what_its_rewards_left_running(pool_of):
    marker = f"iterframe-test-{uuid.uuid4().hex}"
    pool = pool_of(ScriptedPooledReward, workers=1)
    assert pool.score(samples_of(f"spawn {marker}"))[0].score == len("spawned")
    assert started(marker)
    pool.close()
    assert survivors(marker) == []


@pytest.mark.parametrize(
    ("completion", "options", "message"),
    [
        ("allocate", {"memory_limit_mb": 512}, "MemoryError"),
        ("open-files", {"open_files_limit": 32}, "Too many open files"),
        ("spin", {"cpu_limit_s": 1, "timeout_s": 60}, "ran past cpu_limit_s=1 CPU seconds per sample (SIGXCPU)"),
    ],
)
def test_a_worker_past_its_limit_fails_its_sample_and_the_pool_goes_on(pool_of, completion, options, message):
    pool = pool_of(ScriptedPooledReward, workers=1, **options)
    outcomes = pool.score(samples_of(completion, "a"))
    assert outcomes[0].failure == "error" and message in outcomes[0].message
    assert outcomes[1].score == 1.0


def test_none_is_a_sample_without_a_score(pool_of):
    pool = pool_of(ScriptedPooledReward, workers=1)
    (outcome,) = pool.score(samples_of("none"))
    assert outcome.failure == "no-score" and "returned None" in outcome.message


def test_a_reward_using_signal_alarm_works_in_the_pool(pool_of):
    pool = pool_of(AlarmReward, workers=1, timeout_s=30.0, alarm_s=1)
    outcomes = pool.score(samples_of("quick", "slow", "quick"))
    assert outcomes[0].score == 1.0 and outcomes[2].score == 1.0
    assert outcomes[1].failure == "timeout"
    assert outcomes[1].message.startswith("TimeoutError: gave up after 1 s (signal.alarm) (at ")


def test_signal_alarm_fails_off_the_main_thread_which_is_why_the_pool_exists():
    import threading

    reward = AlarmReward()
    errors = []
    thread = threading.Thread(target=lambda: errors.append(_score_catching(reward)))
    thread.start()
    thread.join()
    assert isinstance(errors[0], ValueError) and "main thread" in str(errors[0])


def _score_catching(reward):
    try:
        reward.score(samples_of("quick"))
    except ValueError as error:
        return error
    return None


def test_workers_zero_scores_in_this_process_one_sample_at_a_time(pool_of):
    pool = pool_of(ScriptedPooledReward, workers=0)
    outcomes = pool.score(samples_of("pid", "boom", "none"))
    assert outcomes[0].score == float(os.getpid())
    assert outcomes[1].failure == "error" and outcomes[2].failure == "no-score"


def test_a_reward_that_cannot_be_pickled_is_refused_with_what_to_do(pool_of):
    pool = pool_of(UnpicklableReward, workers=1)
    with pytest.raises(TypeError, match=r"Reward 'unpicklable' cannot be sent to its worker processes.*workers=0"):
        pool.start()


def test_only_pooled_rewards_get_a_pool_the_others_score_the_whole_batch():
    from loop_fakes import TableReward

    batch_scorer = scorer_for(TableReward({"a": 2.0}))
    assert not isinstance(batch_scorer, RewardPool)
    assert [outcome.score for outcome in batch_scorer.score(samples_of("a", "b"))] == [2.0, 0.0]
    assert isinstance(scorer_for(ScriptedPooledReward()), RewardPool)


def test_pool_options_are_checked():
    with pytest.raises(ValueError, match="timeout_s must be a number of seconds > 0"):
        ScriptedPooledReward.Options(timeout_s=0)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        ScriptedPooledReward.Options(workers=-1)
    with pytest.raises(ValueError, match="memory_limit_mb must be a number > 0, or None for no limit; got 0"):
        ScriptedPooledReward.Options(memory_limit_mb=0)


def test_a_batch_reward_reports_failures_as_none_nan_or_exceptions():
    outcomes = score_outcomes(
        "Reward 'r'", [1, None, math.nan, TimeoutError("slow server"), OSError("refused")], 5
    )
    assert outcomes[0] == ScoreOutcome(score=1.0)
    assert [outcome.failure for outcome in outcomes[1:]] == ["no-score", "no-score", "timeout", "error"]
    assert outcomes[3].message == "TimeoutError: slow server" and outcomes[4].message == "OSError: refused"


@pytest.mark.parametrize(
    ("scores", "error", "message"),
    [
        ({"a": 1}, TypeError, "returned a dict; it must return a list of 2 numbers"),
        ([1.0], ValueError, "returned 1 scores for 2 samples"),
        ([1.0, "high"], TypeError, "returned 'high' for sample 1; scores must be numbers"),
    ],
)
def test_a_reward_answer_of_the_wrong_shape_is_an_error(scores, error, message):
    with pytest.raises(error, match=message):
        checked_scores("Reward 'r'", scores, 2)
