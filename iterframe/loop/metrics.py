"""The numbers of one iteration's metrics row: reward statistics of its samples and ``train/*`` of its steps."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any

from iterframe.loop.stages import FAILURE_REASONS, failure_reason
from iterframe.plugins.components import Sample

__all__ = [
    "REWARD_METRICS_KEY",
    "eval_metrics",
    "failure_metrics",
    "reward_metrics",
    "sample_metric_means",
    "token_metrics",
    "training_metrics",
    "verdict_metrics",
]


#: The ``Sample.info`` key under which a reward records a sample's metrics, ``{name: value}`` (the ``verl`` and
#: ``openrlhf`` rewards put there what their functions return besides the reward).
REWARD_METRICS_KEY = "reward_metrics"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def sample_metric_means(samples: list[Sample], prefix: str) -> dict[str, float]:
    """``PREFIX/metrics/NAME``: the mean of each numeric sample metric (``info["reward_metrics"]``; ``True`` counts
    1) over the samples that have a finite value of it."""
    values: dict[str, list[float]] = {}
    for sample in samples:
        for name, value in (sample.info.get(REWARD_METRICS_KEY) or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                values.setdefault(str(name), []).append(float(value))
    return {f"{prefix}/metrics/{name}": _mean(numbers) for name, numbers in sorted(values.items())}


def failure_metrics(samples: list[Sample], prefix: str) -> dict[str, int]:
    """``PREFIX/num_failed``, and ``PREFIX/num_failed/REASON`` for each failure reason (0 when none)."""
    reasons = Counter(failure_reason(sample) for sample in samples)
    metrics = {f"{prefix}/num_failed": sum(reasons[reason] for reason in FAILURE_REASONS)}
    metrics.update({f"{prefix}/num_failed/{reason}": reasons[reason] for reason in FAILURE_REASONS})
    return metrics


def verdict_metrics(samples: list[Sample]) -> dict[str, int]:
    """``reward/verdict/VERDICT``: how many samples the reward judged so, for the rewards that put a ``verdict`` in
    a sample's ``info`` (``code-tests``: ``pass``, ``wrong-answer``, ``timeout``, ``crash``, ``syntax-error``)."""
    verdicts = Counter(sample.info.get("verdict") for sample in samples)
    return {f"reward/verdict/{name}": count for name, count in sorted(verdicts.items()) if isinstance(name, str)}


def reward_metrics(samples: list[Sample]) -> dict[str, Any]:
    """``num_generated``, ``num_kept``, ``keep_rate`` and ``reward/*`` over the scored samples
    (``reward/metrics/NAME``: the mean of each sample metric the reward recorded).

    Failed samples (NaN reward) count in ``num_generated`` and ``reward/num_failed`` (split by reason) but not in
    the reward statistics; a statistic with no value is NaN.
    """
    rewards = [sample.reward for sample in samples if not math.isnan(sample.reward)]
    kept_rewards = [sample.reward for sample in samples if sample.kept]
    return {
        "num_generated": len(samples),
        "num_kept": len(kept_rewards),
        "keep_rate": len(kept_rewards) / len(samples) if samples else 0.0,
        "reward/mean": _mean(rewards),
        "reward/std": statistics.pstdev(rewards) if rewards else math.nan,
        "reward/min": min(rewards, default=math.nan),
        "reward/max": max(rewards, default=math.nan),
        "reward/kept_mean": _mean(kept_rewards),
        **failure_metrics(samples, "reward"),
        **verdict_metrics(samples),
        **sample_metric_means(samples, "reward"),
    }


def eval_metrics(samples: list[Sample]) -> dict[str, Any]:
    """``eval/reward``: the mean over the eval samples that were scored (NaN when none was), failed ones left out
    and counted in ``eval/num_failed``; ``eval/num_prompts``; and ``eval/metrics/NAME`` per sample metric."""
    rewards = [sample.reward for sample in samples if failure_reason(sample) is None]
    return {
        "eval/reward": _mean(rewards),
        "eval/num_prompts": len(samples),
        **failure_metrics(samples, "eval"),
        **sample_metric_means(samples, "eval"),
    }


def training_metrics(stats_per_epoch: list[dict[str, Any]], num_samples: int) -> dict[str, Any]:
    """``train/*`` from the ``trainer.step()`` statistics of each epoch (an empty list: nothing was trained).

    ``train/loss`` is the token-weighted mean over all epochs and ``train/tokens`` the label tokens trained.
    """
    tokens = sum(stats["num_tokens"] for stats in stats_per_epoch)
    loss_sum = sum(stats["loss"] * stats["num_tokens"] for stats in stats_per_epoch if stats["num_tokens"])
    last = stats_per_epoch[-1] if stats_per_epoch else {}
    grad_norm = last.get("grad_norm")
    return {
        "train/loss": loss_sum / tokens if tokens else math.nan,
        "train/tokens": tokens,
        "train/num_samples": num_samples,
        "train/num_updates": sum(stats["num_updates"] for stats in stats_per_epoch),
        "train/learning_rate": last.get("learning_rate", math.nan),
        "train/grad_norm": math.nan if grad_norm is None else grad_norm,
    }


def token_metrics(samples: list[Sample]) -> dict[str, Any]:
    """``generated_tokens`` (NaN unless the generator reported every sample's ``num_tokens``) and
    ``kept_per_1k_generated_tokens``: kept samples per 1000 generated tokens, the yield of the sampling budget."""
    counts = [sample.info.get("num_tokens") for sample in samples]
    tokens = math.nan if any(count is None for count in counts) else sum(counts)
    kept = sum(sample.kept for sample in samples)
    return {
        "generated_tokens": tokens,
        "kept_per_1k_generated_tokens": 1000 * kept / tokens if tokens else math.nan,
    }
