"""The ``trl`` reward: TRL GRPO reward functions called the way TRL calls them (prompts, completions,
completion_ids and dataset columns by keyword; ``None`` = failed), in the run's process and in the worker pool."""

from __future__ import annotations

import pytest
import trl_functions
from trl_functions import WordTokenizer, accuracy_reward

from iterframe.builtin.trl_reward import TrlReward
from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext, Sample
from iterframe.plugins.reward_pool import RewardPool, score_outcomes


def sample(prompt, completion, reference=None, **extra) -> Sample:
    return Sample(0, 0, prompt, completion, reference=reference, info={"extra": extra} if extra else {})


def set_up(function: str, tokenizer=None, config=None, **options) -> TrlReward:
    reward = create_component("reward", "trl", {"function": function, **options})
    reward.setup(RunContext(trainer=None, tokenizer=tokenizer, config=config or {}))
    return reward


@pytest.fixture(autouse=True)
def no_calls():
    trl_functions.CALLS.clear()


def test_text_prompts_get_text_completions_token_ids_and_columns(plugin_manager):
    reward = set_up("trl_functions:recording_reward", tokenizer=WordTokenizer())
    scores = reward.score([sample("Q1", "one two three", "3", level=1), sample("Q2", "four", "4", level=2)])
    assert scores == [3.0, 1.0]
    (call,) = trl_functions.CALLS
    assert call["prompts"] == ["Q1", "Q2"] and call["completions"] == ["one two three", "four"]
    assert call["completion_ids"] == [[0, 1, 2], [0]]
    assert call["level"] == [1, 2] and call["reference"] == ["3", "4"]


def test_chat_prompts_get_assistant_message_completions(plugin_manager):
    reward = set_up("trl_functions:recording_reward")
    chat = [{"role": "user", "content": "2+2?"}]
    reward.score([sample(chat, "4")])
    (call,) = trl_functions.CALLS
    assert call["prompts"] == [chat]
    assert call["completions"] == [[{"role": "assistant", "content": "4"}]]
    assert call["completion_ids"] is None  # no tokenizer in this context


def test_the_reference_goes_by_the_dataset_column_it_came_from(plugin_manager):
    reward = set_up("trl_functions:accuracy_reward", config={"dataset": {"reference_column": "solution"}})
    chat = [{"role": "user", "content": "Half of one?"}]
    scores = reward.score([sample(chat, "It is $\\frac{1}{2}$", "0.5"), sample(chat, "It is $3$", "0.5")])
    assert scores == [1.0, 0.0]


def test_accuracy_reward_signature_reads_a_solution_column(plugin_manager):
    reward = set_up("trl_functions:accuracy_reward")
    chat = [{"role": "user", "content": "?"}]
    scores = reward.score([sample(chat, "$\\boxed{\\{1, 2\\}}$", solution="\\{2, 1\\}")])
    assert scores == [1.0]


def test_none_from_the_function_is_a_failed_sample(plugin_manager):
    reward = set_up("trl_functions:accuracy_reward")
    chat = [{"role": "user", "content": "?"}]
    scores = reward.score([sample(chat, "$1$", solution="")])
    (outcome,) = score_outcomes("Reward 'trl'", scores, 1)
    assert outcome.failure == "no-score"


def test_a_function_without_kwargs_gets_only_what_it_names(plugin_manager):
    reward = set_up("trl_functions:difficulty_reward")
    assert reward.score([sample("Q", "A", "r", difficulty=3, other="x")]) == [3.0]


def test_a_column_the_function_needs_but_the_samples_lack_is_named(plugin_manager):
    reward = set_up("trl_functions:solution_only")
    with pytest.raises(ValueError, match=r"takes 'solution', but the samples have no such dataset column.*level"):
        reward.score([sample("Q", "A", level=1)])


def test_trl_functions_score_in_the_worker_pool_with_math_verify_signals(plugin_manager):
    reward = set_up("trl_functions:accuracy_reward", workers=1)
    pool = RewardPool(reward, "Reward 'trl'")
    chat = [{"role": "user", "content": "?"}]
    try:
        outcomes = pool.score(
            [
                sample(chat, "So $x = \\frac{6}{4}$", solution="\\frac{3}{2}"),
                sample(chat, "$\\boxed{7}$", solution="8"),
                sample(chat, "$1$", solution=""),
            ]
        )
    finally:
        pool.close()
    assert [outcome.score for outcome in outcomes[:2]] == [1.0, 0.0]
    assert outcomes[2].failure == "no-score"


