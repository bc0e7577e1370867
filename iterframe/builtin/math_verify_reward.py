"""The ``math-verify`` reward: 1.0 when the completion's answer is mathematically equal to the reference, checked
with Hugging Face's ``math-verify`` package (``pip install 'iterframe[math]'``).

It scores the model's *final* answer, so that restating the question is not rewarded: by default the answer is
the boxed one, else what follows the last "answer is", else what follows the last ``=`` (nothing there: no
answer), else whatever math-verify finds in the completion; an expression that appears in the prompt as it is
(``83 + 97`` for "What is 83 + 97?") is never the answer; and a completion cut at ``max_new_tokens`` scores 0.

math-verify bounds its parsing and comparisons with ``signal.alarm``, which works only on a process's main thread;
as a pooled reward, each sample is scored on a worker process's main thread. Its timeouts, which math-verify would
turn into a silent "not equal", fail the sample instead (``failed-reward:timeout``).
"""

from __future__ import annotations

import dataclasses
import re

from iterframe.plugins.components import PooledReward, Sample

__all__ = ["MathVerifyReward", "final_answer_text"]

ANSWER_FROM = ("final", "anywhere")
_ANSWER_IS = re.compile(r"answer is|answer:", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

INSTALL_HINT = "pip install 'iterframe[math]' (or pip install math-verify[antlr4_13_2])"


def final_answer_text(completion: str) -> str:
    """The part of ``completion`` that states its final answer: all of it when it has a ``\\boxed`` answer
    (math-verify takes that first), else what follows the last "answer is" (or "answer:"), else what follows the
    last ``=``, else all of it."""
    if "\\boxed" in completion:
        return completion
    stated = list(_ANSWER_IS.finditer(completion))
    if stated:
        return completion[stated[-1].end() :]
    if "=" in completion:
        return completion[completion.rindex("=") + 1 :]
    return completion


def _prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return " ".join(str(message.get("content", "")) for message in prompt if isinstance(message, dict))


def _squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text.strip().strip("$").strip())


def _copied_from_prompt(matched: str, prompt) -> bool:
    """Whether the answer math-verify found is an expression (not a plain number) the prompt holds as it is."""
    answer = _squeezed(matched)
    return bool(answer) and not _PLAIN_NUMBER.fullmatch(answer) and answer in _squeezed(_prompt_text(prompt))


def _math_verify():
    try:
        import math_verify
        from math_verify.errors import TimeoutException
    except ImportError as error:
        raise ImportError(f"The math-verify reward needs the math-verify package: {INSTALL_HINT}.") from error
    return math_verify, TimeoutException


class MathVerifyReward(PooledReward):
    """1.0 when the completion's final answer equals the reference (numbers, fractions, LaTeX expressions, sets,
    intervals, equations), else 0.0: see the module's docstring for what the final answer is."""

    name = "math-verify"
    description = "1.0 if the completion's answer equals the reference as mathematics (math-verify), else 0.0."

    @dataclasses.dataclass
    class Options(PooledReward.Options):
        parsing_timeout_s: int = dataclasses.field(
            default=5, metadata={"help": "Seconds math-verify may spend parsing one answer (signal.alarm)."}
        )
        verify_timeout_s: int = dataclasses.field(
            default=5, metadata={"help": "Seconds math-verify may spend on one comparison (signal.alarm)."}
        )
        float_rounding: int = dataclasses.field(
            default=6, metadata={"help": "Decimal places numbers are rounded to before comparing."}
        )
        strict: bool = dataclasses.field(
            default=True,
            metadata={"help": "Variables must match and sets are not tuples (false: compare by position)."},
        )
        answer_from: str = dataclasses.field(
            default="final",
            metadata={
                "help": "Where the answer is taken from. 'final': the boxed answer, else what follows the last "
                "'answer is', else what follows the last '=' (nothing there: no answer), else the whole "
                "completion; 'anywhere': whatever math-verify finds first in the whole completion.",
                "choices": list(ANSWER_FROM),
            },
        )
        prompt_expressions: bool = dataclasses.field(
            default=False,
            metadata={
                "help": "Count an answer that is an expression found as it is in the prompt (e.g. '83 + 97' for "
                "'What is 83 + 97?'); false: such an answer scores 0. Set true where the answer is one of the "
                "prompt's expressions (choosing between them)."
            },
        )
        score_truncated: bool = dataclasses.field(
            default=False,
            metadata={
                "help": "Score completions the generator cut at max_new_tokens (finish_reason 'length') like "
                "the others; false: they score 0, an unfinished answer is no answer."
            },
        )

        def __post_init__(self):
            super().__post_init__()
            for name in ("parsing_timeout_s", "verify_timeout_s"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be a whole number of seconds >= 1, got {getattr(self, name)}.")
            if self.answer_from not in ANSWER_FROM:
                raise ValueError(f"answer_from must be one of {list(ANSWER_FROM)}, got {self.answer_from!r}.")

    def setup(self, context) -> None:
        _math_verify()

    def _parsed_reference(self, sample: Sample, math_verify, timeout_exception) -> list:
        reference = "" if sample.reference is None else str(sample.reference).strip()
        if not reference:
            raise ValueError(
                f"math-verify needs a reference answer, but the sample of prompt {sample.prompt_id} has none; "
                "give the dataset a reference column (dataset.reference_column)."
            )
        text = reference if "$" in reference or "\\boxed" in reference else f"${reference}$"
        try:
            gold = math_verify.parse(
                text,
                extraction_mode="first_match",
                parsing_timeout=self.options.parsing_timeout_s,
                raise_on_error=True,
            )
        except timeout_exception:
            raise TimeoutError(f"math-verify timed out parsing the reference {reference!r}") from None
        if not gold:
            raise ValueError(
                f"math-verify found no answer in the reference {reference!r} (prompt {sample.prompt_id})."
            )
        return gold

    def _verified(self, sample: Sample, gold: list, math_verify, timeout_exception) -> float:
        options = self.options
        if not options.score_truncated and sample.info.get("finish_reason") == "length":
            return 0.0
        text = final_answer_text(sample.completion) if options.answer_from == "final" else sample.completion
        try:
            answer = math_verify.parse(text, parsing_timeout=options.parsing_timeout_s, raise_on_error=True)
        except timeout_exception:
            raise TimeoutError("math-verify timed out parsing the completion") from None
        except Exception:  # an answer that cannot be parsed is a wrong answer, not a failed sample
            return 0.0
        if not answer:
            return 0.0
        if not options.prompt_expressions and _copied_from_prompt(str(answer[-1]), sample.prompt):
            return 0.0
        try:
            equal = math_verify.verify(
                gold,
                answer,
                float_rounding=self.options.float_rounding,
                strict=self.options.strict,
                timeout_seconds=self.options.verify_timeout_s,
                raise_on_error=True,
            )
        except timeout_exception:
            raise TimeoutError("math-verify timed out comparing the answer with the reference") from None
        except Exception:  # expressions sympy cannot compare are not equal, as math-verify itself decides
            return 0.0
        return 1.0 if equal else 0.0

    def _score_one(self, sample: Sample, math_verify, timeout_exception):
        try:
            gold = self._parsed_reference(sample, math_verify, timeout_exception)
            return self._verified(sample, gold, math_verify, timeout_exception)
        except (TimeoutError, ValueError) as error:  # this sample fails; the others are still scored
            return error

    def score(self, samples: list[Sample]) -> list:
        math_verify, timeout_exception = _math_verify()
        return [self._score_one(sample, math_verify, timeout_exception) for sample in samples]
