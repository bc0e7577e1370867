"""The separately installed ``iterframe-reasoning-gym`` package, with the real reasoning-gym: its prompt source
(``--dataset reasoning-gym:TASK?size=N&seed=S``) and its reward (the task's own ``score_answer``).

It must be installed first: ``pip install -e plugins/iterframe-reasoning-gym``.
"""

from __future__ import annotations

import pytest

from iterframe.loop.datasets import DatasetSettings, PromptSetError, load_prompt_sets
from iterframe.plugins import create_component, reset_plugin_manager
from iterframe.plugins.components import RunContext, Sample
from iterframe.plugins.reward_pool import RewardPool

DISTRIBUTION = "iterframe-reasoning-gym"
pytest.importorskip("reasoning_gym")


@pytest.fixture
def plugin_loaded(load_only_plugin):
    load_only_plugin(DISTRIBUTION)


def prompts_of(path: str, **settings):
    return load_prompt_sets(DatasetSettings(path=path, **settings))


def samples_for(records, completions) -> list[Sample]:
    return [
        Sample(0, r.prompt_id, r.prompt, completion, reference=r.reference, info={"extra": r.extra})
        for r, completion in zip(records, completions)
    ]


def test_the_prompt_source_generates_the_tasks_questions_and_answers(plugin_loaded):
    import reasoning_gym

    train, eval_prompts = prompts_of("reasoning-gym:chain_sum?size=12&seed=1")
    expected = list(reasoning_gym.create_dataset("chain_sum", size=12, seed=1))
    assert eval_prompts is None
    assert [record.prompt for record in train] == [entry["question"] for entry in expected]
    assert [record.reference for record in train] == [entry["answer"] for entry in expected]
    assert train[0].extra["metadata"]["source_dataset"] == "chain_sum"


def test_the_same_spec_gives_the_same_prompts_and_seed_defaults_to_0(plugin_loaded):
    first, _ = prompts_of("reasoning-gym:chain_sum?size=5")
    again, _ = prompts_of("reasoning-gym:chain_sum?size=5&seed=0")
    other, _ = prompts_of("reasoning-gym:chain_sum?size=5&seed=7")
    assert [r.prompt for r in first] == [r.prompt for r in again] != [r.prompt for r in other]


def test_task_options_and_system_prompt(plugin_loaded):
    from reasoning_gym.utils import SYSTEM_PROMPTS

    train, held_out = prompts_of(
        "reasoning-gym:chain_sum?size=10&seed=2&min_terms=2&max_terms=2&system_prompt=default", eval_fraction=0.2
    )
    assert len(train) == 8 and len(held_out) == 2
    record = train[0]
    assert record.prompt[0] == {"role": "system", "content": SYSTEM_PROMPTS["default"]}
    assert record.prompt[1]["role"] == "user" and record.extra["metadata"]["num_terms"] == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("chain_summ?size=3", r"reasoning-gym has no task 'chain_summ'\. Did you mean 'chain_sum'\?"),
        ("chain_sum?size=3&system_prompt=chatty", r"system_prompt='chatty' is not one of"),
        ("chain_sum?size=3&no_such_option=1", r"task 'chain_sum' does not take"),
        ("?size=3", r"name a reasoning-gym task"),
    ],
)
def test_a_bad_spec_names_what_is_wrong(plugin_loaded, spec, message):
    source = r"prompt source 'reasoning-gym' \(plugin 'iterframe-reasoning-gym'\)"
    with pytest.raises(PromptSetError, match=source):
        prompts_of(f"reasoning-gym:{spec}")
    with pytest.raises(PromptSetError, match=message):
        prompts_of(f"reasoning-gym:{spec}")


def test_the_reward_scores_with_the_tasks_own_verifier(plugin_loaded):
    records, _ = prompts_of("reasoning-gym:chain_sum?size=4&seed=3")
    right = [record.reference for record in records]
    completions = [right[0], f"Let me add. <answer>{right[1]}</answer>", "<answer>nonsense</answer>", "12345678"]
    reward = create_component("reward", "reasoning-gym", {"workers": 0})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    assert reward.score(samples_for(records, completions)) == [1.0, 1.0, 0.0, 0.0]


def test_the_reward_scores_in_the_worker_pool(plugin_loaded):
    records, _ = prompts_of("reasoning-gym:basic_arithmetic?size=3&seed=4")
    reward = create_component("reward", "reasoning-gym", {"workers": 1})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    pool = RewardPool(reward, "Reward 'reasoning-gym'")
    try:
        outcomes = pool.score(samples_for(records, [r.reference for r in records[:2]] + ["no idea"]))
    finally:
        pool.close()
    assert [outcome.score for outcome in outcomes] == [1.0, 1.0, 0.0]


def test_the_reward_refuses_prompts_from_elsewhere(plugin_loaded):
    reward = create_component("reward", "reasoning-gym", {"workers": 0})
    with pytest.raises(ValueError, match="has no reasoning-gym metadata"):
        reward.score([Sample(0, 0, "2+2=", "4", reference="4")])


def test_blocked_by_the_allow_list(monkeypatch):
    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", "")
    reset_plugin_manager()
    try:
        with pytest.raises(PromptSetError, match="reasoning-gym:chain_sum"):
            prompts_of("reasoning-gym:chain_sum?size=3")
    finally:
        reset_plugin_manager()
