"""Rewards that cannot hang or silently zero a run: failed samples (timeout, error, no score) are recorded with
their reason, never trained and left out of the reward statistics; too many stop the run; eval counts them
apart."""

from __future__ import annotations

import json
import math

import pytest
from loop_fakes import PromptCompletionTokenizer, ScriptedGenerator, make_loop, make_prompts, make_trainer
from pool_rewards import ScriptedPooledReward

from iterframe.loop import LoopConfig
from iterframe.loop.artifacts import read_metrics, read_samples, samples_path
from iterframe.plugins.errors import ComponentValueError


def script(prompt: str, index: int) -> str:
    """Prompt p0's samples hang, raise, and score 2 and 3; p1's score 2, give no score, and score 3 and 4."""
    return {"p0": ["hang", "boom", "ab", "abc"], "p1": ["ab", "none", "abc", "abcd"]}.get(prompt, ["ok"] * 4)[
        index
    ]


@pytest.fixture(scope="module")
def trainer(tiny_llama_path, tmp_path_factory):
    return make_trainer(tiny_llama_path, str(tmp_path_factory.mktemp("trainer")))


@pytest.fixture(scope="module")
def failing_run(tiny_llama_path, tmp_path_factory, trainer):
    output_dir = tmp_path_factory.mktemp("run") / "out"
    tokenizer = PromptCompletionTokenizer()
    loop = make_loop(
        tiny_llama_path,
        output_dir,
        trainer=trainer,
        generator=ScriptedGenerator(script),
        reward=ScriptedPooledReward(ScriptedPooledReward.Options(timeout_s=1.0, workers=1)),
        tokenizer=tokenizer,
        prompts=make_prompts(2),
        iterations=1,
        prompts_per_iteration=2,
        samples_per_prompt=4,
        shuffle_prompts=False,
    )
    (row,) = loop.run()
    return {"row": row, "output_dir": output_dir, "tokenizer": tokenizer}


def test_failed_samples_are_counted_by_reason(failing_run):
    row = failing_run["row"]
    assert row["reward/num_failed"] == 3
    assert (row["reward/num_failed/timeout"], row["reward/num_failed/error"]) == (1, 1)
    assert row["reward/num_failed/no-score"] == 1


def test_failed_samples_do_not_count_as_zero_in_the_reward_statistics(failing_run):
    row = failing_run["row"]
    assert row["reward/mean"] == pytest.approx((2 + 3 + 2 + 3 + 4) / 5)
    assert row["reward/min"] == 2.0


def test_failed_samples_are_recorded_with_reason_and_error_and_never_trained(failing_run):
    samples = {
        (s["prompt_id"], s["sample_index"]): s for s in read_samples(samples_path(failing_run["output_dir"], 0))
    }
    assert samples[0, 0]["dropped_by"] == "failed-reward:timeout"
    assert samples[0, 1]["dropped_by"] == "failed-reward:error"
    assert samples[1, 1]["dropped_by"] == "failed-reward:no-score"
    assert "timeout_s=1 s" in json.loads(samples[0, 0]["drop_reason"])["error"]
    assert json.loads(samples[0, 1]["drop_reason"])["error"].startswith("RuntimeError: cannot score prompt 0 (at ")
    failed = [samples[0, 0], samples[0, 1], samples[1, 1]]
    assert all(math.isnan(sample["reward"]) and not sample["kept"] for sample in failed)
    assert failing_run["tokenizer"].batches == [5]
    assert failing_run["row"]["num_kept"] == 5


def test_failure_counts_reach_metrics_jsonl(failing_run):
    (written,) = read_metrics(failing_run["output_dir"] / "metrics.jsonl")
    assert written["reward/num_failed/timeout"] == 1 and written["reward/num_failed/error"] == 1


def three_of_four_fail(model_path, output_dir, trainer, **options):
    """A loop whose reward fails on samples 1-3 of each prompt (in the run's process)."""
    return make_loop(
        model_path,
        output_dir,
        trainer=trainer,
        generator=ScriptedGenerator(lambda prompt, index: "boom" if index else "a"),
        reward=ScriptedPooledReward(ScriptedPooledReward.Options(workers=0)),
        samples_per_prompt=4,
        **options,
    )


def test_too_many_failed_samples_stop_the_run_naming_the_reward_and_its_errors(tiny_llama_path, tmp_path, trainer):
    loop = three_of_four_fail(tiny_llama_path, tmp_path / "out", trainer, iterations=2)
    with pytest.raises(ComponentValueError) as caught:
        loop.run()
    message = str(caught.value)
    assert message.startswith("Iteration 0: reward 'scripted-pooled' (")
    assert "failed on 6 of 8 samples (6 error), more than loop.max_failed_rate=0.5" in message
    assert "RuntimeError: cannot score prompt" in message
    assert caught.value.iteration == 0 and caught.value.kind == "reward"
    assert read_metrics(tmp_path / "out" / "metrics.jsonl") == []


def test_max_failed_rate_lets_a_run_train_on_what_was_scored(tiny_llama_path, tmp_path, trainer):
    loop = three_of_four_fail(tiny_llama_path, tmp_path / "out", trainer, iterations=1, max_failed_rate=0.8)
    (row,) = loop.run()
    assert row["reward/num_failed/error"] == 6 and row["num_kept"] == 2


def test_eval_prompts_that_fail_are_reported_as_failed_not_as_zero(tiny_llama_path, tmp_path, trainer):
    eval_script = {"e0": "abc", "e1": "boom", "e2": "a"}
    loop = make_loop(
        tiny_llama_path,
        tmp_path / "out",
        trainer=trainer,
        generator=ScriptedGenerator(lambda prompt, index: eval_script.get(prompt, "ok")),
        reward=ScriptedPooledReward(ScriptedPooledReward.Options(workers=0)),
        eval_prompts=make_prompts(3, "e"),
        iterations=1,
    )
    (row,) = loop.run()
    assert row["eval/reward"] == pytest.approx((3 + 1) / 2)
    assert row["eval/num_prompts"] == 3
    assert row["eval/num_failed"] == 1 and row["eval/num_failed/error"] == 1


@pytest.mark.parametrize("rate", [-0.1, 1.5, True])
def test_max_failed_rate_must_be_a_fraction(rate):
    with pytest.raises(ValueError, match="max_failed_rate must be a fraction between 0 and 1"):
        LoopConfig(output_dir="out", max_failed_rate=rate)