def test_a_function_passed_in_code_is_the_python_api_form(plugin_manager):
    reward = TrlReward.from_function(accuracy_reward, workers=1)
    assert reward.options.function == "trl_functions:accuracy_reward"
    reward.setup(RunContext(trainer=None, tokenizer=None))
    pool = RewardPool(reward, "Reward 'trl'")
    try:
        (outcome,) = pool.score([sample([{"role": "user", "content": "?"}], "$0.25$", solution="\\frac{1}{4}")])
    finally:
        pool.close()
    assert outcome.score == 1.0


def test_iterframe_run_scores_with_a_trl_function_and_its_dataset_column(
    tiny_llama_path, arithmetic_path, tmp_path
):
    import json

    from click.testing import CliRunner

    from iterframe.cli import cli
    from iterframe.loop.artifacts import read_metrics, read_samples, samples_path

    output_dir = tmp_path / "out"
    args = ["run", "--model", tiny_llama_path, "--dataset", arithmetic_path]
    args += ["--reward", "trl:trl_functions:answer_column_reward", "--set", "generator.max_new_tokens=2"]
    args += ["--iterations", "1", "--prompts-per-iteration", "2", "--samples-per-prompt", "2"]
    args += ["--output-dir", str(output_dir), "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (row,) = read_metrics(output_dir / "metrics.jsonl")
    assert row["num_generated"] == 4 and row["reward/num_failed"] == 0
    samples = read_samples(samples_path(output_dir, 0))
    answers = [str(json.loads(sample["info"])["extra"]["answer"]) for sample in samples]
    assert [sample["reward"] for sample in samples] == [
        float(answer in sample["completion"]) for answer, sample in zip(answers, samples)
    ]
    assert len(set(answers)) == 2  # each prompt's own column value reached the function


def group(prompt_id: int, *completions: str, solution: str = "7") -> list[Sample]:
    return [
        Sample(0, prompt_id, f"prompt {prompt_id}", text, info={"extra": {"solution": solution}})
        for text in completions
    ]


@pytest.mark.parametrize(
    ("workers", "expected"),
    [(2, [0.5, -0.5, 0.0, 0.5, -0.5]), (0, [0.25, -0.25, 0.0, 0.5, -0.5])],  # with workers=0: one call for all
)
def test_a_reward_comparing_completions_sees_its_prompts_group(plugin_manager, workers, expected):
    reward = set_up("trl_functions:len_reward", workers=workers)
    pool = RewardPool(reward, "Reward 'trl'")
    try:
        outcomes = pool.score(
            group(0, "so 7", "so it is 7", "it is 7") + group(1, "4", "the answer: 4", solution="4")
        )
    finally:
        pool.close()
    assert [outcome.score for outcome in outcomes] == expected


@pytest.mark.parametrize(("workers", "sizes"), [(0, [5.0] * 5), (2, [3.0, 3.0, 3.0, 2.0, 2.0])])
def test_workers_zero_calls_once_with_every_sample_a_pool_once_per_prompt(plugin_manager, workers, sizes):
    reward = set_up("trl_functions:batch_size_reward", workers=workers)
    pool = RewardPool(reward, "Reward 'trl'")
    try:
        outcomes = pool.score(group(0, "a", "b", "c") + group(1, "d", "e"))
    finally:
        pool.close()
    assert [outcome.score for outcome in outcomes] == sizes


@pytest.mark.parametrize("workers", [0, 1])
def test_a_batch_that_raises_is_split_until_the_failing_sample_fails_alone(plugin_manager, workers):
    reward = set_up("trl_functions:scripted_batch_reward", workers=workers)
    pool = RewardPool(reward, "Reward 'trl'")
    try:
        outcomes = pool.score(group(0, "a", "bb", "boom", "dddd") + group(1, "eeeee"))
    finally:
        pool.close()
    assert [outcome.score for outcome in outcomes] == [1.0, 2.0, None, 4.0, 5.0]
    assert outcomes[2].failure == "error" and "cannot score 'boom'" in outcomes[2].message


def test_a_batch_that_times_out_fails_its_samples_and_the_others_are_scored(plugin_manager):
    reward = set_up("trl_functions:scripted_batch_reward", workers=1, timeout_s=0.5)
    pool = RewardPool(reward, "Reward 'trl'")
    try:
        outcomes = pool.score(group(0, "a", "hang") + group(1, "ccc"))
    finally:
        pool.close()
    assert [outcome.failure for outcome in outcomes] == ["timeout", "timeout", None]
    assert "batch of 2 samples took longer than 2 x timeout_s=0.5 s" in outcomes[0].message
    assert outcomes[2].score == 3.0
