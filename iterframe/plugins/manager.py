"""The plugin manager: pluggy's, with iterframe's hook specs, its built-in plugins, and what pluggy leaves to its
host: the ``ITERFRAME_LOAD_PLUGINS`` allow-list, plugins named after their distribution, a broken plugin that
does not take the others down, errors that name the plugin, and tracing.

Environment:
    ``ITERFRAME_LOAD_PLUGINS``: comma-separated distribution names to load from entry points (unset: all;
    empty string: built-ins only).
    ``ITERFRAME_TRACE_PLUGINS=1``: print every hook call, its arguments and results to stderr.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import re
import reprlib
import sys
import traceback
import warnings
from typing import Any, NamedTuple, Optional

import pluggy

from iterframe import __version__
from iterframe.plugins import hookspecs
from iterframe.plugins.options import did_you_mean

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "HOOK_NAMES",
    "LOAD_PLUGINS_ENV",
    "TRACE_PLUGINS_ENV",
    "PluginLoadError",
    "PluginLoadFailure",
    "PluginManager",
    "check_plugin_load_errors",
    "get_plugin_manager",
    "has_third_party_plugins",
    "plugin_distribution",
    "plugin_load_errors",
    "register",
    "reset_plugin_manager",
    "unregister",
]

#: Built-in plugins, registered first and always, through the same manager as third-party ones.
DEFAULT_PLUGINS = (
    "iterframe.builtin.generators",
    "iterframe.builtin.rewards",
    "iterframe.builtin.filters",
    "iterframe.builtin.tokenizers",
    "iterframe.builtin.loggers",
)
ENTRY_POINT_GROUP = "iterframe"
LOAD_PLUGINS_ENV = "ITERFRAME_LOAD_PLUGINS"
TRACE_PLUGINS_ENV = "ITERFRAME_TRACE_PLUGINS"

#: Every hook iterframe defines, in the order of iterframe/plugins/hookspecs.py.
HOOK_NAMES = tuple(name for name, value in vars(hookspecs).items() if hasattr(value, "iterframe_spec"))


class PluginLoadError(RuntimeError):
    """At least one installed plugin failed to load."""


class PluginLoadFailure(NamedTuple):
    """An entry point that failed to load: its distribution, the entry point's name and the error."""

    distribution: str
    entry_point: str
    error: str


