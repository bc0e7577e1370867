"""``iterframe report OUTPUT_DIR``: plot and tabulate a run's metrics."""

from __future__ import annotations

import click

from iterframe.loop.report import ReportError, write_report


@click.command("report")
@click.argument("output_dir", type=click.Path(file_okay=False))
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the PNG plot. Default: OUTPUT_DIR/report.png.",
)
def command(output_dir: str, plot_path: str | None) -> None:
    """Plot reward (all / eval), the sample funnel, keep rate and loss per iteration of the run in OUTPUT_DIR, and
    print a summary table and the funnel (generated -> failed -> each filter -> kept -> trained). Works on
    finished, running and stopped runs."""
    try:
        report = write_report(output_dir, plot_path)
    except ReportError as error:
        raise click.ClickException(str(error)) from None
    for note in report.notes:
        click.echo(f"Note: {note}", err=True)
    click.echo(report.text)
