"""``trl:package.module:function`` (and ``python:...``) names a function reward in one word: in YAML, as a flag,
with ``--set`` and in ``iterframe.run(..., reward=...)``; objects passed in code are saved as what they are."""

from __future__ import annotations

import pytest

from iterframe.run_config import RunConfigError, apply_flags, apply_overrides, resolve_run_config

BASE = {"model": "some/model", "output_dir": "out", "dataset": "prompts.jsonl"}


def resolve(config=None, overrides=(), **flags):
    return resolve_run_config(apply_overrides(apply_flags(dict(BASE, **(config or {})), **flags), list(overrides)))


@pytest.mark.parametrize(
    "how",
    [
        {"config": {"reward": "trl:trl_functions:format_reward"}},
        {"reward": "trl:trl_functions:format_reward"},
        {"overrides": ["reward=trl:trl_functions:format_reward"]},
        {"config": {"reward": {"name": "trl:trl_functions:format_reward", "timeout_s": 30}}},
    ],
    ids=["yaml", "flag", "set", "with-options"],
)
def test_trl_shorthand_is_the_trl_reward_with_its_function(plugin_manager, how):
    reward = resolve(**how).reward
    assert reward.name == "trl"
    assert reward.options["function"] == "trl_functions:format_reward"


@pytest.mark.parametrize(
    ("shorthand", "name", "function"),
    [
        ("verl:my_rewards:compute_score", "verl", "my_rewards:compute_score"),
        ("verl:rewards/gsm8k.py:compute_score", "verl", "rewards/gsm8k.py:compute_score"),
        ("openrlhf:my_rewards:reward_func", "openrlhf", "my_rewards:reward_func"),
    ],
)
def test_verl_and_openrlhf_shorthands_are_their_rewards_with_the_function(
    plugin_manager, shorthand, name, function
):
    reward = resolve({"reward": shorthand}).reward
    assert (reward.name, reward.options["function"]) == (name, function)


def test_the_shorthand_keeps_other_options(plugin_manager):
    reward = resolve({"reward": {"name": "trl:trl_functions:format_reward", "timeout_s": 30}}).reward
    assert reward.options["timeout_s"] == 30.0


def test_python_shorthand_is_the_python_reward(plugin_manager):
    reward = resolve({"reward": "python:my_rewards:score"}).reward
    assert (reward.name, reward.options["function"]) == ("python", "my_rewards:score")


def test_the_resolved_config_saves_the_long_form(plugin_manager):
    saved = resolve({"reward": "trl:trl_functions:format_reward"}).to_config()["reward"]
    assert saved["name"] == "trl" and saved["options"]["function"] == "trl_functions:format_reward"
    assert resolve({"reward": saved}).reward.options["function"] == "trl_functions:format_reward"


def test_a_shorthand_without_a_function_is_refused(plugin_manager):
    with pytest.raises(RunConfigError, match=r"'trl:' names no function; write trl:package.module:function"):
        resolve({"reward": "trl:"})


def test_two_different_functions_are_refused(plugin_manager):
    config = {"reward": {"name": "trl:trl_functions:format_reward", "function": "trl_functions:solution_only"}}
    with pytest.raises(RunConfigError, match="names the function 'trl_functions:format_reward', but its options"):
        resolve(config)


def test_a_trl_reward_passed_in_code_is_saved_as_the_trl_reward(plugin_manager):
    from trl_functions import accuracy_reward

    import iterframe

    reward = iterframe.TrlReward.from_function(accuracy_reward)
    saved = resolve(reward=reward).to_config()["reward"]
    assert saved["name"] == "trl" and saved["options"]["function"] == "trl_functions:accuracy_reward"