def normalise_distribution(name: str) -> str:
    """A distribution name as packaging compares them: case, ``-``, ``_`` and ``.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).strip().lower()


class PluginManager(pluggy.PluginManager):
    """pluggy's plugin manager for the project ``iterframe``, with its hook specs added.

    :meth:`register` also refuses hooks that have no spec (with the closest hook name) and leaves nothing behind
    when it refuses a plugin; :meth:`load_entry_points` loads the allowed installed plugins one by one, recording
    the ones that fail in :attr:`load_failures` instead of raising.
    """

    def __init__(self):
        super().__init__("iterframe")
        self.add_hookspecs(hookspecs)
        self.load_failures: list[PluginLoadFailure] = []
        #: The component registry and the plugins it was built from (kept by :mod:`iterframe.plugins.registry`).
        self.component_registry: Optional[tuple[frozenset, Any]] = None

    def register(self, plugin, name: Optional[str] = None) -> str:
        """Register ``plugin`` under ``name``; pluggy checks its hooks' arguments, this its hooks' names.

        Raises:
            pluggy.PluginValidationError: a hook argument the spec does not have, or an unknown hook; the plugin
                is not registered.
        """
        try:
            registered_name = super().register(plugin, name=name)
            self.check_pending()
            _check_config_class(plugin, registered_name)
        except pluggy.PluginValidationError as error:
            if self.is_registered(plugin):  # pluggy keeps what it registered before the failing hook
                super().unregister(plugin)
            unknown = re.match(r"unknown hook '(\w+)'", str(error))
            if unknown is None:
                raise
            raise pluggy.PluginValidationError(
                plugin,
                f"Plugin {name or self.get_canonical_name(plugin)!r} implements unknown hook {unknown[1]!r}."
                f"{did_you_mean(unknown[1], HOOK_NAMES)} The hooks are listed in iterframe/plugins/hookspecs.py "
                "and docs/plugins.md.",
            ) from None
        return registered_name

    def load_entry_points(self, allow_list: Optional[list[str]] = None) -> None:
        """Load the plugins of every installed distribution in the ``iterframe`` entry-point group that
        ``allow_list`` names (``None``: all); warn about names in it that match no installed plugin."""
        by_distribution: dict[str, list[importlib.metadata.EntryPoint]] = {}
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            by_distribution.setdefault(entry_point.dist.name, []).append(entry_point)
        allowed = _normalised(allow_list)
        if allow_list:
            _warn_unmatched(allow_list, by_distribution)
        for dist_name, entry_points in by_distribution.items():
            if allowed is not None and normalise_distribution(dist_name) not in allowed:
                continue
            for entry_point in entry_points:
                plugin_name = dist_name if len(entry_points) == 1 else f"{dist_name}:{entry_point.name}"
                try:
                    plugin = entry_point.load()
                    self.register(plugin, plugin_name)
                except Exception as error:  # a broken plugin must not take the others down
                    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
                    self.load_failures.append(PluginLoadFailure(dist_name, entry_point.name, detail))
                    continue
                # pluggy keeps (plugin, distribution) pairs for list_plugin_distinfo() but only fills them in its
                # own loader, which names plugins after entry points and stops at the first broken one
                self._plugin_distinfo.append((plugin, entry_point.dist))

    def distribution_of(self, plugin_name: str) -> tuple[Optional[str], Optional[str]]:
        """``(distribution, version)`` of a plugin loaded from an entry point, else ``(None, None)``."""
        for plugin, dist in self.list_plugin_distinfo():
            if self.get_name(plugin) == plugin_name:
                return dist.metadata["Name"], dist.version
        return None, None


def _check_config_class(plugin, plugin_name: str) -> None:
    from iterframe.plugins.settings import check_config_class

    try:
        check_config_class(plugin, plugin_name)
    except TypeError as error:
        raise pluggy.PluginValidationError(plugin, str(error)) from None


def _warn_unmatched(allow_list: list[str], by_distribution: dict) -> None:
    installed = {normalise_distribution(name): name for name in by_distribution}
    for name in allow_list:
        if normalise_distribution(name) in installed:
            continue
        close = difflib.get_close_matches(normalise_distribution(name), list(installed), n=1)
        hint = f" Did you mean {installed[close[0]]!r}?" if close else ""
        listed = ", ".join(sorted(installed.values())) or "none"
        warnings.warn(
            f"{LOAD_PLUGINS_ENV} names {name!r}, which is no installed iterframe plugin.{hint} "
            f"Installed plugins: {listed}.",
            stacklevel=4,
        )


def _normalised(allow_list: Optional[list[str]]) -> Optional[set[str]]:
    return None if allow_list is None else {normalise_distribution(name) for name in allow_list}


def _allow_list() -> Optional[list[str]]:
    """The distribution names ``ITERFRAME_LOAD_PLUGINS`` allows (``None``: no allow-list)."""
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


_manager: Optional[PluginManager] = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager: built-ins, then allowed entry points. Created once and cached."""
    global _manager
    if _manager is None:
        manager = PluginManager()
        for module_name in DEFAULT_PLUGINS:
            manager.register(importlib.import_module(module_name), name=module_name)
        if os.environ.get(TRACE_PLUGINS_ENV, "").strip() not in ("", "0"):
            _enable_tracing(manager)
        _manager = manager
        manager.load_entry_points(_allow_list())
    return _manager


