"""Running a prepared run: load the model (with LoRA adapters when asked), save the config, run the loop, write
the merged model; stop cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

from iterframe.api.output_dir import remove_unstarted_run
from iterframe.api.preparation import PreparedRun
from iterframe.run_config import CONFIG_FILE, RunConfig, RunConfigError, save_run_config

__all__ = ["MERGED_DIR", "Terminated", "execute_run", "leave_process_group", "load_trainer", "stop_on_sigterm"]

#: Where ``peft.merge_final`` writes the merged model, inside ``final/``.
MERGED_DIR = "merged"


def _silence_libraries(quiet: bool) -> None:
    """No progress bars from transformers and datasets where none can be drawn (stderr redirected, or a quiet
    run), and no info logs from them in a quiet run."""
    from iterframe.loop.progress import bars_wanted

    if bars_wanted() and not quiet:
        return
    import datasets
    import transformers

    if quiet:
        transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _peft_config(run_config: RunConfig):
    """The ``peft.LoraConfig`` of ``run_config.peft`` (``None`` without adapters)."""
    if run_config.peft is None:
        return None
    from iterframe.engine.loading import load_config

    try:
        model_config = load_config(run_config.model, run_config.model_init_kwargs)
    except (OSError, ValueError, ImportError) as error:
        raise RunConfigError(f"Cannot load model {run_config.model!r}: {error}") from None
    return run_config.peft.lora_config(bool(getattr(model_config, "is_encoder_decoder", False)))


def load_trainer(run_config: RunConfig):
    """``IterativeSFTTrainer(model, args=..., peft_config=...)``; a model that fails to load, or adapters that do
    not fit it, are a :class:`RunConfigError`."""
    from iterframe.engine.trainer import IterativeSFTTrainer

    peft_config = _peft_config(run_config)
    try:
        return IterativeSFTTrainer(run_config.model, args=run_config.train, peft_config=peft_config)
    except (OSError, ValueError, ImportError) as error:
        if type(error).__module__.startswith("peft."):
            raise RunConfigError(
                f"Cannot add LoRA adapters to {run_config.model!r}: {error} Set peft.target_modules to names of "
                "the model's linear layers (e.g. q_proj,v_proj) or to all-linear."
            ) from None
        raise RunConfigError(f"Cannot load model {run_config.model!r}: {error}") from None


def execute_run(prepared: PreparedRun) -> list[dict[str, Any]]:
    """Load the model, save the resolved config to ``OUTPUT_DIR/config.yaml`` and run the loop.

    A new run that stops before its first iteration finished (a model that does not load, a component whose
    setup fails, Ctrl-C) leaves the output directory as it found it.

    Returns:
        The metrics rows of every finished iteration (restored ones included on resume).
    """
    from iterframe.loop.iterative_loop import IterativeLoop

    run_config = prepared.config
    output_dir = run_config.loop.output_dir
    existed = os.path.isdir(output_dir)
    _silence_libraries(run_config.loop.quiet)
    components = prepared.components
    try:
        trainer = load_trainer(run_config)
        loop = IterativeLoop(
            trainer,
            prepared.prompts,
            components["generator"],
            components["reward"],
            components["filters"],
            components["sample_tokenizer"],
            loggers=components["loggers"],
            eval_prompts=prepared.eval_prompts,
            config=run_config.loop,
            run_config=run_config.to_config(),
        )
        if loop.is_main_process:  # its claim of the folder removes temporary files, another's config among them
            save_run_config(run_config, os.path.join(output_dir, CONFIG_FILE))
        rows = loop.run()
        if run_config.peft is not None and run_config.peft.merge_final and rows:
            _save_merged_final(trainer, output_dir)
        return rows
    except BaseException:
        if run_config.loop.existing_output != "resume":
            remove_unstarted_run(output_dir, existed)
        raise


def _save_merged_final(trainer, output_dir: str) -> str:
    """Write ``final/merged/``: the base model with the trained adapters merged in, and the tokenizer."""
    from iterframe.engine.adapters import merged_copy
    from iterframe.loop.run_state import FINAL_DIR

    path = os.path.join(output_dir, FINAL_DIR, MERGED_DIR)
    if trainer.args.should_save:
        merged_copy(trainer.model, path)
        trainer.processing_class.save_pretrained(path)
    trainer.accelerator.wait_for_everyone()
    return path


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM; the run stops the way it does on Ctrl-C."""


@contextlib.contextmanager
def stop_on_sigterm():
    """Inside the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``), so a run that is told to
    stop keeps its finished iterations, discards the one in progress and exits with a message."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def leave_process_group() -> None:
    """Once every process has finished, end the run's process group (a no-op in a one-process run).

    A process that exits while the group's communication threads still run can abort ("terminate called without
    an active exception") and make the launcher report a finished run as failed.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
