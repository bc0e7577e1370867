"""``iterframe run``: resolve the config, validate every input, then run the generate -> score -> filter -> train
loop.

Nothing is written before every check has passed: component names and options, the dataset and its columns,
the output directory (writable, and the existing-output policy) and the model, so a bad input leaves the disk as
it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import tempfile
import threading
import traceback
from typing import Any, Optional

import click

from iterframe.engine.peft_settings import PEFT_METHODS
from iterframe.run_config.resolve import (
    CONFIG_FILE,
    ComponentSpec,
    RunConfig,
    RunConfigError,
    apply_flags,
    apply_overrides,
    load_config_file,
    resolve_run_config,
    save_run_config,
)

__all__ = [
    "PreparedRun",
    "Terminated",
    "check_output_dir",
    "command",
    "execute_run",
    "prepare_run",
    "stop_on_sigterm",
]

#: The logger that prints the per-iteration table; ``--quiet`` leaves it out.
CONSOLE_LOGGER = "console"
#: Where ``peft.merge_final`` writes the merged model, inside ``final/``.
MERGED_DIR = "merged"


@dataclasses.dataclass
class PreparedRun:
    """A validated run: its config, prompts and built components (the trainer comes last, in ``execute_run``)."""

    config: RunConfig
    prompts: list
    eval_prompts: Optional[list]
    components: dict[str, Any]  # generator, reward, tokenizer: one each; filters, loggers: lists


# --- the output directory -----------------------------------------------------------------------------------


def check_output_dir(output_dir: str, existing_output: str) -> None:
    """Check the output directory against the existing-output policy and prove it is writable, changing nothing.

    A folder "holds a run" when it has any of the run's artifacts (:data:`iterframe.loop.run_state.RUN_ARTIFACTS`).
    Writability is proven by creating the folder (and missing parents) and a probe file, then removing them.

    Raises:
        RunConfigError: the path is a file, is not writable, holds a run while ``existing_output`` is
            ``"error"``, or holds none while it is ``"resume"``.
    """
    from iterframe.loop.run_state import RUN_ARTIFACTS, RUN_FILE

    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise RunConfigError(f"Output directory {output_dir!r} is a file; choose another --output-dir.")
    found = [name for name in RUN_ARTIFACTS if os.path.lexists(os.path.join(output_dir, name))]
    if found and existing_output == "error":
        raise RunConfigError(
            f"Output directory {output_dir!r} already holds a run ({', '.join(found)}). Pass --resume to continue "
            "it, --overwrite to replace it, or choose another --output-dir."
        )
    if RUN_FILE not in found and existing_output == "resume":
        raise RunConfigError(
            f"Nothing to resume in {output_dir!r}: it holds no iterframe run (no {RUN_FILE}). Leave out --resume "
            "to start a run there, or point --output-dir at the run to continue."
        )
    created, path = [], output_dir
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    try:
        os.makedirs(output_dir, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=output_dir, prefix=".iterframe-write-probe-")
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or error
        raise RunConfigError(
            f"Cannot write to output directory {output_dir!r}: {reason}. Make it writable or choose another "
            "--output-dir."
        ) from None
    finally:
        for folder in created:  # deepest first
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)


# --- preparing ----------------------------------------------------------------------------------------------


def _built(spec: ComponentSpec) -> tuple[ComponentSpec, Any]:
    """Build the component of ``spec``; return it with ``spec`` completed by every option's resolved value."""
    from iterframe.plugins.options import option_infos
    from iterframe.plugins.registry import create_component

    component = create_component(spec.kind, spec.name, spec.options)
    options = {info.name: getattr(component.options, info.name) for info in option_infos(type(component.options))}
    return ComponentSpec(spec.kind, spec.name, options), component


def prepare_run(run_config: RunConfig) -> PreparedRun:
    """Validate everything a run needs without writing anything; load the prompts and build the components.

    Raises:
        ValueError: a bad output directory, dataset, component name or option (the subclass and message say
            which).
        PluginLoadError: an installed plugin failed to import.
    """
    from iterframe.loop.datasets import load_prompt_sets
    from iterframe.plugins.manager import check_plugin_load_errors

    check_plugin_load_errors()
    check_output_dir(run_config.loop.output_dir, run_config.loop.existing_output)
    prompts, eval_prompts = load_prompt_sets(run_config.dataset, seed=run_config.loop.seed)
    run_config = run_config.with_default_tokenizer(any(not isinstance(record.prompt, str) for record in prompts))
    generator_spec, generator = _built(run_config.generator)
    reward_spec, reward = _built(run_config.reward)
    filters = [_built(spec) for spec in run_config.filters]
    tokenizer_spec, tokenizer = _built(run_config.tokenizer)
    loggers = [_built(spec) for spec in run_config.loggers]
    run_config = dataclasses.replace(
        run_config,
        generator=generator_spec,
        reward=reward_spec,
        filters=[spec for spec, _ in filters],
        tokenizer=tokenizer_spec,
        loggers=[spec for spec, _ in loggers],
    )
    quiet = run_config.loop.quiet
    components = {
        "generator": generator,
        "reward": reward,
        "filters": [component for _, component in filters],
        "tokenizer": tokenizer,
        # --quiet leaves the console table out of this run (the saved config keeps the logger for later runs)
        "loggers": [logger for spec, logger in loggers if not (quiet and spec.name == CONSOLE_LOGGER)],
    }
    return PreparedRun(run_config, prompts, eval_prompts, components)


