"""Built-in rewards: ``python`` (any ``module:function``), ``answer-match`` (verify a final answer), ``trl``,
``verl`` and ``openrlhf`` (reward functions written for those frameworks), ``math-verify`` (mathematical
equivalence with the reference), ``http`` (a reward server) and ``code-tests``."""

from __future__ import annotations

import dataclasses
import math
import re
from numbers import Real
from typing import Optional

from iterframe.builtin.callables import FunctionOptionReward, load_callable
from iterframe.builtin.code_reward import CodeTestsReward
from iterframe.builtin.framework_rewards import OpenRlhfReward, VerlReward
from iterframe.builtin.http_reward import HttpReward
from iterframe.builtin.math_verify_reward import MathVerifyReward
from iterframe.builtin.trl_reward import TrlReward
from iterframe.loop.stages import call_reward_function
from iterframe.plugins.components import PooledReward, Sample
from iterframe.plugins.hookspecs import hookimpl
from iterframe.plugins.reward_pool import checked_scores

__all__ = [
    "AnswerMatchReward",
    "CodeTestsReward",
    "HttpReward",
    "MathVerifyReward",
    "OpenRlhfReward",
    "PythonReward",
    "TrlReward",
    "VerlReward",
    "extract_final_number",
    "load_callable",
]


class PythonReward(FunctionOptionReward):
    """Scores with any Python callable: ``fn(prompts, completions, references) -> list[float]``, or
    ``fn(samples) -> list[float]`` (see :func:`iterframe.loop.stages.call_reward_function`)."""

    name = "python"
    description = "Score with any callable 'module:function' of (prompts, completions, references) or (samples)."

    @dataclasses.dataclass
    class Options(PooledReward.Options):
        function: str = dataclasses.field(
            metadata={
                "help": "The callable, as 'package.module:function' or 'path/to/file.py:function'. It receives "
                "prompts, completions and references (lists of equal length), or the list of samples when it "
                "takes one argument, and returns one float each (None: the sample could not be scored)."
            }
        )

    def score(self, samples: list[Sample]) -> list[Optional[float]]:
        scores = call_reward_function(self.loaded_function(), samples)
        return checked_scores(f"reward function {self.options.function!r}", scores, len(samples))


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def extract_final_number(text: str) -> Optional[float]:
    """The last number in ``text`` (``"1,234"``, ``"-3.5"``, ``"$12."`` count), or ``None`` when there is none."""
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    return float(matches[-1].replace(",", ""))


class AnswerMatchReward(PooledReward):
    """1.0 when the completion's answer equals the sample's reference, else 0.0."""

    name = "answer-match"
    description = "1.0 if the completion's final number (or a regex group) equals the reference, else 0.0."
    needs_reference = True

    @dataclasses.dataclass
    class Options(PooledReward.Options):
        pattern: Optional[str] = dataclasses.field(
            default=None,
            metadata={
                "help": "Regex for the answer; its last match (group 1 if it has groups) is compared as text with "
                "the reference. Default: compare the final number of completion and reference numerically."
            },
        )
        ignore_case: bool = dataclasses.field(
            default=False, metadata={"help": "With pattern: compare answer and reference case-insensitively."}
        )

        def __post_init__(self):
            super().__post_init__()
            if self.pattern is not None:
                try:
                    re.compile(self.pattern)
                except re.error as error:
                    raise ValueError(f"pattern {self.pattern!r} is not a valid regex: {error}.") from None

    def _extract_text(self, text: str) -> Optional[str]:
        matches = list(re.finditer(self.options.pattern, text))
        if not matches:
            return None
        last = matches[-1]
        return (last.group(1) if last.re.groups else last.group(0)).strip()

    def _matches(self, completion: str, reference) -> bool:
        if self.options.pattern is None:
            expected = float(reference) if isinstance(reference, Real) else extract_final_number(str(reference))
            if expected is None:
                raise ValueError(
                    f"answer-match: the reference {reference!r} holds no number; set pattern= to compare text "
                    "answers."
                )
            answer = extract_final_number(completion)
            return answer is not None and math.isclose(answer, expected, rel_tol=0.0, abs_tol=1e-9)
        answer = self._extract_text(completion)
        expected = str(reference).strip()
        if answer is None:
            return False
        return answer.casefold() == expected.casefold() if self.options.ignore_case else answer == expected

    def score(self, samples: list[Sample]) -> list[float]:
        scores = []
        for sample in samples:
            if sample.reference is None:
                raise ValueError(
                    f"answer-match needs a reference answer, but the sample of prompt {sample.prompt_id} has "
                    "none; give the dataset a reference column or use another reward."
                )
            scores.append(1.0 if self._matches(sample.completion, sample.reference) else 0.0)
        return scores


@hookimpl
def register_rewards(register):
    register(PythonReward)
    register(AnswerMatchReward)
    register(TrlReward)
    register(MathVerifyReward)
    register(HttpReward)
    register(CodeTestsReward)
    register(VerlReward)
    register(OpenRlhfReward)
