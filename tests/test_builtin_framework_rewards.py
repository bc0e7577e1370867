"""The ``verl`` and ``openrlhf`` rewards: reward functions written for verl (``compute_score`` per sample, a dict's
``score`` the reward and its other keys the sample's metrics) and OpenRLHF (``reward_func(queries, prompts,
labels)`` on a batch, ``{"rewards", "scores", "extra_logs"}``), called as those frameworks call them, in the run's
process and in the worker pool; a wrong answer fails the sample with an error that names the function."""

from __future__ import annotations

import json

import framework_functions
import pytest
from click.testing import CliRunner

from iterframe.cli import cli
from iterframe.loop.artifacts import read_samples, sample_from_row, write_samples
from iterframe.loop.metrics import eval_metrics, reward_metrics
from iterframe.loop.stages import score_samples
from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext, Sample


@pytest.fixture(autouse=True)
def no_calls():
    framework_functions.CALLS.clear()


def reward_of(kind: str, function: str, tokenizer=None, **options):
    reward = create_component("reward", kind, {"function": f"framework_functions:{function}", **options})
    reward.setup(RunContext(trainer=None, tokenizer=tokenizer))
    return reward


def sample(prompt_id, completion, reference=None, prompt=None, **extra) -> Sample:
    prompt = f"Q{prompt_id}: " if prompt is None else prompt
    return Sample(0, prompt_id, prompt, completion, reference=reference, info={"extra": extra} if extra else {})


# verl


def test_verl_calls_compute_score_per_sample_with_data_source_ground_truth_and_extra_info(plugin_manager):
    reward = reward_of("verl", "verl_exact", workers=0)
    samples = [
        sample(0, "so 19", "19", data_source="openai/gsm8k", extra_info={"index": 3}),
        sample(1, "it is 20", "19"),
    ]
    assert reward.score(samples) == [1.0, 0.0]
    assert framework_functions.CALLS == [
        {"data_source": "openai/gsm8k", "solution_str": "so 19", "ground_truth": "19", "extra_info": {"index": 3}},
        {"data_source": None, "solution_str": "it is 20", "ground_truth": "19", "extra_info": {}},
    ]


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker"])
def test_a_verl_dicts_score_is_the_reward_and_its_other_keys_the_samples_metrics(plugin_manager, workers):
    reward = reward_of("verl", "verl_exact", workers=workers)
    samples = [sample(0, "so 19", "19"), sample(0, "so 20", "19")]
    score_samples(reward, samples, iteration=0)
    assert [s.reward for s in samples] == [1.0, 0.0]
    assert [s.info["reward_metrics"] for s in samples] == [
        {"acc": True, "pred": "19"},
        {"acc": False, "pred": "20"},
    ]


def test_sample_metrics_are_saved_with_the_samples_and_averaged_in_the_metrics(plugin_manager, tmp_path):
    samples = [sample(0, "so 19", "19"), sample(0, "so 20", "19"), sample(1, "so 7", "7")]
    score_samples(reward_of("verl", "verl_exact", workers=0), samples, iteration=0)
    metrics = reward_metrics(samples)
    assert metrics["reward/metrics/acc"] == pytest.approx(2 / 3)  # True counts 1
    assert "reward/metrics/pred" not in metrics  # text is saved, not averaged
    assert eval_metrics(samples)["eval/metrics/acc"] == pytest.approx(2 / 3)
    write_samples(tmp_path / "samples.parquet", samples)
    saved = [sample_from_row(row).info["reward_metrics"] for row in read_samples(tmp_path / "samples.parquet")]
    assert saved == [{"acc": True, "pred": "19"}, {"acc": False, "pred": "20"}, {"acc": True, "pred": "7"}]


def test_a_verl_number_is_the_reward(plugin_manager):
    assert reward_of("verl", "verl_float").score([sample(0, "abc", "x")]) == [3.0]


def test_verls_reward_model_column_gives_the_ground_truth(plugin_manager):
    reward = reward_of("verl", "verl_exact", data_source_column="source")
    samples = [sample(0, "so 7", None, source="math", reward_model={"ground_truth": "7", "style": "rule"})]
    assert reward.score(samples) == [1.0]
    assert framework_functions.CALLS[0]["ground_truth"] == "7"
    assert framework_functions.CALLS[0]["data_source"] == "math"