# --- running ------------------------------------------------------------------------------------------------


def _silence_libraries() -> None:
    """No progress bars or info logs from transformers and datasets (``--quiet``)."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _peft_config(run_config: RunConfig):
    """The ``peft.LoraConfig`` of the run's ``peft:`` section, or ``None`` for full fine-tuning."""
    if run_config.peft is None:
        return None
    from transformers import AutoConfig

    try:
        model_config = AutoConfig.from_pretrained(run_config.model)
    except (OSError, ValueError) as error:
        raise RunConfigError(f"Cannot load model {run_config.model!r}: {error}") from None
    return run_config.peft.lora_config(bool(getattr(model_config, "is_encoder_decoder", False)))


def _load_trainer(run_config: RunConfig):
    """``IterativeSFTTrainer(model, args=..., peft_config=...)``; a model that fails to load, or adapters that do
    not fit it, are a :class:`RunConfigError`."""
    from iterframe.engine.trainer import IterativeSFTTrainer

    peft_config = _peft_config(run_config)
    try:
        return IterativeSFTTrainer(run_config.model, args=run_config.train, peft_config=peft_config)
    except (OSError, ValueError) as error:
        if type(error).__module__.startswith("peft."):
            raise RunConfigError(
                f"Cannot add LoRA adapters to {run_config.model!r}: {error} Set peft.target_modules to names of "
                "the model's linear layers (e.g. q_proj,v_proj) or to all-linear."
            ) from None
        raise RunConfigError(f"Cannot load model {run_config.model!r}: {error}") from None