def has_third_party_plugins() -> bool:
    """Whether any plugin beyond the built-ins is registered, or would load from an entry point; answered
    without creating the plugin manager (and importing plugins) when it does not exist yet."""
    if _manager is not None:
        return any(name not in DEFAULT_PLUGINS for name, _ in _manager.list_name_plugin())
    allowed = _normalised(_allow_list())
    return any(
        allowed is None or normalise_distribution(entry_point.dist.name) in allowed
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    )


def reset_plugin_manager() -> None:
    """Drop the cached manager (and so the component registry); the next call re-reads the environment and the
    entry points."""
    global _manager
    _manager = None


def register(plugin, name: Optional[str] = None) -> str:
    """Register a plugin (module, class or instance with ``@hookimpl`` functions) from code; returns its name.

    Its hooks are validated against the specs and its components added to the registry; if either fails, the
    plugin is unregistered again and the error raised.
    """
    from iterframe.plugins.registry import registered_components

    manager = get_plugin_manager()
    registered_name = manager.register(plugin, name)
    try:
        registered_components()
    except Exception:
        manager.unregister(plugin)
        raise
    return registered_name


def unregister(plugin_or_name) -> None:
    """Unregister a plugin given by object or by name; its components leave the registry."""
    manager = get_plugin_manager()
    if isinstance(plugin_or_name, str):
        plugin = manager.get_plugin(plugin_or_name)
        if plugin is None:
            names = ", ".join(name for name, _ in manager.list_name_plugin())
            raise ValueError(f"No plugin named {plugin_or_name!r} is registered. Registered: {names}.")
    else:
        plugin = plugin_or_name
        if not manager.is_registered(plugin):
            raise ValueError(f"{plugin!r} is not a registered plugin.")
    manager.unregister(plugin)


def plugin_distribution(plugin_name: str) -> tuple[Optional[str], Optional[str]]:
    """``(distribution, version)`` of a registered plugin: iterframe's version for built-ins, ``(None, None)``
    for plugins registered in code."""
    if plugin_name in DEFAULT_PLUGINS:
        return None, __version__
    return get_plugin_manager().distribution_of(plugin_name)


def plugin_load_errors() -> list[PluginLoadFailure]:
    """``(distribution, entry_point, error)`` for every entry point that failed to load."""
    return list(get_plugin_manager().load_failures)


def check_plugin_load_errors() -> None:
    """Raise :class:`PluginLoadError` naming each distribution that failed to load, and what to do."""
    failures = plugin_load_errors()
    if failures:
        lines = [f"  {each.distribution} (entry point {each.entry_point!r}): {each.error}" for each in failures]
        raise PluginLoadError(
            "Plugin(s) failed to load:\n" + "\n".join(lines) + "\nFix or uninstall them, or set "
            f"{LOAD_PLUGINS_ENV} to a comma-separated list of the plugin distributions to load "
            "(an empty value loads only the built-ins)."
        )


# --- tracing ------------------------------------------------------------------------------------------------

_trace_repr = reprlib.Repr()
_trace_repr.maxstring = 80
_trace_repr.maxother = 80
_trace_repr.maxlist = 6


def _enable_tracing(manager: pluggy.PluginManager) -> None:
    """Print each hook call (arguments, implementing plugins) and its results to stderr."""

    def before(hook_name, hook_impls, kwargs):
        arguments = ", ".join(f"{key}={_trace_repr.repr(value)}" for key, value in kwargs.items())
        plugins = ", ".join(impl.plugin_name for impl in hook_impls) or "(none)"
        print(f"[iterframe trace] {hook_name}({arguments}) -> plugins: {plugins}", file=sys.stderr)

    def after(outcome, hook_name, hook_impls, kwargs):
        if outcome.exception is not None:
            result = f"raised {outcome.exception!r}"
        else:
            result = _trace_repr.repr(outcome.get_result())
        print(f"[iterframe trace] {hook_name} returned {result}", file=sys.stderr)

    manager.add_hookcall_monitoring(before, after)
