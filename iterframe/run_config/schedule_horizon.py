"""The learning-rate schedule's horizon of a run: ``iterframe run`` knows its iterations, so a schedule that needs
``max_steps`` gets the most updates the run can make when ``train.max_steps`` is unset."""

from __future__ import annotations

import logging
import os

from iterframe.engine.schedule import missing_horizon, most_updates

__all__ = ["run_updates_bound", "set_schedule_horizon"]

logger = logging.getLogger(__name__)


def _samples_per_iteration(loop) -> list[int]:
    """The most samples each iteration trains on, before the replay buffer: every generated sample kept, or, for
    a run that trains on a recorded set (``train_from``), the kept samples of the set's iteration it trains on.
    A set that cannot be read counts as generated samples (the run refuses it before training)."""
    generated = [loop.prompts_per_iteration * loop.samples_per_prompt] * loop.iterations
    if not loop.train_from:
        return generated
    from iterframe.loop.sample_sets import SampleSetError, TrainingSet

    try:
        recorded = TrainingSet(loop.train_from, tokenizer_hash=None)
        return [sum(sample.kept for sample in recorded.samples(i)) for i in range(loop.iterations)]
    except (SampleSetError, OSError, IndexError, ValueError):
        return generated


def run_updates_bound(loop, train, num_processes: int = 1) -> int:
    """The most optimizer updates the schedule of a run sees: every generated sample kept (or, with
    ``train_from``, every kept sample of the recorded set) and the replay buffer full, ``train_epochs`` step()
    calls per iteration, over all ``iterations`` (the longest one with ``restart_from_base``, whose every
    iteration starts a fresh schedule)."""
    per_iteration = [
        most_updates(
            samples + loop.replay_buffer_size,
            train.per_device_train_batch_size,
            train.gradient_accumulation_steps,
            num_processes,
        )
        * loop.train_epochs
        for samples in _samples_per_iteration(loop)
    ]
    return max(1, max(per_iteration, default=0) if loop.restart_from_base else sum(per_iteration))


def set_schedule_horizon(loop, train) -> None:
    """When ``train`` asks for a schedule that needs ``max_steps`` and leaves it unset, set it to
    :func:`run_updates_bound` (and say so: with fewer kept samples the run ends before the schedule does)."""
    asked = missing_horizon(train)
    if not asked:
        return
    num_processes = int(os.environ.get("WORLD_SIZE", "1") or 1)
    train.max_steps = run_updates_bound(loop, train, num_processes)
    logger.warning(
        "train.max_steps is unset: %s runs over %d optimizer updates, the most %s can make (every sample kept, "
        "the replay buffer full); with fewer kept samples the run ends before the schedule does. Set "
        "train.max_steps to choose the horizon.",
        asked,
        train.max_steps,
        "one iteration" if loop.restart_from_base else f"{loop.iterations} iterations",
    )
