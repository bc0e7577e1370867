"""What a reward's answer means per sample: a finite score, or a failure with its reason and message.

A reward returns one entry per sample: a number, ``None`` (no score) or an exception instance. Each entry becomes a
:class:`ScoreOutcome`: a finite score, or a failure with a reason (``timeout``, ``error`` or ``no-score``) and a
message. What a reward wrote into a sample's ``info`` while scoring it travels with the outcome, so it reaches the
run's sample from a worker process too.
"""

from __future__ import annotations

import dataclasses
import math
import traceback
from typing import Any, Optional

__all__ = [
    "FAILURE_REASONS",
    "BatchScorer",
    "ScoreOutcome",
    "checked_scores",
    "describe_error",
    "failure_outcome",
    "score_batch",
    "score_outcomes",
]

#: Why a sample's scoring failed: it ran past ``timeout_s`` (or raised ``TimeoutError``), it raised, or the reward
#: gave no finite score (``None``, NaN, infinity).
FAILURE_REASONS = ("timeout", "error", "no-score")
_MESSAGE_LIMIT = 500


@dataclasses.dataclass
class ScoreOutcome:
    """What scoring one sample gave: a finite ``score``, or a ``failure`` reason and its ``message``; ``info``: the
    entries the reward set in the sample's ``info`` while scoring it (``None`` when it set none)."""

    score: Optional[float] = None
    failure: Optional[str] = None
    message: Optional[str] = None
    info: Optional[dict[str, Any]] = None


def describe_error(error: BaseException, located: bool = False) -> str:
    """``Type: message``; with ``located``, also where it was raised (``at file:line in function``)."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    text = text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."
    frames = traceback.extract_tb(error.__traceback__) if located and error.__traceback__ is not None else []
    return f"{text} (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else text


def failure_outcome(error: BaseException, raised: bool = False) -> ScoreOutcome:
    """The failed outcome of a sample whose scoring gave ``error`` (a ``TimeoutError`` is a timeout); one that was
    ``raised`` out of the reward is a bug, and its message says where."""
    reason = "timeout" if isinstance(error, TimeoutError) else "error"
    return ScoreOutcome(failure=reason, message=describe_error(error, located=raised))


def checked_scores(source: str, scores: Any, expected: int) -> list:
    """``scores`` as a list of ``expected`` entries, each a float, ``None`` or an exception instance.

    Raises:
        TypeError: ``scores`` is no list-like, or an entry is neither a number, ``None`` nor an exception.
        ValueError: it has the wrong length.
    """
    if isinstance(scores, (str, bytes, dict)) or not hasattr(scores, "__len__"):
        raise TypeError(
            f"{source} returned a {type(scores).__name__}; it must return a list of {expected} numbers."
        )
    if len(scores) != expected:
        raise ValueError(f"{source} returned {len(scores)} scores for {expected} samples.")
    checked = []
    for index, score in enumerate(scores):
        if score is None or isinstance(score, BaseException):
            checked.append(score)
            continue
        try:
            if isinstance(score, (str, bytes)):
                raise TypeError
            checked.append(float(score))
        except (TypeError, ValueError):
            raise TypeError(
                f"{source} returned {score!r} for sample {index}; scores must be numbers (None for a sample that "
                "could not be scored)."
            ) from None
    return checked


def score_outcomes(source: str, scores: Any, expected: int) -> list[ScoreOutcome]:
    """One :class:`ScoreOutcome` per entry of a reward's answer (checked with :func:`checked_scores`)."""
    outcomes = []
    for score in checked_scores(source, scores, expected):
        if isinstance(score, BaseException):
            outcomes.append(failure_outcome(score))
        elif score is None or not math.isfinite(score):
            outcomes.append(ScoreOutcome(failure="no-score", message=f"{source} returned {score!r}"))
        else:
            outcomes.append(ScoreOutcome(score=score))
    return outcomes


class BatchScorer:
    """Scores a reward that is not pooled: one ``score`` call with all the samples, in this process."""

    def __init__(self, reward, name: str):
        self.reward = reward
        self.name = name

    def start(self) -> None:
        """Nothing to start."""

    def score(self, samples: list) -> list[ScoreOutcome]:
        """One outcome per sample, in order; a wrong answer shape raises (see :func:`checked_scores`)."""
        return score_outcomes(self.name, self.reward.score(samples), len(samples))

    def close(self) -> None:
        """Nothing to stop."""


def score_batch(reward, source: str, samples: list) -> list[ScoreOutcome] | ScoreOutcome:
    """One ``reward.score(samples)`` call: an outcome per sample, each with the ``info`` entries the reward set
    (added or replaced), or, when the call raised (math-verify's timeouts derive from ``BaseException``) or
    answered in the wrong shape, the one failure of the whole call."""
    before = [dict(sample.info) for sample in samples]
    try:
        outcomes = score_outcomes(source, reward.score(samples), len(samples))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:
        return failure_outcome(error, raised=True)
    for outcome, sample, old in zip(outcomes, samples, before):
        recorded = {key: value for key, value in sample.info.items() if key not in old or old[key] is not value}
        outcome.info = recorded or None
    return outcomes
