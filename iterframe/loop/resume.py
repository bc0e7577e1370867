"""What a loop checkpoint holds besides the trainer's own state, and how a resumed run picks it up, so that it
continues exactly as the uninterrupted run would have: same prompts, same replayed samples, same sampling seeds.

The trainer's checkpoint carries the weights, optimizer, scheduler and every process's torch / numpy / python
random state; ``loop_state.json`` carries the iteration, the prompt sampler's position, the replay buffer, the
metrics rows and each component's :meth:`~iterframe.plugins.components.Component.state_dict` (the ``hf``
generator's count of sampled batches, which its seeds follow).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import logging
from typing import Any, Optional

from iterframe.loop.run_state import (
    OutputDirError,
    claim_output_dir,
    latest_checkpoint,
    read_loop_state,
    truncate_run,
)
from iterframe.plugins.errors import blame

__all__ = ["LOOP_STATE_VERSION", "check_resumable", "claim_and_load", "loop_state", "restore_after_setup"]

LOOP_STATE_VERSION = 1


def loop_state(loop, iteration: int) -> dict[str, Any]:
    """The JSON-able state of ``loop`` after ``iteration`` finished."""
    return {
        "version": LOOP_STATE_VERSION,
        "iteration": iteration,
        "global_step": loop.trainer.state.global_step,
        "weights_only": bool(loop.trainer.args.save_only_model),
        "prompt_sampler": loop.sampler.state_dict(),
        "replay_buffer": loop.replay.state_dict(),
        "components": [
            {"kind": kind, "name": component.name, "state": component.state_dict()}
            for kind, component in loop._components_with_kinds()
        ],
        "metrics": loop.metrics,
        "config": dataclasses.asdict(loop.config),
    }


def claim_and_load(loop) -> tuple[int, Optional[str]]:
    """Claim the output directory (error / resume / overwrite) and, when resuming, load the newest checkpoint into
    the trainer, the prompt sampler, the replay buffer and the eval gate. Returns the first iteration to run and
    the checkpoint loaded (``None``: a fresh start)."""
    config = loop.config
    if loop.is_main_process:
        claim_output_dir(config.output_dir, config.existing_output, dataclasses.asdict(config))
    loop.trainer.accelerator.wait_for_everyone()
    if config.existing_output != "resume":
        return 0, None
    checkpoint = latest_checkpoint(config.output_dir)
    if checkpoint is None:  # the run stopped before its first checkpoint: start it over
        if loop.is_main_process:
            truncate_run(config.output_dir, -1)
        return 0, None
    state = read_loop_state(checkpoint)
    check_resumable(checkpoint, state)
    with _tied_weights_expected_missing(loop.trainer.model):
        loop.trainer.load_checkpoint(checkpoint)
    loop.sampler.load_state_dict(state["prompt_sampler"])
    loop.replay.load_state_dict(state["replay_buffer"])
    loop.metrics = list(state["metrics"])
    loop.gate.resume(loop.metrics, loop.trainer, config.output_dir, state["iteration"])
    if loop.is_main_process:
        truncate_run(config.output_dir, state["iteration"])
    return state["iteration"] + 1, checkpoint


def check_resumable(checkpoint: str, state: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint written with ``train.save_only_model: true``: it holds the weights but
    no optimizer state, learning-rate schedule or random state, so the run could not continue as it was."""
    if state.get("weights_only"):
        raise OutputDirError(
            f"Cannot resume from {checkpoint!r}: the run was started with train.save_only_model: true, so its "
            "checkpoints hold the weights only, without the optimizer (Adam) state, the learning-rate schedule's "
            "position or the random state a resumed run continues from. Start a new run from these weights "
            f"(--model {checkpoint}), or set train.save_only_model: false in runs you mean to resume."
        )


def restore_after_setup(loop, checkpoint: str) -> None:
    """After the components' ``setup()``: give each component its saved state (matched by position, kind and
    name; a component the checkpoint does not know starts afresh), and put every random generator back where the
    checkpoint left it (setting components up may have drawn from them)."""
    saved = read_loop_state(checkpoint).get("components", [])
    for position, (kind, component) in enumerate(loop._components_with_kinds()):
        if position < len(saved) and (saved[position]["kind"], saved[position]["name"]) == (kind, component.name):
            with blame(kind, component, None):
                component.load_state_dict(saved[position]["state"])
    loop.trainer._load_rng_state(checkpoint)


class _TiedKeysFilter(logging.Filter):
    """Drops transformers' "missing keys in the checkpoint" warning when every key it names is a tied weight
    (``lm_head.weight`` of a model that ties it to its embeddings is saved once, as the embeddings)."""

    _PREFIX = "There were missing keys in the checkpoint model loaded: "

    def __init__(self, tied_names: set[str]):
        super().__init__()
        self.tied_names = tied_names

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self._PREFIX):
            return True
        try:
            missing = ast.literal_eval(message[len(self._PREFIX) :].rstrip("."))
        except (ValueError, SyntaxError):
            return True
        return not (isinstance(missing, list) and missing and set(missing) <= self.tied_names)


def _tied_names(model) -> set[str]:
    """Names of parameters that share their tensor with a parameter of another name."""
    names_by_tensor: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names_by_tensor.setdefault(id(parameter), []).append(name)
    tied = set()
    for names in names_by_tensor.values():
        if len(names) > 1:
            tied.update(names)
    return tied


@contextlib.contextmanager
def _tied_weights_expected_missing(model):
    """Inside the block, transformers does not warn that a checkpoint lacks tied weights."""
    trainer_logger = logging.getLogger("transformers.trainer")
    quiet = _TiedKeysFilter(_tied_names(model))
    trainer_logger.addFilter(quiet)
    try:
        yield
    finally:
        trainer_logger.removeFilter(quiet)
