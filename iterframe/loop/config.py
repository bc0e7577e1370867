"""The loop's options (:class:`LoopConfig`, the ``loop:`` section of a run config) and its prompts
(:class:`PromptRecord`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from iterframe.loop.run_state import EXISTING_OUTPUT_MODES
from iterframe.plugins.components import Prompt

__all__ = ["LoopConfig", "PromptRecord"]


@dataclasses.dataclass
class LoopConfig:
    """Options of the iteration loop (the ``loop:`` section of a run config)."""

    output_dir: str = dataclasses.field(
        metadata={"help": "Where metrics.jsonl, iterations/, checkpoints/ and final/ are written."}
    )
    iterations: int = dataclasses.field(
        default=5, metadata={"help": "Iterations to run (in total, across resumes)."}
    )
    prompts_per_iteration: int = dataclasses.field(
        default=16,
        metadata={"help": "Prompts drawn per iteration: shuffled, without replacement until the set is used up."},
    )
    samples_per_prompt: int = dataclasses.field(
        default=4, metadata={"help": "Completions generated per prompt (K)."}
    )
    until_accepted: int = dataclasses.field(
        default=0,
        metadata={
            "help": "Adaptive sampling: sample each prompt in rounds until this many of its samples pass the "
            "filters or its samples_per_prompt budget is spent (0: off, every prompt gets samples_per_prompt)."
        },
    )
    samples_per_round: int = dataclasses.field(
        default=0,
        metadata={"help": "With until_accepted: samples per unsolved prompt in each round (0: until_accepted)."},
    )
    redistribute: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "With until_accepted: the budget solved prompts did not use goes to unsolved prompts of the "
            "same iteration (the iteration still generates at most prompts x samples_per_prompt)."
        },
    )
    train_from: Optional[str] = dataclasses.field(
        default=None,
        metadata={
            "help": "Train on a recorded sample set instead of generating: iteration i trains on the kept samples "
            "of the i-th iteration of this run or `iterframe rescore` output directory (none: generate)."
        },
    )
    train_epochs: int = dataclasses.field(
        default=1, metadata={"help": "Passes of trainer.step() over the iteration's kept (+ replayed) samples."}
    )
    replay_buffer_size: int = dataclasses.field(
        default=0,
        metadata={
            "help": "Kept samples carried over to later iterations and trained on again, newest first (0: off)."
        },
    )
    replay_distinct: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "The replay buffer holds each (prompt, completion) once and an iteration trains on each once: "
            "a sample kept again replaces its older copy, so easy prompts do not crowd out hard ones."
        },
    )
    restart_from_base: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "ReST-EM: every iteration fine-tunes the base model (fresh optimizer) on that iteration's "
            "data, instead of continuing from the previous iteration's weights."
        },
    )
    max_failed_rate: float = dataclasses.field(
        default=0.5,
        metadata={
            "help": "Stop the run when more than this fraction of an iteration's samples fail their scoring "
            "(error, timeout or no score), naming the reward and some of its errors (1: never stop)."
        },
    )
    eval_every: int = dataclasses.field(
        default=1,
        metadata={"help": "Evaluate on the eval prompts every N iterations and after the last one (0: never)."},
    )
    initial_eval: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "Evaluate the starting model before iteration 0 (eval/initial_reward), when there are eval "
            "prompts and eval_every > 0."
        },
    )
    accept_if_eval_drop_below: Optional[float] = dataclasses.field(
        default=None,
        metadata={
            "help": "Roll back an iteration (weights, optimizer, replay buffer) whose eval/reward is more than "
            "this below the last accepted one (none: off; needs eval prompts and eval_every: 1)."
        },
    )
    early_stop_patience: int = dataclasses.field(
        default=0,
        metadata={
            "help": "Stop after this many iterations without a new best eval/reward; the best model is kept in "
            "best/ (0: off; needs eval prompts)."
        },
    )
    save_every: int = dataclasses.field(
        default=1, metadata={"help": "Write a loop checkpoint every N iterations and after the last one."}
    )
    keep_checkpoints: int = dataclasses.field(
        default=1, metadata={"help": "Loop checkpoints kept on disk, newest first (0: keep all)."}
    )
    seed: int = dataclasses.field(
        default=0, metadata={"help": "Seed of the prompt order (and of the run context)."}
    )
    shuffle_prompts: bool = dataclasses.field(
        default=True, metadata={"help": "Shuffle the prompt order every epoch (false: dataset order)."}
    )
    existing_output: str = dataclasses.field(
        default="error",
        metadata={
            "help": "When output_dir already holds a run: 'error' refuses, 'resume' continues after its last "
            "checkpointed iteration, 'overwrite' replaces it.",
            "choices": list(EXISTING_OUTPUT_MODES),
        },
    )
    quiet: bool = dataclasses.field(
        default=False,
        metadata={"help": "No progress bars and no per-iteration output; the closing summary is its last lines."},
    )
    verbose: bool = dataclasses.field(
        default=False,
        metadata={"help": "The console logger prints every metric of each iteration as a table (format=table)."},
    )

    def __post_init__(self):
        if not self.output_dir:
            raise ValueError("output_dir is required: the folder where the run writes its artifacts.")
        for name, minimum in (
            ("iterations", 0),
            ("prompts_per_iteration", 1),
            ("samples_per_prompt", 1),
            ("until_accepted", 0),
            ("samples_per_round", 0),
            ("train_epochs", 1),
            ("replay_buffer_size", 0),
            ("eval_every", 0),
            ("save_every", 1),
            ("keep_checkpoints", 0),
            ("early_stop_patience", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
        rate = self.max_failed_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"max_failed_rate must be a fraction between 0 and 1, got {self.max_failed_rate!r}.")
        if self.quiet and self.verbose:
            raise ValueError("quiet and verbose exclude each other (-q prints less, -v more); pass one of them.")
        self._check_adaptive_sampling()
        self._check_eval_gating()
        if self.existing_output not in EXISTING_OUTPUT_MODES:
            raise ValueError(
                f"existing_output={self.existing_output!r} is not one of {list(EXISTING_OUTPUT_MODES)}."
            )

    def _check_adaptive_sampling(self) -> None:
        if self.until_accepted > self.samples_per_prompt:
            raise ValueError(
                f"until_accepted ({self.until_accepted}) is above samples_per_prompt ({self.samples_per_prompt}): "
                "no prompt could ever be solved within its budget. Lower it or raise samples_per_prompt."
            )
        for name in ("samples_per_round", "redistribute"):
            if getattr(self, name) and not self.until_accepted:
                raise ValueError(f"{name} works with adaptive sampling only: set until_accepted too (e.g. 1).")
        if self.train_from and os.path.abspath(self.train_from) == os.path.abspath(self.output_dir):
            raise ValueError(
                f"train_from {self.train_from!r} is the run's own output_dir; the run would write over the "
                "samples it trains on. Choose another output_dir."
            )
        if self.train_from and self.until_accepted:
            raise ValueError(
                "train_from trains on recorded samples and generates none, so until_accepted has nothing to do: "
                "leave one of them out."
            )

    def _check_eval_gating(self) -> None:
        if self.early_stop_patience and not self.eval_every:
            raise ValueError("early_stop_patience judges iterations by their eval: set eval_every to 1 or more.")
        drop = self.accept_if_eval_drop_below
        if drop is None:
            return
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not drop >= 0:
            raise ValueError(f"accept_if_eval_drop_below must be a number >= 0 (or none), got {drop!r}.")
        if self.eval_every != 1:
            raise ValueError(
                "accept_if_eval_drop_below needs an eval after every iteration, but eval_every is "
                f"{self.eval_every}: set eval_every to 1."
            )


@dataclasses.dataclass
class PromptRecord:
    """One prompt of the run's prompt set.

    Args:
        prompt_id: stable index of the prompt in its set (recorded with every sample).
        prompt: plain text or a list of chat messages.
        reference: the reference answer handed to the reward, if any.
        extra: other dataset columns, kept in each sample's ``info["extra"]``.
    """

    prompt_id: int
    prompt: Prompt
    reference: Any = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
