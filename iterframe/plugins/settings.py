"""Plugin settings: the run config's ``plugins: {NAME: {...}}`` section, and the typed settings a plugin may
declare.

A plugin declares typed settings with a dataclass named ``Config`` (a module attribute for a module plugin, a class
attribute for a plugin class or object), whose fields are declared like a component's ``Options``. Hooks read the
run's settings with :meth:`iterframe.RunContext.plugin_config`: an instance of that dataclass, or a plain dict for
a plugin that declares none.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, Optional

from iterframe.plugins.options import (
    ComponentOptionError,
    build_options,
    check_options_class,
    option_infos,
)

__all__ = [
    "CONFIG_ATTRIBUTE",
    "PluginConfigError",
    "build_plugin_config",
    "check_plugins_mapping",
    "check_config_class",
    "config_class",
    "config_options",
    "declares_config",
    "plugin_config",
    "resolve_plugins_section",
]

#: The attribute of a plugin that declares its typed settings.
CONFIG_ATTRIBUTE = "Config"


class PluginConfigError(ComponentOptionError):
    """The ``plugins:`` section names a plugin that is not loaded, or gives one settings it does not have."""


def config_class(plugin: Any) -> Optional[type]:
    """The plugin's ``Config`` dataclass, or ``None`` when it declares none."""
    return getattr(plugin, CONFIG_ATTRIBUTE, None)


def declares_config(name: str) -> Optional[bool]:
    """Whether the loaded plugin ``name`` declares a typed ``Config`` (``None``: no such plugin is loaded)."""
    plugins = _plugins_by_name()
    try:
        return config_class(plugins[_find_plugin(name, plugins)]) is not None
    except PluginConfigError:
        return None


def check_config_class(plugin: Any, plugin_name: str) -> None:
    """Raise ``TypeError`` when the plugin's ``Config`` is not a dataclass of settable fields."""
    declared = config_class(plugin)
    if declared is None:
        return
    if not (isinstance(declared, type) and dataclasses.is_dataclass(declared)):
        raise TypeError(
            f"Plugin {plugin_name!r}: {CONFIG_ATTRIBUTE} (its typed settings) must be a dataclass, got "
            f"{declared!r}."
        )
    check_options_class(declared, f"Plugin {plugin_name!r}, {CONFIG_ATTRIBUTE}")


def config_options(plugin: Any) -> Optional[list[dict[str, Any]]]:
    """The plugin's settings as ``iterframe plugins --json`` lists them, or ``None`` when it declares none."""
    declared = config_class(plugin)
    if declared is None:
        return None
    return [
        {
            "name": option.name,
            "type": option.type,
            "required": option.required,
            "default": None if option.required else option.default,
            "help": option.help,
        }
        for option in option_infos(declared)
    ]


def _plugins_by_name() -> dict[str, Any]:
    from iterframe.plugins.manager import get_plugin_manager

    return {name: plugin for name, plugin in get_plugin_manager().list_name_plugin() if plugin is not None}


def _find_plugin(name: str, plugins: dict[str, Any]) -> str:
    """The registered plugin name that ``name`` means (case, ``-``, ``_`` and ``.`` do not matter)."""
    from iterframe.plugins.manager import LOAD_PLUGINS_ENV, normalise_distribution

    if name in plugins:
        return name
    by_normalised = {normalise_distribution(each): each for each in plugins}
    found = by_normalised.get(normalise_distribution(str(name)))
    if found is not None:
        return found
    close = difflib.get_close_matches(normalise_distribution(str(name)), list(by_normalised), n=1)
    hint = f" Did you mean {by_normalised[close[0]]!r}?" if close else ""
    raise PluginConfigError(
        f"plugins.{name}: no plugin named {name!r} is loaded.{hint} Loaded plugins: "
        f"{', '.join(sorted(plugins))}. `iterframe plugins` lists the installed ones ({LOAD_PLUGINS_ENV} may "
        "leave some out)."
    )


def plugin_config(run_config: Mapping[str, Any], name: str) -> Any:
    """The settings that ``run_config``'s ``plugins:`` section gives the loaded plugin ``name`` (see
    :meth:`iterframe.RunContext.plugin_config`)."""
    plugins = _plugins_by_name()
    plugin_name = _find_plugin(name, plugins)
    section = run_config.get("plugins") or {}
    check_plugins_mapping(section)
    values = {_find_plugin(key, plugins): each for key, each in section.items()}.get(plugin_name)
    return build_plugin_config(plugin_name, values, plugins[plugin_name])


def build_plugin_config(plugin_name: str, values: Optional[Mapping[str, Any]], plugin: Any = None) -> Any:
    """The settings of ``plugin_name``: its ``Config`` built from ``values`` (CLI strings are converted, unset
    fields keep their defaults), or ``values`` as a dict when it declares no ``Config``.

    Raises:
        PluginConfigError: an unknown setting (with the closest one), a value of the wrong type, a missing
            required setting, or a value the ``Config`` class rejects; the message starts ``plugins.NAME``.
    """
    if values is not None and not isinstance(values, Mapping):
        raise PluginConfigError(
            f"plugins.{plugin_name} must be a mapping of setting names to values, got {type(values).__name__} "
            f"{values!r:.60}."
        )
    plugin = plugin if plugin is not None else _plugins_by_name().get(plugin_name)
    declared = config_class(plugin)
    if declared is None:
        return dict(values or {})
    try:
        return build_options(declared, dict(values or {}), f"plugins.{plugin_name}")
    except ComponentOptionError as error:
        raise PluginConfigError(str(error)) from None


def check_plugins_mapping(section: Any) -> None:
    """Raise :class:`PluginConfigError` unless the ``plugins:`` section is a mapping."""
    if not isinstance(section, Mapping):
        raise PluginConfigError(
            "plugins must be a mapping of plugin names to their settings, e.g. plugins: {my-plugin: {level: 2}}; "
            f"got {type(section).__name__} {section!r:.60}."
        )


def resolve_plugins_section(section: Any) -> dict[str, dict[str, Any]]:
    """Check a run config's ``plugins:`` section and return it with each key the loaded plugin's name and, for
    typed settings, every field's value (defaults included), ready to save.

    Raises:
        PluginConfigError: the section is not a mapping, names a plugin that is not loaded, or gives a plugin a
            setting it does not have or a value of the wrong type.
    """
    if section is None:
        return {}
    check_plugins_mapping(section)
    plugins = _plugins_by_name()
    given: dict[str, Any] = {}
    for name, values in section.items():  # two spellings of one plugin's name merge, the later winning
        plugin_name = _find_plugin(name, plugins)
        before = given.get(plugin_name)
        both = isinstance(before, Mapping) and isinstance(values, Mapping)
        given[plugin_name] = {**before, **values} if both else values
    resolved: dict[str, dict[str, Any]] = {}
    for plugin_name, values in given.items():
        built = build_plugin_config(plugin_name, values, plugins[plugin_name])
        resolved[plugin_name] = dataclasses.asdict(built) if dataclasses.is_dataclass(built) else built
    return resolved
