"""The plugin manager: built-ins, entry points, the allow-list, tracing, and the component registry.

Built-in plugins (:data:`DEFAULT_PLUGINS`) and third-party packages (entry-point group ``iterframe``) are
registered on one :class:`pluggy.PluginManager`; components contributed through the ``register_*`` hooks are
looked up by kind and name with :func:`get_component_class` and built with :func:`create_component`.

Environment:
    ``ITERFRAME_LOAD_PLUGINS``: comma-separated distribution names to load from entry points (unset: all;
    empty string: built-ins only).
    ``ITERFRAME_TRACE_PLUGINS=1``: print every hook call, its arguments and results to stderr.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import re
import reprlib
import sys
import traceback
from typing import Any, Optional

import pluggy

from iterframe import __version__
from iterframe.plugins import hookspecs
from iterframe.plugins.components import (
    COMPONENT_KINDS,
    Component,
    Filter,
    Generator,
    Logger,
    Reward,
    SampleTokenizer,
)
from iterframe.plugins.options import (
    ComponentOptionError,
    OptionInfo,
    build_options,
    check_options_class,
    did_you_mean,
    option_infos,
)

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "HOOK_NAMES",
    "LOAD_PLUGINS_ENV",
    "TRACE_PLUGINS_ENV",
    "ComponentInfo",
    "PluginInfo",
    "ComponentOptionError",
    "ComponentRegistrationError",
    "PluginLoadError",
    "UnknownComponentError",
    "check_plugin_load_errors",
    "create_component",
    "get_component_class",
    "get_plugin_manager",
    "list_components",
    "list_plugins",
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

#: Interface class each component kind must subclass.
KIND_BASES: dict[str, type[Component]] = {
    "generator": Generator,
    "reward": Reward,
    "filter": Filter,
    "tokenizer": SampleTokenizer,
    "logger": Logger,
}


class UnknownComponentError(ValueError):
    """No component of that kind has that name."""


class ComponentRegistrationError(ValueError):
    """A plugin registered a component that is invalid or whose name is taken."""


class PluginLoadError(RuntimeError):
    """At least one installed plugin failed to load."""


@dataclasses.dataclass(frozen=True)
class ComponentInfo:
    """A registered component, as listed by ``iterframe plugins``.

    Args:
        kind: one of :data:`iterframe.plugins.components.COMPONENT_KINDS`.
        name: the registry name.
        description: one line.
        plugin: name of the plugin that registered it.
        distribution: the installed distribution that provides the plugin (``None`` for built-ins and plugins
            registered in code).
        version: that distribution's version (iterframe's for built-ins, ``None`` for plugins registered in code).
        options: ``(name, type, default, help)`` per option.
        aliases: other names it answers to.
        component_class: the class itself.
    """

    kind: str
    name: str
    description: str
    plugin: str
    distribution: Optional[str]
    version: Optional[str]
    options: list[OptionInfo]
    aliases: tuple[str, ...]
    component_class: type[Component]


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """A plugin, as listed by ``iterframe plugins``.

    Args:
        name: the plugin's name (its distribution's name for installed plugins).
        distribution: the installed distribution providing it (``None`` for built-ins and code-registered ones).
        version: the distribution's version (iterframe's for built-ins).
        builtin: whether it is one of :data:`DEFAULT_PLUGINS`.
        hooks: the hooks it implements, in the order of the hook specs.
        provides: ``{kind: [component names]}`` for the kinds it registers.
        error: why it failed to load (then it has no hooks nor components), else ``None``.
    """

    name: str
    distribution: Optional[str]
    version: Optional[str]
    builtin: bool
    hooks: list[str]
    provides: dict[str, list[str]]
    error: Optional[str] = None


@dataclasses.dataclass
class _Registry:
    plugins_key: frozenset
    by_kind: dict[str, dict[str, ComponentInfo]]  # kind -> name or alias -> info


@dataclasses.dataclass
class _State:
    manager: Optional[pluggy.PluginManager] = None
    registry: Optional[_Registry] = None
    distributions: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # plugin -> (dist, ver)
    load_errors: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)


_state = _State()


# --- the manager --------------------------------------------------------------------------------------------


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager: built-ins, then allowed entry points. Created once and cached."""
    if _state.manager is None:
        manager = pluggy.PluginManager("iterframe")
        manager.add_hookspecs(hookspecs)
        for module_name in DEFAULT_PLUGINS:
            manager.register(importlib.import_module(module_name), name=module_name)
        if os.environ.get(TRACE_PLUGINS_ENV, "").strip() not in ("", "0"):
            _enable_tracing(manager)
        _state.distributions, _state.load_errors = {}, []
        _state.manager = manager
        _load_entry_points(manager)
    return _state.manager


def reset_plugin_manager() -> None:
    """Drop the cached manager and registry; the next call re-reads the environment and entry points."""
    global _state
    _state = _State()


def _normalise_distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).strip().lower()


