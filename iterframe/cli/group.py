"""The ``iterframe`` command group: its own commands, then those plugins add through the ``register_commands``
hook."""

from __future__ import annotations

from typing import Optional

import click

__all__ = ["CommandGroup", "plugin_commands"]

_cache: Optional[tuple[object, frozenset, dict[str, click.Command]]] = None


def _collect(manager, builtin: set[str]) -> dict[str, click.Command]:
    """Ask every plugin for its commands, one plugin at a time; warn about failures and clashing names."""
    from iterframe.plugins.errors import ComponentError
    from iterframe.plugins.hooks import call_each

    groups: dict[str, click.Group] = {}

    def arguments(plugin_name: str) -> dict[str, click.Group]:
        groups[plugin_name] = click.Group(plugin_name)
        return {"cli": groups[plugin_name]}

    failures: list[ComponentError] = []
    answered = call_each(manager, "register_commands", arguments, when="Adding commands", failures=failures)
    for failure in failures:
        click.echo(f"Warning: {failure}; its commands are left out.", err=True)
    succeeded = {plugin_name for plugin_name, _ in answered}
    commands: dict[str, click.Command] = {}
    owners: dict[str, str] = {}
    order = [name for name, _ in manager.list_name_plugin()]
    for plugin_name in sorted(succeeded, key=order.index):
        for name, command in groups[plugin_name].commands.items():
            taken = "iterframe" if name in builtin else owners.get(name)
            if taken is not None:
                click.echo(
                    f"Warning: plugin {plugin_name!r} adds a command {name!r}, which {taken!r} has already; it is "
                    "left out.",
                    err=True,
                )
                continue
            commands[name], owners[name] = command, plugin_name
    return commands


def plugin_commands(builtin: set[str]) -> dict[str, click.Command]:
    """The commands plugins add (none are asked when no third-party plugin is installed or registered, so the
    command line then imports no plugin); ``builtin`` names the commands plugins may not replace."""
    global _cache
    from iterframe.plugins.manager import get_plugin_manager, has_third_party_plugins

    if not has_third_party_plugins():
        return {}
    manager = get_plugin_manager()
    key = frozenset(id(plugin) for plugin in manager.get_plugins())
    if _cache is None or _cache[0] is not manager or _cache[1] != key:
        _cache = (manager, key, _collect(manager, builtin))
    return _cache[2]


class CommandGroup(click.Group):
    """A click group whose commands are its own, then those plugins add (looked up only for names it lacks)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        own = super().list_commands(ctx)
        return sorted({*own, *plugin_commands(set(own))})

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        command = super().get_command(ctx, name)
        if command is None:
            command = plugin_commands(set(super().list_commands(ctx))).get(name)
        return command
