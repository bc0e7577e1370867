"""``iterframe plugins``: list installed plugins and what they provide; ``iterframe plugins show NAME``."""

from __future__ import annotations

import json
import os

import click

from iterframe.plugins.components import COMPONENT_KINDS
from iterframe.plugins.manager import LOAD_PLUGINS_ENV
from iterframe.plugins.options import did_you_mean
from iterframe.plugins.registry import UnknownComponentError, get_component_class, list_components, list_plugins


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = []
    for row in [header, ["-" * width for width in widths], *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _name_text(component: dict) -> str:
    aliases = component["aliases"]
    return f"{component['name']} ({', '.join(aliases)})" if aliases else component["name"]


def _provides_text(provides: dict[str, list[dict]]) -> str:
    return "; ".join(f"{kind}: {', '.join(map(_name_text, items))}" for kind, items in provides.items()) or "-"


def _plugins_table(plugins: list[dict]) -> str:
    rows = []
    for entry in plugins:
        version = entry["version"] or "-"
        if entry["error"] is not None:
            rows.append([entry["name"], version, f"FAILED TO LOAD: {entry['error']}", "-"])
        else:
            rows.append(
                [entry["name"], version, _provides_text(entry["provides"]), ", ".join(entry["hooks"]) or "-"]
            )
    return _format_table(["NAME", "VERSION", "PROVIDES", "HOOKS"], rows)


@click.group(name="plugins", invoke_without_command=True)
@click.option("--all", "include_builtins", is_flag=True, help="Include the built-in plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of plugins instead of a table.")
@click.option(
    "--kind",
    type=click.Choice(COMPONENT_KINDS),
    default=None,
    help="Only plugins that provide components of this kind.",
)
@click.pass_context
def command(ctx: click.Context, include_builtins: bool, as_json: bool, kind: str | None):
    """List installed plugins: name, version, the components they provide and the hooks they implement.

    Plugins that failed to load are listed with their error. `iterframe plugins show NAME` describes a
    component and its options.
    """
    if ctx.invoked_subcommand is not None:
        return
    plugins = list_plugins(include_builtins=include_builtins)
    if kind is not None:
        plugins = [
            {**entry, "provides": {kind: entry["provides"][kind]}}
            for entry in plugins
            if kind in entry["provides"]
        ]
    if as_json:
        click.echo(json.dumps(plugins, indent=2, default=str))
    elif plugins:
        click.echo(_plugins_table(plugins))
    else:
        what = f"providing a {kind}" if kind else "installed"
        allow_list = os.environ.get(LOAD_PLUGINS_ENV)
        note = "" if allow_list is None else f" ({LOAD_PLUGINS_ENV}={allow_list!r} limits which are loaded.)"
        click.echo(f"No third-party plugins {what}.{note} `iterframe plugins --all` includes the built-ins.")


def _default_text(value) -> str:
    """A default as it would be typed on the command line (``none`` for ``None``)."""
    return "none" if value is None else json.dumps(value, default=str)


def _component_text(component: dict) -> str:
    source = component["distribution"] or component["plugin"]
    version = f" {component['version']}" if component["version"] else ""
    aliases = f" (aliases: {', '.join(component['aliases'])})" if component["aliases"] else ""
    heading = f"{component['kind']} {component['name']!r}{aliases} from {source}{version}"
    lines = [heading, f"  {component['description']}", ""]
    if not component["options"]:
        lines.append("No options.")
    else:
        lines.append("Options:")
        for option in component["options"]:
            default = "required" if option["required"] else f"default: {_default_text(option['default'])}"
            lines.append(f"  {option['name']} ({option['type']}, {default})")
            if option["help"]:
                lines.append(f"      {option['help']}")
    return "\n".join(lines)


@command.command("show")
@click.argument("name")
@click.option("--kind", type=click.Choice(COMPONENT_KINDS), default=None, help="Kind of the component.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def show(name: str, kind: str | None, as_json: bool):
    """Describe the component NAME (of every kind that has one): description, plugin and options."""
    if kind is not None:
        try:
            get_component_class(kind, name)
        except UnknownComponentError as error:
            raise click.ClickException(str(error)) from None
    matches = [entry for entry in list_components(kind) if name == entry["name"] or name in entry["aliases"]]
    if not matches:
        names = sorted({entry["name"] for entry in list_components()})
        raise click.ClickException(
            f"No component is named {name!r}.{did_you_mean(name, names)} Run `iterframe plugins --all` to see the "
            "components of every plugin."
        )
    if as_json:
        click.echo(json.dumps(matches, indent=2, default=str))
    else:
        click.echo("\n\n".join(_component_text(entry) for entry in matches))
