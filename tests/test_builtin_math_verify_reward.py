"""The ``math-verify`` reward, with the real math-verify package: answer pairs of LaTeX, fractions, sets, intervals
and wrong answers; its signal-based timeouts fail a sample (not a silent 0); and it scores in the worker pool."""

from __future__ import annotations

import pytest

from iterframe.plugins import ComponentOptionError, create_component
from iterframe.plugins.components import RunContext, Sample
from iterframe.plugins.reward_pool import RewardPool, score_outcomes

pytest.importorskip("math_verify")

#: (reference, completion, expected score)
ANSWER_PAIRS = [
    ("\\frac{1}{2}", "The answer is $\\frac{1}{2}$.", 1.0),
    ("1/2", "So we get \\boxed{0.5}", 1.0),
    ("\\frac{3}{4}", "Thus $\\boxed{\\dfrac{3}{4}}$", 1.0),
    ("0.25", "$\\frac14$", 1.0),
    ("\\frac{1}{3}", "$0.33$", 0.0),
    ("\\{1, 2, 3\\}", "The set is $\\{3, 2, 1\\}$", 1.0),
    ("\\{1, 2\\}", "$\\{1, 3\\}$", 0.0),
    ("(1, 2)", "the interval $(1,2)$", 1.0),
    ("[0, \\infty)", "$x \\in [0, \\infty)$", 1.0),
    ("\\sqrt{2}", "$\\boxed{\\sqrt 2}$", 1.0),
    ("\\frac{\\sqrt{3}}{2}", "$\\sin 60^\\circ = \\boxed{\\frac{\\sqrt{3}}{2}}$", 1.0),
    ("2\\pi", "The circumference is $2\\pi$", 1.0),
    ("x^2+2x+1", "$(x+1)^2$", 1.0),
    ("x = 5", "$x=5$", 1.0),  # the final answer of an equation is its value: 5 after the last '='
    ("x = 5", "$x=6$", 0.0),
    ("10\\%", "$10\\%$", 1.0),
    ("-3", "\\boxed{-3}", 1.0),
    ("42", "The final answer is 42", 1.0),
    ("42", "The final answer is 41", 0.0),
    ("5", "I don't know", 0.0),
    ("e", "$\\boxed{2}$", 0.0),
    ("$\\frac{7}{2}$", "$3.5$", 1.0),
]

CONTEXT = RunContext(trainer=None, tokenizer=None)


def samples_of(pairs) -> list[Sample]:
    return [
        Sample(0, index, "Q", completion, reference=reference)
        for index, (reference, completion, *_) in enumerate(pairs)
    ]


@pytest.fixture
def reward(plugin_manager):
    # Timeouts a loaded machine cannot reach: these tests judge answers (timeouts are faked where tested).
    reward = create_component(
        "reward", "math-verify", {"workers": 0, "parsing_timeout_s": 60, "verify_timeout_s": 60}
    )
    reward.setup(CONTEXT)
    return reward


@pytest.mark.parametrize(("reference", "completion", "expected"), ANSWER_PAIRS)
def test_answer_pairs(reward, reference, completion, expected):
    assert reward.score(samples_of([(reference, completion)])) == [expected]


def test_a_missing_reference_fails_that_sample_only(reward):
    scores = reward.score(samples_of([(None, "$1$"), ("1", "$1$")]))
    outcomes = score_outcomes("Reward 'math-verify'", scores, 2)
    assert outcomes[0].failure == "error" and "needs a reference answer" in outcomes[0].message
    assert outcomes[1].score == 1.0


def test_a_math_verify_timeout_fails_the_sample_instead_of_scoring_zero(reward, monkeypatch):
    import math_verify
    from math_verify.errors import TimeoutException

    real_parse = math_verify.parse

    def slow_completion(text, *args, **kwargs):
        if "slow" in text:
            raise TimeoutException("Operation timed out!")
        return real_parse(text, *args, **kwargs)

    monkeypatch.setattr(math_verify, "parse", slow_completion)
    scores = reward.score(samples_of([("1", "slow $1$"), ("1", "$1$")]))
    outcomes = score_outcomes("Reward 'math-verify'", scores, 2)
    assert outcomes[0].failure == "timeout" and "timed out parsing the completion" in outcomes[0].message
    assert outcomes[1].score == 1.0


def test_math_verify_scores_in_the_worker_pool(plugin_manager):
    reward = create_component("reward", "math-verify", {"workers": 2})
    reward.setup(CONTEXT)
    pool = RewardPool(reward, "Reward 'math-verify'")
    try:
        outcomes = pool.score(samples_of(ANSWER_PAIRS[:6]))
    finally:
        pool.close()
    assert [outcome.score for outcome in outcomes] == [pair[2] for pair in ANSWER_PAIRS[:6]]


def test_without_the_package_setup_says_how_to_install_it(plugin_manager, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "math_verify", None)
    reward = create_component("reward", "math-verify")
    with pytest.raises(ImportError, match=r"pip install 'iterframe\[math\]'"):
        reward.setup(CONTEXT)


def test_timeouts_must_be_whole_seconds(plugin_manager):
    with pytest.raises(ComponentOptionError, match="parsing_timeout_s must be a whole number of seconds >= 1"):
        create_component("reward", "math-verify", {"parsing_timeout_s": 0})


def _scored(reward, prompt, completion, reference, finish_reason="stop"):
    sample = Sample(0, 0, prompt, completion, reference=reference, info={"finish_reason": finish_reason})
    return reward.score([sample])[0]


def test_a_cut_off_restatement_of_the_question_scores_nothing(reward):
    completion = "To find 83 + 97, you can start by adding "  # parses as the expression 83 + 97, equal to 180
    assert _scored(reward, "What is 83 + 97?", completion, "180", finish_reason="length") == 0.0
    assert _scored(reward, "What is 83 + 97?", completion, "180") == 0.0  # copied from the prompt, even finished


def test_an_expression_before_the_last_equals_sign_is_not_the_answer(reward):
    assert _scored(reward, "What is 19 + 98?", "19 + 98 = a mix of mix", "117") == 0.0
    assert _scored(reward, "What is 19 + 98?", "19 + 98 = 117", "117") == 1.0
    assert _scored(reward, "What is 83 + 97?", "83 + 97 = 170 + 10 = 180", "180") == 1.0


def test_a_truncated_completion_scores_nothing_unless_asked(plugin_manager, reward):
    assert _scored(reward, "What is 83 + 97?", "83 + 97 = 180, and", "180", finish_reason="length") == 0.0
    lenient = create_component("reward", "math-verify", {"workers": 0, "score_truncated": True})
    assert _scored(lenient, "What is 83 + 97?", "83 + 97 = 180, and", "180", finish_reason="length") == 1.0


def test_a_number_that_is_also_in_the_prompt_still_counts(reward):
    assert _scored(reward, [{"role": "user", "content": "What is 5 * 1?"}], "The answer is 5", "5") == 1.0


def test_the_whole_completion_and_prompt_expressions_can_be_asked_for(plugin_manager):
    anywhere = create_component(
        "reward", "math-verify", {"workers": 0, "answer_from": "anywhere", "prompt_expressions": True}
    )
    assert _scored(anywhere, "What is 19 + 98?", "19 + 98 = a mix of mix", "117") == 1.0
    with pytest.raises(ComponentOptionError, match="answer_from must be one of"):
        create_component("reward", "math-verify", {"answer_from": "first"})
