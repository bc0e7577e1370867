"""The ``iterframe`` command line: one click group, one module per command."""

import click

from iterframe import __version__
from iterframe.cli.group import CommandGroup


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="iterframe")
def cli():
    """Iterative fine-tuning of language models: generate, score, filter, train, repeat.

    Installed plugins may add commands (listed here with the built-in ones).
    """
    from iterframe.cli.output import silence_expected_notices

    silence_expected_notices()


def _add_commands():
    """Attach every command module's command to the group (each module owns one command)."""
    import importlib

    for module_name in ("plugins_cmd", "run_cmd", "rescore_cmd", "report_cmd"):
        try:
            module = importlib.import_module(f".{module_name}", __name__)
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{module_name}":
                raise
            continue
        cli.add_command(module.command)


_add_commands()


def main():
    """Console-script entry point."""
    cli(prog_name="iterframe")
