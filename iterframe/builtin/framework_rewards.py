"""The ``verl`` and ``openrlhf`` rewards: reward functions written for verl and for OpenRLHF, called as those
frameworks call them.

verl calls ``compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=...)`` once per sample
and takes a number, or a dict whose ``score`` is the reward. OpenRLHF calls ``reward_func(queries, prompts,
labels)`` with lists and takes ``{"rewards": ..., "scores": ..., "extra_logs": {...}}`` (tensors or lists). What
such a function gives besides the reward (a verl dict's other keys; OpenRLHF's ``scores`` and ``extra_logs``) goes
to each sample's ``info["reward_metrics"]``, saved with the samples and averaged in the metrics
(``reward/metrics/NAME``). An ``async def`` function is awaited, its calls of a batch concurrently.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

from iterframe.builtin.callables import FunctionOptionReward, call_each
from iterframe.generation.prompt_encoding import render_prompt
from iterframe.loop.metrics import REWARD_METRICS_KEY
from iterframe.plugins.components import PooledReward, RunContext, Sample
from iterframe.plugins.reward_pool import checked_scores

__all__ = ["OpenRlhfReward", "VerlReward"]


def _plain(value: Any) -> Any:
    """A tensor, array or NumPy scalar as Python lists and numbers (``tolist``); anything else as it is."""
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) and not isinstance(value, (str, bytes)) else value


def _record_metrics(sample: Sample, metrics: dict[str, Any]) -> None:
    if metrics:
        sample.info[REWARD_METRICS_KEY] = {**(sample.info.get(REWARD_METRICS_KEY) or {}), **metrics}


class VerlReward(FunctionOptionReward):
    """Calls a verl reward function ``compute_score(data_source, solution_str, ground_truth, extra_info)`` per
    sample."""

    name = "verl"
    description = (
        "A verl reward function 'module:function': compute_score(data_source, solution_str, ground_truth, "
        "extra_info=None) -> float | dict, once per sample; a dict's 'score' is the reward, its other keys "
        "metrics."
    )

    @dataclasses.dataclass
    class Options(PooledReward.Options):
        function: str = dataclasses.field(
            metadata={
                "help": "The function, as 'package.module:function' or 'path/to/file.py:function'. Called "
                "once per sample as verl calls it, by keyword: data_source, solution_str (the completion), "
                "ground_truth (the reference) and extra_info (the dataset's extra_info column, else {}); returns "
                "a number, or a dict whose 'score' is the reward and whose other keys go to the sample's "
                "info['reward_metrics']."
            }
        )
        data_source_column: str = dataclasses.field(
            default="data_source",
            metadata={"help": "Dataset column passed as data_source (None for a sample without it)."},
        )

    def _ground_truth(self, sample: Sample) -> Any:
        """The reference; a verl ``reward_model`` value (``{"ground_truth": ...}``) gives its ground truth."""
        for value in (sample.reference, (sample.info.get("extra") or {}).get("reward_model")):
            if isinstance(value, dict) and "ground_truth" in value:
                return value["ground_truth"]
            if value is not None:
                return value
        raise ValueError(
            f"verl reward function {self.options.function!r} needs a ground_truth, but the sample of prompt "
            f"{sample.prompt_id} has no reference answer and no reward_model column; set "
            "dataset.reference_column (--reference-column) to the column that holds it."
        )

    def _call(self, function, sample: Sample):
        extra = sample.info.get("extra") or {}
        extra_info = extra.get("extra_info")
        extra_info = {} if extra_info is None else dict(extra_info) if isinstance(extra_info, dict) else extra_info
        return functools.partial(
            function,
            data_source=extra.get(self.options.data_source_column),
            solution_str=sample.completion,
            ground_truth=self._ground_truth(sample),
            extra_info=extra_info,
        )

    def score(self, samples: list[Sample]) -> list[Optional[float]]:
        source = f"verl reward function {self.options.function!r}"
        function = self.loaded_function()
        scores = []
        for sample, answer in zip(samples, call_each([self._call(function, sample) for sample in samples])):
            answer = _plain(answer)
            if isinstance(answer, dict):
                if "score" not in answer:
                    raise TypeError(
                        f"{source} returned a dict without 'score' (its keys: {', '.join(map(str, answer))}); "
                        "verl takes a dict's 'score' as the reward: add it."
                    )
                _record_metrics(sample, {str(k): _plain(v) for k, v in answer.items() if k != "score"})
                answer = _plain(answer["score"])
            scores.append(answer)
        return checked_scores(source, scores, len(samples))


def _per_sample(source: str, what: str, value: Any, expected: int, broadcast: bool = False) -> list:
    """``value`` (a tensor, array or list) as ``expected`` plain values; a single value repeated with
    ``broadcast``. One-element entries (``[[1.0], [0.0]]``, a list of ``tensor([1.0])``) count as their element."""
    value = _plain(value)
    if not isinstance(value, (list, tuple)):
        if broadcast:
            return [value] * expected
        raise TypeError(f"{source} returned {what} as a {type(value).__name__}; it must hold one value per query.")
    values = [_plain(item) for item in value]
    values = [item[0] if isinstance(item, list) and len(item) == 1 else item for item in values]
    if len(values) != expected:
        if broadcast and len(values) == 1:
            return values * expected
        raise ValueError(f"{source} returned {len(values)} {what} for {expected} queries.")
    return values


class OpenRlhfReward(FunctionOptionReward):
    """Calls an OpenRLHF reward function ``reward_func(queries, prompts, labels)`` with a batch of samples."""

    name = "openrlhf"
    description = (
        "An OpenRLHF reward function 'module:function': reward_func(queries, prompts, labels) -> "
        "{'rewards', 'scores', 'extra_logs'}, the lists of a batch of samples."
    )

    @dataclasses.dataclass
    class Options(PooledReward.Options):
        function: str = dataclasses.field(
            metadata={
                "help": "The function, as 'package.module:function' or 'path/to/file.py:function'. Called as "
                "OpenRLHF calls it, with three lists, one entry per sample: queries (prompt text + completion), "
                "prompts (the prompt text, chat prompts through the chat template) and labels (the reference, "
                "'' without one). Returns {'rewards': ..., 'scores': ..., 'extra_logs': {...}}: the rewards are "
                "the samples' rewards; scores and extra_logs go to their info['reward_metrics']."
            }
        )

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.tokenizer = context.tokenizer

    def _arguments(self, samples: list[Sample]) -> tuple[list, list, list]:
        tokenizer = getattr(self, "tokenizer", None)
        prompts = [render_prompt(tokenizer, sample.prompt, f"prompt {sample.prompt_id}") for sample in samples]
        queries = [prompt + sample.completion for prompt, sample in zip(prompts, samples)]
        return queries, prompts, ["" if sample.reference is None else sample.reference for sample in samples]

    def _scores(self, answer: Any, samples: list[Sample]) -> list:
        """The rewards of one call's ``samples``, their scores and extra logs recorded as metrics."""
        source = f"openrlhf reward function {self.options.function!r}"
        if not isinstance(answer, dict):  # a bare list or tensor of rewards, as older OpenRLHF took
            return checked_scores(source, _per_sample(source, "rewards", answer, len(samples)), len(samples))
        if "rewards" not in answer:
            raise TypeError(
                f"{source} returned a dict without 'rewards' (its keys: {', '.join(map(str, answer))}); OpenRLHF "
                "takes {'rewards': one per query, 'scores': ..., 'extra_logs': {...}}."
            )
        rewards = _per_sample(source, "rewards", answer["rewards"], len(samples))
        rewards = checked_scores(source, rewards, len(samples))
        columns: dict[str, list] = {}
        if answer.get("scores") is not None:
            columns["score"] = _per_sample(source, "scores", answer["scores"], len(samples))
        extra_logs = answer.get("extra_logs") or {}
        if not isinstance(extra_logs, dict):
            raise TypeError(f"{source} returned extra_logs as a {type(extra_logs).__name__}; it must be a dict.")
        for name, value in extra_logs.items():
            columns[str(name)] = _per_sample(source, f"extra_logs[{name!r}]", value, len(samples), broadcast=True)
        for index, sample in enumerate(samples):
            _record_metrics(sample, {name: values[index] for name, values in columns.items()})
        return rewards

    def score(self, samples: list[Sample]) -> list[Optional[float]]:
        function = self.loaded_function()
        groups = self.call_groups(samples)
        calls = [functools.partial(function, *self._arguments([samples[i] for i in group])) for group in groups]
        scores: list = [None] * len(samples)
        for group, answer in zip(groups, call_each(calls)):
            for index, score in zip(group, self._scores(answer, [samples[i] for i in group])):
                scores[index] = score
        return scores
