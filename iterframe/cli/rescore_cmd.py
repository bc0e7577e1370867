"""``iterframe rescore RUN_DIR``: judge a run's saved samples again with another reward or filters, without
generating them again; parse, call :func:`iterframe.api.rescore`, print what it wrote."""

from __future__ import annotations

import traceback

import click

__all__ = ["command"]


@click.command("rescore", context_settings={"max_content_width": 110})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--reward", metavar="NAME", help="Reward to score with. [default: the run's reward]")
@click.option(
    "--filter",
    "filters",
    metavar="NAME",
    multiple=True,
    help="Filter; repeat for a chain. [default: the run's filters]",
)
@click.option(
    "--set",
    "assignments",
    metavar="KEY=VALUE",
    multiple=True,
    help="An option of the reward or a filter: reward.OPTION=VALUE, filter.NAME.OPTION=VALUE. Repeatable.",
)
@click.option(
    "--iterations",
    metavar="A:B",
    help="Which iterations: N, A:B (A up to B-1), A: or :B. [default: all the run saved]",
)
@click.option("--output-dir", metavar="DIR", required=True, help="Where the rescored set goes (a new folder).")
@click.option("--overwrite", is_flag=True, help="Replace a run or rescored set already in --output-dir.")
@click.option(
    "--trust-config-code",
    is_flag=True,
    help="Import the code a saved config.yaml names (a python or trl reward's file.py:function) though the "
    "command line does not: only for a run folder whose code you trust.",
)
def command(run_dir, reward, filters, assignments, iterations, output_dir, overwrite, trust_config_code):
    """Score and filter the samples the run in RUN_DIR saved, without generating them again, and write them to
    --output-dir with their metrics and where they came from. The reward and filters are the run's unless named
    here. Train on the result with `iterframe run --train-from DIR`; see it with `iterframe report DIR`."""
    from iterframe.api import rescore
    from iterframe.loop.report import funnel_table
    from iterframe.plugins.errors import ComponentError
    from iterframe.plugins.manager import PluginLoadError

    try:
        result = rescore(
            run_dir,
            output_dir=output_dir,
            reward=reward,
            filters=list(filters) if filters else None,
            iterations=iterations,
            overwrite=overwrite,
            assignments=assignments,
            trust_config_code=trust_config_code,
        )
    except ComponentError as error:  # a component's bug: its traceback, for its author, then what happened
        click.echo("".join(traceback.format_exception(error.__cause__)), err=True, nl=False)
        raise click.ClickException(str(error)) from None
    except (ValueError, PluginLoadError) as error:
        raise click.ClickException(str(error)) from None
    kept = sum(row["num_kept"] for row in result.metrics)
    generated = sum(row["num_generated"] for row in result.metrics)
    span = ", ".join(str(iteration) for iteration in result.iterations)
    click.echo(f"Rescored iteration(s) {span} of {run_dir}: {kept} of {generated} samples kept.\n")
    click.echo(funnel_table(result.metrics))
    click.echo(
        f"\nWritten to {result.output_dir}. Train on it: iterframe run --train-from {result.output_dir} "
        f"--iterations {len(result.iterations)} ...; plot it: iterframe report {result.output_dir}"
    )
