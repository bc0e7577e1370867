"""The ``math-verify`` reward: 1.0 when the completion's answer is mathematically equal to the reference, checked
with Hugging Face's ``math-verify`` package (``pip install 'iterframe[math]'``).

math-verify bounds its parsing and comparisons with ``signal.alarm``, which works only on a process's main thread;
as a pooled reward, each sample is scored on a worker process's main thread. Its timeouts, which math-verify would
turn into a silent "not equal", fail the sample instead (``failed-reward:timeout``).
"""

from __future__ import annotations

import dataclasses

from iterframe.plugins.components import PooledReward, Sample

__all__ = ["MathVerifyReward"]

INSTALL_HINT = "pip install 'iterframe[math]' (or pip install math-verify[antlr4_13_2])"


def _math_verify():
    try:
        import math_verify
        from math_verify.errors import TimeoutException
    except ImportError as error:
        raise ImportError(f"The math-verify reward needs the math-verify package: {INSTALL_HINT}.") from error
    return math_verify, TimeoutException


class MathVerifyReward(PooledReward):
    """1.0 when the completion's final answer equals the reference (numbers, fractions, LaTeX expressions, sets,
    intervals, equations), else 0.0."""

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

        def __post_init__(self):
            super().__post_init__()
            for name in ("parsing_timeout_s", "verify_timeout_s"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be a whole number of seconds >= 1, got {getattr(self, name)}.")

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
        try:
            answer = math_verify.parse(
                sample.completion, parsing_timeout=self.options.parsing_timeout_s, raise_on_error=True
            )
        except timeout_exception:
            raise TimeoutError("math-verify timed out parsing the completion") from None
        except Exception:  # an answer that cannot be parsed is a wrong answer, not a failed sample
            return 0.0
        if not answer:
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
