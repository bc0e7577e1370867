"""The training stage of an iteration, and the training states the loop returns to.

:func:`train_on` tokenizes an iteration's training samples and runs ``trainer.step()`` over them;
:func:`reset_to_base` gives ReST-EM its base weights back; a :class:`TrainingSnapshot` holds what an eval-gated
iteration restores when it is rolled back (weights, optimizer, schedule, step count, replay buffer).
"""

from __future__ import annotations

import copy
from typing import Any

from iterframe.loop.checks import check_batch
from iterframe.loop.distributed import shard
from iterframe.loop.metrics import training_metrics
from iterframe.loop.replay import ReplayBuffer
from iterframe.plugins.components import Sample, SampleTokenizer
from iterframe.plugins.errors import blame

__all__ = ["TrainingSnapshot", "reset_to_base", "train_on"]


def train_on(
    trainer, tokenizer: SampleTokenizer, hooks, progress, samples: list[Sample], iteration: int, epochs: int
) -> tuple[dict[str, Any], list]:
    """Tokenize ``samples`` and run ``epochs`` passes of ``trainer.step()`` over them; return ``train/*`` metrics
    and the ``after_step`` hooks' answers (``(plugin, metrics)`` pairs).

    Every process trains on its share; with fewer samples than processes, none trains (all agree).
    """
    accelerator = trainer.accelerator
    stats_per_epoch, step_metrics = [], []
    if samples and len(samples) >= accelerator.num_processes:
        local_samples = shard(samples, accelerator.process_index, accelerator.num_processes)
        with blame("tokenizer", tokenizer, iteration):
            batch = tokenizer.tokenize(local_samples)
            check_batch(tokenizer, batch, len(local_samples))
        hooks.call("before_step", iteration=iteration, batch=batch)
        progress.stage(f"iteration {iteration}: training on {len(samples)} samples")
        with progress.bar(epochs, "train") as bar:
            for _ in range(epochs):
                stats = trainer.step(
                    input_ids=batch["input_ids"],
                    attention_mask=batch.get("attention_mask"),
                    labels=batch.get("labels"),
                )
                stats_per_epoch.append(stats)
                step_metrics.extend(hooks.metrics("after_step", iteration=iteration, stats=stats))
                bar.update(1)
    return training_metrics(stats_per_epoch, len(samples)), step_metrics


def reset_to_base(trainer, base_state: dict[str, Any]) -> None:
    """ReST-EM: load the base weights and start a fresh optimizer and learning-rate schedule."""
    trainer.model.load_state_dict(base_state)
    trainer.optimizer.state.clear()
    trainer.lr_scheduler = None
    trainer.create_scheduler(num_training_steps=max(trainer.args.max_steps, 0))


class TrainingSnapshot:
    """A copy, in memory, of what training changes: the model's weights, the optimizer and learning-rate schedule
    states, the trainer's step count and the replay buffer. Costs about three copies of the weights with Adam."""

    def __init__(self, trainer, replay: ReplayBuffer):
        self.weights = {key: value.detach().clone() for key, value in trainer.model.state_dict().items()}
        self.optimizer = copy.deepcopy(trainer.optimizer.state_dict())
        scheduler = trainer.lr_scheduler
        self.scheduler = None if scheduler is None else copy.deepcopy(scheduler.state_dict())
        self.global_step = trainer.state.global_step
        self.replay = copy.deepcopy(replay.state_dict())

    def restore(self, trainer, replay: ReplayBuffer) -> None:
        """Put the trainer and the replay buffer back as they were when the snapshot was taken."""
        trainer.model.load_state_dict(self.weights)
        trainer.optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        if self.scheduler is not None and trainer.lr_scheduler is not None:
            trainer.lr_scheduler.load_state_dict(copy.deepcopy(self.scheduler))
        trainer.state.global_step = self.global_step
        replay.load_state_dict(copy.deepcopy(self.replay))
