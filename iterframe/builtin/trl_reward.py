"""The ``trl`` reward: a reward function written for TRL's GRPO trainer, called the way TRL calls it.

TRL's signature is ``f(prompts, completions, completion_ids, **columns) -> list[float | None]``, all arguments by
keyword: ``prompts`` and ``completions`` are strings, or, for chat prompts, message lists (a completion is
``[{"role": "assistant", "content": text}]``); ``completion_ids`` are the completions' token ids; every other
dataset column comes as a keyword argument of the same name, one value per sample. ``None`` marks a sample the
function could not score: it fails (``failed-reward:no-score``). An ``async def`` function is called once per
prompt, the calls awaited concurrently.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Optional

from iterframe.builtin.callables import FunctionOptionReward, call_each
from iterframe.plugins.components import PooledReward, RunContext, Sample
from iterframe.plugins.reward_pool import checked_scores

__all__ = ["TrlReward", "trl_arguments"]

#: Reference column name when the run config names none (the dataset loader's default).
DEFAULT_REFERENCE_COLUMN = "reference"


def _completion_of(sample: Sample) -> Any:
    if isinstance(sample.prompt, str):
        return sample.completion
    return [{"role": "assistant", "content": sample.completion}]


def trl_arguments(samples: list[Sample], tokenizer=None, reference_column: str = DEFAULT_REFERENCE_COLUMN) -> dict:
    """The keyword arguments TRL passes a reward function for ``samples``: ``prompts``, ``completions``,
    ``completion_ids`` (``None`` without a tokenizer) and one list per dataset column (the samples' extra columns,
    and their references under ``reference_column``; ``None`` where a sample lacks a column)."""
    columns: dict[str, list] = {}
    extras = [sample.info.get("extra") or {} for sample in samples]
    for name in dict.fromkeys(key for extra in extras for key in extra):
        columns[name] = [extra.get(name) for extra in extras]
    if any(sample.reference is not None for sample in samples):
        columns.setdefault(reference_column, [sample.reference for sample in samples])
    completion_ids = None
    if tokenizer is not None:
        completion_ids = [tokenizer(s.completion, add_special_tokens=False)["input_ids"] for s in samples]
    return {
        **columns,
        "prompts": [sample.prompt for sample in samples],
        "completions": [_completion_of(sample) for sample in samples],
        "completion_ids": completion_ids,
    }


class TrlReward(FunctionOptionReward):
    """Calls a TRL GRPO reward function ``f(prompts, completions, completion_ids, **columns)``."""

    name = "trl"
    description = (
        "A TRL GRPO reward function 'module:function': f(prompts, completions, completion_ids, **columns) -> "
        "list[float | None]."
    )

    @dataclasses.dataclass
    class Options(PooledReward.Options):
        function: str = dataclasses.field(
            metadata={
                "help": "The reward function, as 'package.module:function' or 'path/to/file.py:function'. Called "
                "like TRL's GRPOTrainer calls it: prompts, completions, completion_ids and every dataset column "
                "as keyword arguments; returns one float per sample, or None for a sample it cannot score."
            }
        )

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.tokenizer = context.tokenizer
        dataset = (context.config or {}).get("dataset")
        named = dataset.get("reference_column") if isinstance(dataset, dict) else None
        self.reference_column = named or DEFAULT_REFERENCE_COLUMN

    def _parameters(self) -> Optional[list[inspect.Parameter]]:
        try:
            return list(inspect.signature(self.loaded_function()).parameters.values())
        except (TypeError, ValueError):  # no signature to read (a builtin): pass everything, as TRL does
            return None

    def _accepted(self, arguments: dict) -> dict:
        """The arguments the function's signature takes (all of them when it has ``**kwargs``)."""
        parameters = self._parameters()
        if parameters is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return arguments
        names = {parameter.name for parameter in parameters}
        return {key: value for key, value in arguments.items() if key in names}

    def _missing(self, arguments: dict) -> Optional[str]:
        """A required parameter of the function that no argument fills."""
        plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        for parameter in self._parameters() or []:
            if parameter.kind in plain and parameter.default is inspect.Parameter.empty:
                if parameter.name not in arguments:
                    return parameter.name
        return None

    def _call_arguments(self, samples: list[Sample]) -> dict:
        """The keyword arguments of one call for ``samples``, those the function takes."""
        tokenizer = getattr(self, "tokenizer", None)
        arguments = trl_arguments(samples, tokenizer, getattr(self, "reference_column", DEFAULT_REFERENCE_COLUMN))
        missing = self._missing(arguments)
        if missing is not None:
            columns = sorted(key for key in arguments if key not in ("prompts", "completions", "completion_ids"))
            raise ValueError(
                f"reward function {self.options.function!r} takes {missing!r}, but the samples have no such "
                f"dataset column (their columns: {', '.join(columns) or 'none'}). Name the dataset column "
                f"{missing!r}, or set dataset.reference_column={missing} when it holds the reference answers."
            )
        return self._accepted(arguments)

    def score(self, samples: list[Sample]) -> list[Optional[float]]:
        groups = self.call_groups(samples)
        function = self.loaded_function()
        calls = [functools.partial(function, **self._call_arguments([samples[i] for i in g])) for g in groups]
        scores: list = [None] * len(samples)
        for group, answer in zip(groups, call_each(calls)):
            checked = checked_scores(f"reward function {self.options.function!r}", answer, len(group))
            for index, score in zip(group, checked):
                scores[index] = score
        return scores