def test_an_async_verl_function_scores_the_samples_of_a_call_concurrently(plugin_manager):
    reward = reward_of("verl", "verl_async", workers=0)
    samples = [sample(i // 2, "x" * (i + 1), "r", extra_info={"calls": 4}) for i in range(4)]
    assert reward.score(samples) == [1.0, 2.0, 3.0, 4.0]  # each call waited until all four were in flight


@pytest.mark.parametrize(
    ("function", "reference", "message"),
    [
        (
            "verl_no_score",
            "19",
            "verl reward function 'framework_functions:verl_no_score' returned a dict without 'score' (its keys: "
            "acc); verl takes a dict's 'score' as the reward",
        ),
        (
            "verl_exact",
            None,
            "verl reward function 'framework_functions:verl_exact' needs a ground_truth, but the sample of "
            "prompt 0 has no reference answer and no reward_model column",
        ),
    ],
    ids=["dict-without-score", "no-ground-truth"],
)
def test_a_wrong_verl_call_fails_the_sample_naming_the_function(plugin_manager, function, reference, message):
    samples = [sample(0, "so 19", reference)]
    score_samples(reward_of("verl", function, workers=0), samples, iteration=0)
    assert samples[0].dropped_by == "failed-reward:error"
    assert message in samples[0].drop_reason["error"]


# OpenRLHF


class ChatTemplateTokenizer:
    """Renders chat messages as ``<role>content`` lines, then ``<assistant>``."""

    chat_template = "<role>content"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"


def test_openrlhf_gets_the_batchs_queries_prompts_and_labels(plugin_manager):
    reward = reward_of("openrlhf", "openrlhf_exact", workers=0)
    samples = [sample(0, "19", "19"), sample(0, "20", "19"), sample(1, "7", None)]
    scores = reward.score(samples)
    assert framework_functions.CALLS == [  # one call with every sample, as OpenRLHF calls a batch
        {"queries": ["Q0: 19", "Q0: 20", "Q1: 7"], "prompts": ["Q0: ", "Q0: ", "Q1: "], "labels": ["19", "19", ""]}
    ]
    assert scores == [1.5, 0.5, 0.5]  # "rewards", not "scores"


def test_openrlhf_prompts_of_chat_samples_are_rendered_with_the_chat_template(plugin_manager):
    reward = reward_of("openrlhf", "openrlhf_exact", tokenizer=ChatTemplateTokenizer(), workers=0)
    chat = [{"role": "user", "content": "12 + 7?"}]
    assert reward.score([sample(0, "19", "19", prompt=chat)]) == [1.5]
    (call,) = framework_functions.CALLS
    assert call["prompts"] == ["<user>12 + 7?\n<assistant>"]
    assert call["queries"] == ["<user>12 + 7?\n<assistant>19"]


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker"])
def test_openrlhf_scores_and_extra_logs_are_the_samples_metrics(plugin_manager, workers):
    reward = reward_of("openrlhf", "openrlhf_exact", workers=workers)
    samples = [sample(0, "19", "19"), sample(0, "20", "19"), sample(1, "7", "7"), sample(1, "8", "7")]
    score_samples(reward, samples, iteration=0)
    assert [s.reward for s in samples] == [1.5, 0.5, 1.5, 0.5]
    metrics = [s.info["reward_metrics"] for s in samples]
    assert [m["score"] for m in metrics] == [1.0, 0.0, 1.0, 0.0]
    assert [m["query_length"] for m in metrics] == [6.0, 6.0, 5.0, 5.0]
    assert [m["accuracy"] for m in metrics] == [0.5] * 4  # one value for the call: each of its samples holds it


def test_openrlhf_takes_a_bare_list_of_one_element_tensors_as_the_rewards(plugin_manager):
    reward = reward_of("openrlhf", "openrlhf_tensor")
    assert reward.score([sample(0, "ab"), sample(0, "abc")]) == [6.0, 7.0]


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (
            "openrlhf_too_few",
            "openrlhf reward function 'framework_functions:openrlhf_too_few' returned 0 rewards for 1 queries",
        ),
        (
            "openrlhf_no_rewards",
            "openrlhf reward function 'framework_functions:openrlhf_no_rewards' returned a dict without 'rewards' "
            "(its keys: scores)",
        ),
    ],
    ids=["wrong-length", "no-rewards"],
)
def test_a_wrong_openrlhf_answer_fails_the_samples_naming_the_function(plugin_manager, function, message):
    samples = [sample(0, "a"), sample(0, "b")]
    score_samples(reward_of("openrlhf", function, workers=0), samples, iteration=0)  # split down to each sample
    assert [s.dropped_by for s in samples] == ["failed-reward:error"] * 2
    assert all(message in s.drop_reason["error"] for s in samples)


# listed


def test_plugins_all_lists_the_verl_and_openrlhf_rewards_and_show_gives_their_options(plugin_manager):
    listed = json.loads(CliRunner().invoke(cli, ["plugins", "--all", "--json", "--kind", "reward"]).stdout)
    rewards = [item["name"] for entry in listed for item in entry["provides"]["reward"]]
    assert {"verl", "openrlhf"} <= set(rewards)
    shown = {
        name: json.loads(CliRunner().invoke(cli, ["plugins", "show", name, "--json"]).stdout)[0]
        for name in ("verl", "openrlhf")
    }
    options = {name: [option["name"] for option in entry["options"]] for name, entry in shown.items()}
    assert options["verl"][:2] == ["function", "data_source_column"]
    assert options["openrlhf"][0] == "function" and "timeout_s" in options["openrlhf"]
    assert "compute_score(data_source, solution_str, ground_truth" in shown["verl"]["description"]
    assert "reward_func(queries, prompts, labels)" in shown["openrlhf"]["description"]


@pytest.mark.parametrize("kind", ["verl", "openrlhf"])
def test_a_saved_configs_verl_or_openrlhf_function_is_not_imported_without_trust(plugin_manager, kind):
    from iterframe.api.config_code import check_config_code
    from iterframe.run_config import RunConfigError, resolve_run_config

    config = {"model": "m", "output_dir": "out", "dataset": "d.jsonl", "reward": f"{kind}:rewards.py:score"}
    saved = resolve_run_config(config).reward
    with pytest.raises(RunConfigError, match=rf"reward '{kind}': function=rewards.py:score, in the file"):
        check_config_code([saved], [], "out/config.yaml", trusted=False)
    check_config_code([saved], [saved], "out/config.yaml", trusted=False)  # named again: allowed