def _allowed_distributions() -> Optional[set[str]]:
    """Distribution names allowed by ``ITERFRAME_LOAD_PLUGINS`` (``None``: no allow-list, load all)."""
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {_normalise_distribution(name) for name in value.split(",") if name.strip()}


def _iterframe_entry_points() -> list[tuple[str, str, list[importlib.metadata.EntryPoint]]]:
    """``(distribution, version, entry points)`` for each installed distribution declaring the group."""
    found, seen = [], set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or _normalise_distribution(name) in seen:
            continue
        entry_points = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        if entry_points:
            seen.add(_normalise_distribution(name))
            found.append((name, dist.version, entry_points))
    return found


def _load_entry_points(manager: pluggy.PluginManager) -> None:
    allowed = _allowed_distributions()
    for dist_name, version, entry_points in _iterframe_entry_points():
        if allowed is not None and _normalise_distribution(dist_name) not in allowed:
            continue
        for entry_point in entry_points:
            plugin_name = dist_name if len(entry_points) == 1 else f"{dist_name}:{entry_point.name}"
            try:
                _register_checked(manager, entry_point.load(), plugin_name)
            except Exception as error:  # a broken plugin must not take the others down
                detail = "".join(traceback.format_exception_only(type(error), error)).strip()
                _state.load_errors.append((dist_name, entry_point.name, detail))
                continue
            _state.distributions[plugin_name] = (dist_name, version)


def _register_checked(manager: pluggy.PluginManager, plugin, name: Optional[str]) -> str:
    """Register ``plugin`` and validate its hooks (argument names and unknown hook names); undo on failure."""
    try:
        registered_name = manager.register(plugin, name=name)
    except pluggy.PluginValidationError:
        if manager.is_registered(plugin):  # pluggy keeps the name of a plugin whose hooks failed validation
            manager.unregister(plugin)
        raise
    for caller in manager.get_hookcallers(plugin) or []:
        impls = [impl for impl in caller.get_hookimpls() if impl.plugin is plugin and not impl.optionalhook]
        if not caller.has_spec() and impls:
            manager.unregister(plugin)
            raise pluggy.PluginValidationError(
                plugin,
                f"Plugin {registered_name!r} implements unknown hook {caller.name!r}."
                f"{did_you_mean(caller.name, HOOK_NAMES)} "
                "The hooks are listed in iterframe/plugins/hookspecs.py and docs/plugins.md.",
            )
    return registered_name


def register(plugin, name: Optional[str] = None) -> str:
    """Register a plugin (module, class or instance with ``@hookimpl`` functions) from code; returns its name.

    Its hooks are validated against the specs and its components added to the registry; if either fails, the
    plugin is unregistered again and the error raised.
    """
    manager = get_plugin_manager()
    registered_name = _register_checked(manager, plugin, name)
    try:
        _registry()
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
    _state.distributions.pop(manager.get_name(plugin), None)
    manager.unregister(plugin)


def plugin_distribution(plugin_name: str) -> tuple[Optional[str], Optional[str]]:
    """``(distribution, version)`` of a registered plugin: iterframe's version for built-ins, ``(None, None)``
    for plugins registered in code."""
    get_plugin_manager()
    if plugin_name in DEFAULT_PLUGINS:
        return None, __version__
    return _state.distributions.get(plugin_name, (None, None))


def plugin_load_errors() -> list[tuple[str, str, str]]:
    """``(distribution, entry_point_name, error)`` for every entry point that failed to load."""
    get_plugin_manager()
    return list(_state.load_errors)


def check_plugin_load_errors() -> None:
    """Raise :class:`PluginLoadError` naming each distribution that failed to load, and what to do."""
    errors = plugin_load_errors()
    if errors:
        lines = [f"  {dist} (entry point {entry_point!r}): {error}" for dist, entry_point, error in errors]
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


# --- the component registry ---------------------------------------------------------------------------------


def _registration_hook_name(kind: str) -> str:
    return f"register_{kind}s"


def _collect_components(manager: pluggy.PluginManager) -> dict[str, dict[str, ComponentInfo]]:
    """Call every plugin's ``register_*`` hooks, one plugin at a time so each component knows its plugin."""
    by_kind: dict[str, dict[str, ComponentInfo]] = {kind: {} for kind in COMPONENT_KINDS}
    for kind in COMPONENT_KINDS:
        hook_name = _registration_hook_name(kind)
        hook = getattr(manager.hook, hook_name)
        plugins = list(dict.fromkeys(impl.plugin for impl in hook.get_hookimpls()))
        for plugin in plugins:
            plugin_name = manager.get_name(plugin)
            others = [other for other in plugins if other is not plugin]

            def register_component(component_class, aliases=(), _plugin_name=plugin_name, _kind=kind):
                info = _component_info(_kind, component_class, tuple(aliases), _plugin_name)
                _add_component(by_kind[_kind], info)

            manager.subset_hook_caller(hook_name, remove_plugins=others)(register=register_component)
    return by_kind


