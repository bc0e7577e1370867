"""Built-in rewards: ``python`` (any callable) and ``answer-match`` (final number or regex vs reference)."""

from __future__ import annotations

import textwrap

import pytest

from iterframe.builtin.rewards import extract_final_number
from iterframe.plugins import ComponentOptionError, create_component
from iterframe.plugins.components import RunContext, Sample

CONTEXT = RunContext(trainer=None, tokenizer=None)

REWARD_SOURCE = textwrap.dedent(
    """
    CALLS = []


    def length_reward(prompts, completions, references):
        CALLS.append((prompts, completions, references))
        return [len(completion) for completion in completions]


    class Scorers:
        @staticmethod
        def exact(prompts, completions, references):
            return [float(completion == reference) for completion, reference in zip(completions, references)]


    def too_few(prompts, completions, references):
        return [1.0]


    def not_numbers(prompts, completions, references):
        return ["good" for _ in completions]


    def completions_in_call(prompts, completions, references):
        return [float(len(completions))] * len(completions)


    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "my_rewards.py"
    path.write_text(REWARD_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    try:
        yield path
    finally:
        sys.modules.pop("my_rewards", None)


def make_samples(rows):
    """``(prompt, completion, reference)`` rows -> samples."""
    return [
        Sample(iteration=0, prompt_id=index, prompt=prompt, completion=completion, reference=reference)
        for index, (prompt, completion, reference) in enumerate(rows)
    ]


def score(name, rows, **options):
    reward = create_component("reward", name, options)
    reward.setup(CONTEXT)
    return reward.score(make_samples(rows))


def test_python_reward_passes_prompts_completions_references_and_returns_floats(plugin_manager, reward_module):
    import my_rewards

    scores = score("python", [("p1", "abc", "r1"), ("p2", "de", None)], function="my_rewards:length_reward")
    assert scores == [3.0, 2.0]
    assert all(type(value) is float for value in scores)
    assert my_rewards.CALLS == [(["p1", "p2"], ["abc", "de"], ["r1", None])]


def test_python_reward_in_the_pool_is_called_with_the_completions_of_each_prompt(plugin_manager, reward_module):
    from iterframe.plugins.reward_pool import RewardPool

    reward = create_component("reward", "python", {"function": "my_rewards:completions_in_call", "workers": 1})
    reward.setup(CONTEXT)
    samples = make_samples([("p", "a", None), ("p", "b", None), ("q", "c", None)])
    samples[1].prompt_id = 0
    pool = RewardPool(reward, "Reward 'python'")
    try:
        assert [outcome.score for outcome in pool.score(samples)] == [2.0, 2.0, 1.0]
    finally:
        pool.close()


def test_python_reward_resolves_dotted_attributes(plugin_manager, reward_module):
    rows = [("p", "4", "4"), ("p", "5", "4")]
    assert score("python", rows, function="my_rewards:Scorers.exact") == [1.0, 0.0]


def test_python_reward_loads_a_function_from_a_file_path(plugin_manager, reward_module):
    assert score("python", [("p", "abcd", None)], function=f"{reward_module}:length_reward") == [4.0]


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("my_rewards.length_reward", "must look like 'package.module:function'"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("my_rewards:missing", "'my_rewards' has no attribute 'missing'"),
        ("my_rewards:NOT_CALLABLE", "is a int, not a callable"),
        ("/no/such/file.py:f", "file '/no/such/file.py' does not exist"),
    ],
)
def test_python_reward_bad_function_reference_is_explained(plugin_manager, reward_module, function, message):
    reward = create_component("reward", "python", {"function": function})
    with pytest.raises(ValueError, match=message):
        reward.setup(CONTEXT)


def test_python_reward_wrong_number_of_scores_is_an_error(plugin_manager, reward_module):
    with pytest.raises(ValueError, match=r"'my_rewards:too_few' returned 1 scores for 2 samples"):
        score("python", [("p", "a", None), ("p", "b", None)], function="my_rewards:too_few")


def test_python_reward_non_numeric_scores_are_an_error(plugin_manager, reward_module):
    with pytest.raises(TypeError, match=r"returned 'good' for sample 0; scores must be numbers"):
        score("python", [("p", "a", None)], function="my_rewards:not_numbers")


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("12 + 7 = 19", 19.0),
        ("so the total is $1,234.", 1234.0),
        ("the change is -3.5 degrees", -3.5),
        ("about .5 of it", 0.5),
        ("no digits here", None),
        ("#### 72", 72.0),
    ],
)
def test_extract_final_number(text, number):
    assert extract_final_number(text) == number


def test_answer_match_compares_final_numbers_with_the_reference(plugin_manager):
    rows = [
        ("12 + 7?", "12 + 7 = 19", "19"),
        ("12 + 7?", "It is 19.0", 19),
        ("12 + 7?", "19 or maybe 20", "19"),
        ("Natalia sold...", "She sold 72 clips", "48 + 24 = 72\n#### 72"),
        ("Cost?", "It costs $1,200", "1200"),
        ("12 + 7?", "I do not know", "19"),
    ]
    assert score("answer-match", rows) == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]


def test_answer_match_with_a_pattern_compares_the_group_as_text(plugin_manager):
    rows = [
        ("q", r"first \boxed{3} then \boxed{x+1}", "x+1"),
        ("q", r"\boxed{ X+1 }", "x+1"),
        ("q", "no box", "x+1"),
    ]
    assert score("answer-match", rows, pattern=r"\\boxed\{([^}]*)\}") == [1.0, 0.0, 0.0]
    assert score("answer-match", rows, pattern=r"\\boxed\{([^}]*)\}", ignore_case=True) == [1.0, 1.0, 0.0]


def test_answer_match_pattern_without_groups_uses_the_whole_match(plugin_manager):
    rows = [("q", "Answer: yes", "yes"), ("q", "Answer: no", "yes")]
    assert score("answer-match", rows, pattern=r"\b(?:yes|no)\b") == [1.0, 0.0]


def test_answer_match_without_a_reference_names_the_prompt(plugin_manager):
    with pytest.raises(ValueError, match="the sample of prompt 1 has none; give the dataset a reference column"):
        score("answer-match", [("q", "1", "1"), ("q", "2", None)])


def test_answer_match_reference_without_a_number_suggests_a_pattern(plugin_manager):
    with pytest.raises(ValueError, match=r"the reference 'Paris' holds no number; set pattern="):
        score("answer-match", [("Capital of France?", "Paris", "Paris")])


def test_answer_match_rejects_an_invalid_pattern(plugin_manager):
    with pytest.raises(ComponentOptionError, match=r"reward 'answer-match': pattern '\(' is not a valid regex"):
        create_component("reward", "answer-match", {"pattern": "("})
