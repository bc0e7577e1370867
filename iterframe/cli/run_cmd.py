"""``iterframe run``: parse the flags, call :mod:`iterframe.api`, print what happened.

The flags that set config keys come from :data:`iterframe.run_config.FLAGS`; everything else (resolving the config,
checking every input before anything is written, running the loop) is the API's.
"""

from __future__ import annotations

import os
import traceback

import click

from iterframe.cli.output import output_mode
from iterframe.run_config import FLAGS, Flag

__all__ = ["command"]


def _help(flag: Flag) -> str:
    if flag.type is bool:
        return flag.help
    if flag.shown_default == "required":
        return f"{flag.help} [required]"
    return f"{flag.help} [default: {flag.shown_default}]"


def _click_type(flag: Flag):
    if flag.choices:
        return click.Choice(flag.choices)
    if flag.minimum is not None:
        range_type = click.IntRange if flag.type is int else click.FloatRange
        return range_type(min=flag.minimum)
    return flag.type


def _flag_option(flag: Flag):
    if flag.type is bool:
        return click.option(*flag.options, flag.dest, is_flag=True, default=None, help=_help(flag))
    return click.option(
        *flag.options,
        flag.dest,
        type=_click_type(flag),
        metavar=flag.metavar,
        multiple=flag.multiple,
        help=_help(flag),
    )


def _with_flags(function):
    for flag in reversed(FLAGS):
        function = _flag_option(flag)(function)
    return function


class RunCommand(click.Command):
    """``iterframe run``; an unknown flag is answered with the ``--set`` key that sets what it meant."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as error:
            from iterframe.run_config import suggest_set_key

            key = suggest_set_key(error.option_name)
            if key is not None:
                error.message = f"{error.message} Set it with --set {key}=VALUE."
            elif not error.possibilities:
                error.message = f"{error.message} Any config key can be set with --set KEY=VALUE."
            raise


def _echo_dry_run(prepared, model_description: str) -> None:
    config = prepared.config
    eval_count = len(prepared.eval_prompts or [])
    components = prepared.components
    filters = ", ".join(component.name for component in components["filters"]) or "none"
    click.echo(
        "Dry run: everything checks out, nothing was written.\n"
        f"  model      {config.model} ({model_description})\n"
        f"  prompts    {len(prepared.prompts)} to train on, {eval_count} to evaluate\n"
        f"  components generator {components['generator'].name}, reward {components['reward'].name}, "
        f"filters {filters}, sample tokenizer {components['sample_tokenizer'].name}\n"
        f"  output     {config.loop.output_dir}\n"
        "Leave out --dry-run to train; --print-config shows the whole resolved config."
    )


@click.command("run", cls=RunCommand, context_settings={"max_content_width": 110})
@click.argument("config_file", metavar="[CONFIG.yaml]", required=False, type=click.Path(dir_okay=False))
@_with_flags
@click.option("--resume", is_flag=True, help="Continue the run in --output-dir after its last finished iteration.")
@click.option("--overwrite", is_flag=True, help="Replace the run in --output-dir.")
@click.option(
    "--trust-config-code",
    is_flag=True,
    help="With --resume, import the code the run's saved config.yaml names (a python or trl reward's "
    "file.py:function) though the command line does not: only for a run folder whose code you trust.",
)
@click.option(
    "--set",
    "assignments",
    metavar="KEY=VALUE",
    multiple=True,
    help="Override any config key, e.g. train.warmup_steps=10, generator.top_p=0.9, "
    "filter.top-fraction.fraction=0.25, loop.replay_buffer_size=64. Repeatable; applied last.",
)
@click.option("--print-config", is_flag=True, help="Print the fully resolved config as YAML and exit.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check everything (config, dataset, components, output dir, model config and tokenizer), train nothing.",
)
def command(config_file, assignments, resume, overwrite, trust_config_code, print_config, dry_run, **flags):
    """Fine-tune a model iteratively: generate completions, score them, keep the best, train on them, repeat.

    Settings come from CONFIG.yaml (see docs/config.md), then flags, then --set overrides. With no config, model
    or dataset, runs the built-in offline demo (flags still apply, e.g. --iterations 2 --output-dir DIR); its
    settings, and those of a config file, take the place of the defaults shown here.
    """
    from iterframe.api import Terminated, execute, leave_process_group, prepare, resume_hint
    from iterframe.plugins.errors import ComponentError
    from iterframe.plugins.manager import PluginLoadError

    if resume and overwrite:
        raise click.UsageError(
            "--resume and --overwrite exclude each other: --resume continues the run in --output-dir, "
            "--overwrite deletes it and starts again. Pass one of them."
        )
    try:
        prepared = prepare(
            config_file,
            resume=resume,
            overwrite=overwrite,
            trust_config_code=trust_config_code,
            flags=flags,
            assignments=assignments,
        )
        if print_config:
            from iterframe.run_config import config_text

            click.echo(config_text(prepared.config), nl=False)
            return
        if dry_run:
            from iterframe.api.model_check import inspect_model

            _echo_dry_run(prepared, inspect_model(prepared))
            return
    except (ValueError, PluginLoadError) as error:
        raise click.ClickException(str(error)) from None
    if prepared.source == "demo" and not prepared.config.loop.quiet:
        where = os.path.relpath(prepared.config.loop.output_dir)
        click.echo(f"No config, --model or --dataset given: running the built-in demo into {where}/.", err=True)
    output_dir = prepared.config.loop.output_dir
    try:
        with output_mode(prepared.config.loop.quiet, prepared.config.loop.verbose):
            result = execute(prepared)
        leave_process_group()
    except ValueError as error:  # errors for people (bad model, component setup, reward output): no traceback
        raise click.ClickException(f"{error}{resume_hint(output_dir)}") from None
    except ComponentError as error:  # a component's bug: its traceback, for its author, then what happened
        click.echo("".join(traceback.format_exception(error.__cause__)), err=True, nl=False)
        raise click.ClickException(f"{error}{resume_hint(output_dir)}") from None
    except KeyboardInterrupt as interrupt:  # exit status 128 + the signal's number, as shells report it
        signal_name, status = ("SIGTERM", 143) if isinstance(interrupt, Terminated) else ("Ctrl-C (SIGINT)", 130)
        click.echo(
            f"Error: Stopped by {signal_name}; the iteration in progress was discarded.{resume_hint(output_dir)}",
            err=True,
        )
        raise click.exceptions.Exit(status) from None
    if result.metrics and not prepared.config.loop.quiet:
        click.echo(f"Plot and table: iterframe report {output_dir}")