def _remove_unstarted_run(output_dir: str, existed: bool) -> None:
    """Remove what a new run wrote when it stopped before finishing an iteration (nothing there to resume), so
    the same command can simply be run again; the folder itself goes too when the run created it."""
    from iterframe.loop.artifacts import METRICS_FILE, read_metrics
    from iterframe.loop.run_state import RUN_ARTIFACTS

    if not os.path.isdir(output_dir) or read_metrics(os.path.join(output_dir, METRICS_FILE)):
        return
    for name in (*RUN_ARTIFACTS, CONFIG_FILE):
        path = os.path.join(output_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
    if not existed and not os.listdir(output_dir):
        os.rmdir(output_dir)


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
    if run_config.loop.quiet:
        _silence_libraries()
    components = prepared.components
    try:
        trainer = _load_trainer(run_config)
        loop = IterativeLoop(
            trainer,
            prepared.prompts,
            components["generator"],
            components["reward"],
            components["filters"],
            components["tokenizer"],
            loggers=components["loggers"],
            eval_prompts=prepared.eval_prompts,
            config=run_config.loop,
            run_config=run_config.to_config(),
        )
        save_run_config(run_config, os.path.join(output_dir, CONFIG_FILE))
        rows = loop.run()
        if run_config.peft is not None and run_config.peft.merge_final and rows:
            _save_merged_final(trainer, output_dir)
        return rows
    except BaseException:
        if run_config.loop.existing_output != "resume":
            _remove_unstarted_run(output_dir, existed)
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


# --- the command --------------------------------------------------------------------------------------------


def _base_config(config_file: Optional[str], flags: dict[str, Any], existing_output: str) -> tuple[dict, str]:
    """The config the flags apply to, and what it is: the file, a resumed run's saved config, or the demo."""
    if config_file:
        return load_config_file(config_file), config_file
    if flags.get("model") or flags.get("dataset"):
        return {}, "flags"
    saved = os.path.join(flags.get("output_dir") or "", CONFIG_FILE)
    if existing_output == "resume" and flags.get("output_dir") and os.path.isfile(saved):
        return load_config_file(saved), saved
    from iterframe.demo import demo_run_spec

    return demo_run_spec(), "demo"


def _where_the_run_stands(prepared: PreparedRun) -> str:
    """After a failure: whether finished iterations are there to resume."""
    from iterframe.loop.artifacts import METRICS_FILE, read_metrics

    output_dir = prepared.config.loop.output_dir
    if read_metrics(os.path.join(output_dir, METRICS_FILE)):
        return f"\nFinished iterations are kept in {output_dir}; add --resume to the command to continue the run."
    return ""


@click.command("run", context_settings={"max_content_width": 110})
@click.argument("config_file", metavar="[CONFIG.yaml]", required=False, type=click.Path(dir_okay=False))
@click.option("--model", metavar="PATH_OR_ID", help="Model folder or Hub id to fine-tune.")
@click.option(
    "--model-init-kwargs",
    metavar="JSON",
    help='Keyword arguments for from_pretrained, as a JSON object, e.g. \'{"dtype": "float32"}\'.',
)
@click.option(
    "--dataset",
    metavar="PATH_OR_ID",
    help="Prompts: a .json/.jsonl/.csv/.parquet file, a save_to_disk folder, or a Hub id.",
)
@click.option(
    "--prompt-column", metavar="NAME", help="Column holding the prompts (text or chat messages). [prompt]"
)
@click.option(
    "--reference-column",
    metavar="NAME",
    help="Column holding reference answers for the reward. [reference, if any]",
)
@click.option("--split", metavar="NAME", help="Dataset split to train on. [train]")
@click.option("--eval-split", metavar="NAME", help="Dataset split holding the eval prompts.")
@click.option("--eval-dataset", metavar="PATH_OR_ID", help="Separate file, folder or Hub id of eval prompts.")
@click.option("--eval-fraction", type=float, help="Hold out this fraction of the prompts for eval.")
@click.option("--generator", metavar="NAME", help="Generator component. [hf]")
@click.option("--reward", metavar="NAME", help="Reward component, e.g. answer-match or python.")
@click.option("--filter", "filters", metavar="NAME", multiple=True, help="Filter component; repeat for a chain.")
@click.option(
    "--tokenizer", metavar="NAME", help="Sample tokenizer. [chat for chat prompts, else completion-only]"
)
@click.option("--logger", "loggers", metavar="NAME", multiple=True, help="Logger component; repeat. [console]")
@click.option(
    "--peft",
    type=click.Choice(PEFT_METHODS),
    help="Train adapters instead of the full model; options via --set peft.r=8, peft.alpha=16, peft.dropout, "
    "peft.target_modules=q_proj,v_proj, peft.merge_final=true.",
)
@click.option("--iterations", type=click.IntRange(min=1), metavar="N", help="Iterations to run.")
@click.option(
    "--prompts-per-iteration", type=click.IntRange(min=1), metavar="N", help="Prompts drawn per iteration."
)
@click.option(
    "--samples-per-prompt", type=click.IntRange(min=1), metavar="K", help="Completions generated per prompt."
)
@click.option("--seed", type=int, help="Seed of prompt order, sampling, eval hold-out and training.")
@click.option("--output-dir", metavar="DIR", help="Where the run writes metrics, samples and checkpoints.")
@click.option("--resume", is_flag=True, help="Continue the run in --output-dir after its last finished iteration.")
@click.option("--overwrite", is_flag=True, help="Replace the run in --output-dir.")
@click.option(
    "--set",
    "overrides",
    metavar="KEY=VALUE",
    multiple=True,
    help="Override any config key, e.g. train.learning_rate=1e-4, generator.temperature=0.7, "
    "filter.top-fraction.fraction=0.25, loop.replay_buffer_size=64. Repeatable; applied last.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-iteration table.")
def command(config_file, overrides, resume, overwrite, **flags):
    """Fine-tune a model iteratively: generate completions, score them, keep the best, train on them, repeat.

    Settings come from CONFIG.yaml (see docs/config.md), then flags, then --set overrides. With no config, model
    or dataset, runs the built-in offline demo (flags still apply, e.g. --iterations 2 --output-dir DIR).
    """
    if resume and overwrite:
        raise click.UsageError(
            "--resume and --overwrite exclude each other: --resume continues the run in --output-dir, "
            "--overwrite deletes it and starts again. Pass one of them."
        )
    from iterframe.plugins.errors import ComponentError
    from iterframe.plugins.manager import PluginLoadError

    existing_output = "resume" if resume else "overwrite" if overwrite else "error"
    try:
        base, source = _base_config(config_file, flags, existing_output)
        config = apply_overrides(apply_flags(base, **flags), list(overrides))
        prepared = prepare_run(resolve_run_config(config, existing_output))
    except (ValueError, PluginLoadError) as error:
        raise click.ClickException(str(error)) from None
    if source == "demo" and not prepared.config.loop.quiet:
        click.echo("No config, --model or --dataset given: running the built-in demo.", err=True)
    try:
        with stop_on_sigterm():
            rows = execute_run(prepared)
    except ValueError as error:  # errors for people (bad model, component setup, reward output): no traceback
        raise click.ClickException(f"{error}{_where_the_run_stands(prepared)}") from None
    except ComponentError as error:  # a component's bug: its traceback, for its author, then what happened
        click.echo("".join(traceback.format_exception(error.__cause__)), err=True, nl=False)
        raise click.ClickException(f"{error}{_where_the_run_stands(prepared)}") from None
    except KeyboardInterrupt as interrupt:
        signal_name = "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C (SIGINT)"
        raise click.ClickException(
            f"Stopped by {signal_name}; the iteration in progress was discarded.{_where_the_run_stands(prepared)}"
        ) from None
    if rows and not prepared.config.loop.quiet:
        click.echo(f"Plot and table: iterframe report {prepared.config.loop.output_dir}")
