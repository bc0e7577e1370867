"""The ``reasoning-gym`` reward: the completion's answer scored by the task's own ``score_answer``."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import iterframe

__all__ = ["ReasoningGymReward", "extracted_answer"]


def extracted_answer(completion: str, tag: Optional[str]) -> str:
    """The text inside the last ``<tag>...</tag>`` of ``completion`` (reasoning-gym's own extraction), else the
    whole completion, stripped."""
    if tag:
        from reasoning_gym.utils import extract_answer

        inside = extract_answer(completion, tag_name=tag)
        if inside is not None:
            return inside
    return completion.strip()


class ReasoningGymReward(iterframe.PooledReward):
    """Scores a sample of a ``reasoning-gym:TASK`` prompt with that task's ``score_answer`` (1.0 for a right
    answer; some tasks give partial credit)."""

    name = "reasoning-gym"
    description = "The reasoning-gym task's own score_answer of the completion's answer (reasoning-gym: prompts)."

    @dataclasses.dataclass
    class Options(iterframe.PooledReward.Options):
        answer_tag: Optional[str] = dataclasses.field(
            default="answer",
            metadata={
                "help": "Score the text inside the completion's last <TAG>...</TAG> (reasoning-gym's system "
                "prompts ask for <answer>); a completion without it is scored whole. none: always score it whole."
            },
        )

    def _score_answer(self, task: str):
        """The task's ``score_answer`` (its dataset built once per worker, with the default config)."""
        cache = self.__dict__.setdefault("_scorers", {})
        if task not in cache:
            import reasoning_gym

            cache[task] = reasoning_gym.get_score_answer_fn(task)
        return cache[task]

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "_scorers"}

    def _score_one(self, sample: iterframe.Sample) -> float:
        metadata = (sample.info.get("extra") or {}).get("metadata")
        if not isinstance(metadata, dict) or "source_dataset" not in metadata:
            raise ValueError(
                f"the sample of prompt {sample.prompt_id} has no reasoning-gym metadata; the reasoning-gym reward "
                "scores prompts of --dataset reasoning-gym:TASK."
            )
        question = sample.prompt if isinstance(sample.prompt, str) else sample.prompt[-1]["content"]
        entry = {"question": question, "answer": sample.reference, "metadata": metadata}
        answer = extracted_answer(sample.completion, self.options.answer_tag)
        return float(self._score_answer(metadata["source_dataset"])(answer=answer, entry=entry))

    def score(self, samples: list[iterframe.Sample]) -> list[float]:
        return [self._score_one(sample) for sample in samples]