def _component_info(kind: str, component_class, aliases: tuple[str, ...], plugin_name: str) -> ComponentInfo:
    base = KIND_BASES[kind]
    label = f"Plugin {plugin_name!r}"
    if not (isinstance(component_class, type) and issubclass(component_class, base)):
        raise ComponentRegistrationError(
            f"{label} registered {component_class!r} as a {kind}, but a {kind} must be a subclass of "
            f"iterframe.{base.__name__}."
        )
    name = component_class.name
    if not isinstance(name, str) or not name.strip():
        raise ComponentRegistrationError(
            f"{label} registered {kind} class {component_class.__name__} without a name; set the class "
            "attribute name = '...'."
        )
    try:
        check_options_class(component_class.Options, f"{label}, {kind} {name!r}")
    except TypeError as error:
        raise ComponentRegistrationError(str(error)) from None
    distribution, version = plugin_distribution(plugin_name)
    return ComponentInfo(
        kind=kind,
        name=name,
        description=component_class.description,
        plugin=plugin_name,
        distribution=distribution,
        version=version,
        options=option_infos(component_class.Options),
        aliases=aliases,
        component_class=component_class,
    )


def _add_component(registered: dict[str, ComponentInfo], info: ComponentInfo) -> None:
    for key in (info.name, *info.aliases):
        taken = registered.get(key)
        if taken is not None:
            raise ComponentRegistrationError(
                f"Two {info.kind}s are named {key!r}: {taken.component_class.__name__} from plugin "
                f"{taken.plugin!r} and {info.component_class.__name__} from plugin {info.plugin!r}. Uninstall or "
                f"unregister one of them, or leave one out with {LOAD_PLUGINS_ENV}."
            )
        registered[key] = info


def _registry() -> _Registry:
    """The component registry, rebuilt whenever the set of registered plugins changed."""
    manager = get_plugin_manager()
    plugins_key = frozenset(id(plugin) for plugin in manager.get_plugins())
    if _state.registry is None or _state.registry.plugins_key != plugins_key:
        _state.registry = _Registry(plugins_key, _collect_components(manager))
    return _state.registry


def _check_kind(kind: str) -> None:
    if kind not in COMPONENT_KINDS:
        raise ValueError(f"Unknown component kind {kind!r}; use one of {', '.join(COMPONENT_KINDS)}.")


def get_component_class(kind: str, name: str) -> type[Component]:
    """The class registered as ``name`` (or an alias) for ``kind``.

    Raises:
        UnknownComponentError: no such name; the message lists the available names and the closest match.
    """
    _check_kind(kind)
    registered = _registry().by_kind[kind]
    if name in registered:
        return registered[name].component_class
    available = sorted(registered)
    raise UnknownComponentError(
        f"No {kind} named {name!r}.{did_you_mean(name, available)} "
        f"Available {kind}s: {', '.join(available) or '(none)'}. "
        "Run `iterframe plugins --all` to see every component and the plugin providing it."
    )


def create_component(kind: str, name: str, options: Optional[dict[str, Any]] = None) -> Component:
    """Build the ``kind`` component ``name`` with ``options`` (values may be CLI strings; see
    :func:`iterframe.plugins.options.build_options`)."""
    component_class = get_component_class(kind, name)
    built = build_options(component_class.Options, options, f"{kind} {name!r}")
    return component_class(built)


def list_components(kind: Optional[str] = None) -> list[ComponentInfo]:
    """Every registered component (aliases once, under the main name), by kind then registration order."""
    if kind is not None:
        _check_kind(kind)
    by_kind = _registry().by_kind
    listed = []
    for each_kind in COMPONENT_KINDS if kind is None else (kind,):
        listed.extend(info for key, info in by_kind[each_kind].items() if key == info.name)
    return listed


def _installed_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def list_plugins(include_builtins: bool = False) -> list[PluginInfo]:
    """Registered plugins (built-ins first when included, then in registration order), followed by the
    entry points that failed to load."""
    manager = get_plugin_manager()
    components = list_components()
    listed = []
    for name, plugin in manager.list_name_plugin():
        builtin = name in DEFAULT_PLUGINS
        if builtin and not include_builtins:
            continue
        implemented = {caller.name for caller in manager.get_hookcallers(plugin) or []}
        provides: dict[str, list[str]] = {}
        for info in components:
            if info.plugin == name:
                provides.setdefault(info.kind, []).append(info.name)
        distribution, version = plugin_distribution(name)
        hooks = [hook for hook in HOOK_NAMES if hook in implemented]
        listed.append(PluginInfo(name, distribution, version, builtin, hooks, provides))
    listed.sort(key=lambda info: not info.builtin)
    for distribution, _entry_point, error in plugin_load_errors():
        listed.append(
            PluginInfo(distribution, distribution, _installed_version(distribution), False, [], {}, error=error)
        )
    return listed
