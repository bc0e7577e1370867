"""A run's output directory: claiming it (error / resume / overwrite), loop checkpoints and the final model.

Layout, besides the artifacts of :mod:`iterframe.loop.artifacts`::

    OUTPUT_DIR/run.json                                    marks the directory as a run (loop settings, version)
    OUTPUT_DIR/checkpoints/iteration-NNNNNN/               model, tokenizer, optimizer, scheduler, RNG, trainer
                                            loop_state.json    state, and the loop's own state (JSON), written last
    OUTPUT_DIR/final/                                      model + tokenizer + model card (``from_pretrained``)
    OUTPUT_DIR/best/                                       the same for the best eval so far, and best.json

A checkpoint is written to ``checkpoints/.tmp-iteration-NNNNNN`` and renamed when complete, and its
``loop_state.json`` is written last, so a resumed run only ever trusts complete checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from typing import Any, Optional

from iterframe import __version__
from iterframe.engine.file_modes import follow_umask
from iterframe.engine.progress_bars import without_transformers_progress_bars
from iterframe.loop.artifacts import METRICS_FILE, atomic_write_json, truncate_metrics

__all__ = [
    "BEST_DIR",
    "BEST_FILE",
    "CHECKPOINTS_DIR",
    "EXISTING_OUTPUT_MODES",
    "FINAL_DIR",
    "LOOP_STATE_FILE",
    "RUN_FILE",
    "OutputDirError",
    "checkpoint_dir",
    "claim_output_dir",
    "complete_loop_checkpoint",
    "latest_checkpoint",
    "read_best",
    "read_loop_state",
    "read_run_file",
    "record_in_run_file",
    "remove_temporary_files",
    "remove_unfinished_checkpoints",
    "save_best_model",
    "save_final_model",
    "truncate_run",
    "write_training_state",
]

RUN_FILE = "run.json"
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
BEST_DIR = "best"
BEST_FILE = "best.json"
LOOP_STATE_FILE = "loop_state.json"
ITERATIONS_DIR = "iterations"
EXISTING_OUTPUT_MODES = ("error", "resume", "overwrite")

#: What a run writes into its output directory; ``overwrite`` removes exactly these, nothing else.
RUN_ARTIFACTS = (RUN_FILE, METRICS_FILE, ITERATIONS_DIR, CHECKPOINTS_DIR, FINAL_DIR, BEST_DIR)
#: What else a run leaves there by default, which ``overwrite`` removes too: the ``tensorboard`` and ``wandb``
#: loggers' folders, transformers' ``runs`` logging folder, and the trainer's own ``checkpoint-N`` folders
#: (written by runs of older versions, whose trainer kept its ``save_steps``).
RUN_SIDE_OUTPUTS = ("tensorboard", "wandb", "runs")
_TRAINER_CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+$")

_CHECKPOINT_NAME = re.compile(r"^iteration-(\d{6,})$")
_TEMP_PREFIX = ".tmp-"


class OutputDirError(ValueError):
    """The output directory cannot be used as asked (a run is there and neither resume nor overwrite was
    chosen, or there is nothing to resume)."""


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _existing_artifacts(output_dir: str) -> list[str]:
    return [name for name in RUN_ARTIFACTS if os.path.lexists(os.path.join(output_dir, name))]


def _side_outputs(output_dir: str) -> list[str]:
    return [
        name
        for name in sorted(os.listdir(output_dir))
        if name in RUN_SIDE_OUTPUTS or _TRAINER_CHECKPOINT_NAME.match(name)
    ]


def claim_output_dir(output_dir: str, existing_output: str, loop_settings: dict[str, Any]) -> Optional[str]:
    """Make ``output_dir`` ready for a run and return the checkpoint to resume from (``None``: start afresh).

    Args:
        output_dir: the run's output directory (created when missing).
        existing_output: what to do when it already holds a run: ``"error"`` refuses, ``"resume"`` continues
            it, ``"overwrite"`` removes the run's artifacts and side outputs (and only those) first.
        loop_settings: written to ``run.json`` when a new run starts there.

    Raises:
        OutputDirError: a run is there and ``existing_output="error"``; or ``"resume"`` was asked of a
            directory that holds no run.
    """
    if existing_output not in EXISTING_OUTPUT_MODES:
        raise ValueError(f"existing_output={existing_output!r} is not one of {list(EXISTING_OUTPUT_MODES)}.")
    found = _existing_artifacts(output_dir) if os.path.isdir(output_dir) else []
    if existing_output == "resume":
        if RUN_FILE not in found:
            raise OutputDirError(
                f"Nothing to resume in {output_dir!r}: it holds no iterframe run (no {RUN_FILE}). Start a new run "
                "there without --resume (existing_output='error'), or point --output-dir at the run to continue."
            )
        if read_run_file(output_dir).get("rescored_from"):
            raise OutputDirError(
                f"{output_dir!r} holds samples `iterframe rescore` wrote, not a run to resume: train on them in a "
                f"new run with --train-from {output_dir}."
            )
        remove_unfinished_checkpoints(output_dir)
        remove_temporary_files(output_dir)
        return latest_checkpoint(output_dir)
    if found:
        if existing_output == "error":
            raise OutputDirError(
                f"{output_dir!r} already holds a run ({', '.join(found)}). Use --resume to continue it or "
                "--overwrite to replace it (existing_output='resume' or 'overwrite'), or choose another "
                "--output-dir."
            )
        for name in found + _side_outputs(output_dir):
            _remove(os.path.join(output_dir, name))
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_json(
        os.path.join(output_dir, RUN_FILE),
        {"iterframe_version": __version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loop": loop_settings},
    )
    return None


def remove_unfinished_checkpoints(output_dir: str) -> None:
    """Remove the checkpoints under their temporary names: a run that failed (or was killed) while writing one."""
    directory = os.path.join(output_dir, CHECKPOINTS_DIR)
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith(_TEMP_PREFIX):
                _remove(os.path.join(directory, name))


def remove_temporary_files(output_dir: str) -> list[str]:
    """Remove the hidden ``.NAME.*.tmp`` files that an atomic write leaves behind when the process is killed
    mid-write, anywhere under ``output_dir``; return their paths."""
    removed = []
    for folder, _dirs, files in os.walk(output_dir):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                path = os.path.join(folder, name)
                os.remove(path)
                removed.append(path)
    return removed


# --- loop checkpoints ---------------------------------------------------------------------------------------


def checkpoint_dir(output_dir: str, iteration: int) -> str:
    """``OUTPUT_DIR/checkpoints/iteration-NNNNNN``."""
    return os.path.join(output_dir, CHECKPOINTS_DIR, f"iteration-{iteration:06d}")


def _complete_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """``(iteration, path)`` of every complete checkpoint (one with ``loop_state.json``), oldest first."""
    directory = os.path.join(output_dir, CHECKPOINTS_DIR)
    found = []
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            match = _CHECKPOINT_NAME.match(name)
            path = os.path.join(directory, name)
            if match and os.path.isfile(os.path.join(path, LOOP_STATE_FILE)):
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> Optional[str]:
    """The newest complete loop checkpoint in ``output_dir``, or ``None``."""
    found = _complete_checkpoints(output_dir)
    return found[-1][1] if found else None


def read_loop_state(checkpoint: str) -> dict[str, Any]:
    """The loop state (JSON) of a checkpoint."""
    with open(os.path.join(checkpoint, LOOP_STATE_FILE), encoding="utf-8") as handle:
        return json.load(handle)


def _save_training_state(trainer, path: str) -> None:
    """Weights + tokenizer, optimizer, scheduler, grad scaler, RNG and trainer state, in the layout
    ``IterativeSFTTrainer.load_checkpoint`` reads."""
    trainer.save_model(path)
    if not trainer.args.save_only_model:
        trainer._save_optimizer_and_scheduler(path)
        trainer._save_scaler(path)
        trainer._save_rng_state(path)
    if trainer.args.should_save:
        trainer.state.save_to_json(os.path.join(path, "trainer_state.json"))


def _move_into_place(temp_path: str, path: str) -> None:
    """Rename a completely written directory to its final name, replacing an older one of that name."""
    if os.path.lexists(path):
        stale = os.path.join(os.path.dirname(path), _TEMP_PREFIX + "stale-" + os.path.basename(path))
        _remove(stale)
        os.replace(path, stale)
        os.replace(temp_path, path)
        _remove(stale)
    else:
        os.replace(temp_path, path)


def _temporary_checkpoint_dir(output_dir: str, iteration: int) -> str:
    path = checkpoint_dir(output_dir, iteration)
    return os.path.join(os.path.dirname(path), _TEMP_PREFIX + os.path.basename(path))


def write_training_state(trainer, output_dir: str, iteration: int) -> None:
    """The first half of a loop checkpoint: the trainer's state written under the checkpoint's temporary name
    (every process writes its part). :func:`complete_loop_checkpoint` finishes it."""
    temp_path = _temporary_checkpoint_dir(output_dir, iteration)
    if trainer.args.should_save:
        _remove(temp_path)
    trainer.accelerator.wait_for_everyone()
    with without_transformers_progress_bars():
        _save_training_state(trainer, temp_path)
    trainer.accelerator.wait_for_everyone()


def complete_loop_checkpoint(
    trainer, output_dir: str, iteration: int, loop_state: dict[str, Any], keep: int = 1
) -> str:
    """The second half: ``loop_state.json`` written last, the folder renamed into place, and only the newest
    ``keep`` checkpoints kept (0: all); return its path. Only the main process writes."""
    path = checkpoint_dir(output_dir, iteration)
    if trainer.args.should_save:
        temp_path = _temporary_checkpoint_dir(output_dir, iteration)
        atomic_write_json(os.path.join(temp_path, LOOP_STATE_FILE), loop_state)
        follow_umask(temp_path)
        _move_into_place(temp_path, path)
        if keep > 0:
            for _old_iteration, old_path in _complete_checkpoints(output_dir)[:-keep]:
                _remove(old_path)
    trainer.accelerator.wait_for_everyone()
    return path


def save_final_model(
    trainer, output_dir: str, model_card: Optional[dict[str, Any]] = None, name: str = FINAL_DIR
) -> str:
    """Write ``OUTPUT_DIR/final`` (model, tokenizer, model card) through a temporary directory; return its path.

    Args:
        model_card: keyword arguments of ``trainer.create_model_card`` (``model_name``, ``dataset_name``,
            ``tags``); the model is named after the run's folder unless ``model_name`` is given.
        name: the folder's name in ``output_dir`` (``best`` for the best model).
    """
    path = os.path.join(output_dir, name)
    temp_path = os.path.join(output_dir, _TEMP_PREFIX + name)
    is_main = trainer.args.should_save
    if is_main:
        _remove(temp_path)
    trainer.accelerator.wait_for_everyone()
    with without_transformers_progress_bars():
        trainer.save_model(temp_path)
    if is_main:
        card = {"model_name": os.path.basename(os.path.abspath(output_dir)), **(model_card or {})}
        trainer.create_model_card(output_dir=temp_path, **card)
        follow_umask(temp_path)
        _move_into_place(temp_path, path)
    trainer.accelerator.wait_for_everyone()
    return path


def save_best_model(trainer, output_dir: str, iteration: int, eval_reward: float) -> str:
    """Write ``OUTPUT_DIR/best``: the model as :func:`save_final_model` writes it, and ``best.json`` naming the
    iteration (-1: the starting model) and its ``eval/reward``."""
    path = save_final_model(trainer, output_dir, name=BEST_DIR)
    if trainer.args.should_save:
        atomic_write_json(os.path.join(path, BEST_FILE), {"iteration": iteration, "eval/reward": eval_reward})
    trainer.accelerator.wait_for_everyone()
    return path


def read_best(output_dir: str) -> Optional[dict[str, Any]]:
    """``best/best.json`` of a run (``iteration``, ``eval/reward``), or ``None`` when there is none."""
    try:
        with open(os.path.join(output_dir, BEST_DIR, BEST_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def read_run_file(output_dir: str) -> dict[str, Any]:
    """The run's ``run.json`` (``{}`` when it has none or it does not read as a JSON object)."""
    try:
        with open(os.path.join(output_dir, RUN_FILE), encoding="utf-8") as handle:
            run = json.load(handle)
    except (OSError, ValueError):
        return {}
    return run if isinstance(run, dict) else {}


def record_in_run_file(output_dir: str, values: dict[str, Any]) -> None:
    """Add ``values`` to the run's ``run.json`` (rewritten atomically)."""
    atomic_write_json(os.path.join(output_dir, RUN_FILE), {**read_run_file(output_dir), **values})


def truncate_run(output_dir: str, last_iteration: int) -> list[dict[str, Any]]:
    """Forget iterations after ``last_iteration`` (``-1``: all): their ``iterations/`` folders and metrics rows.

    Returns the metrics rows that remain.
    """
    directory = os.path.join(output_dir, ITERATIONS_DIR)
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if not name.isdigit() or int(name) > last_iteration:
                _remove(os.path.join(directory, name))
    return truncate_metrics(os.path.join(output_dir, METRICS_FILE), last_iteration)
