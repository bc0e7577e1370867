"""The component registry: the components plugins contribute through the ``register_*`` hooks, looked up by kind
and name (:func:`get_component_class`), built with options (:func:`create_component`), and described as
``iterframe plugins --json`` prints them (:func:`list_components`, :func:`list_plugins`).

A plugin registers a component class, or a configured instance of one (a *template*: every use gets a copy with
the run's options applied on top of the instance's own), under its own name or another, with aliases.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import warnings
from typing import Any, Optional, Union

from iterframe.plugins.components import (
    COMPONENT_KINDS,
    Component,
    Filter,
    Generator,
    Logger,
    Reward,
    SampleTokenizer,
    kind_label,
)
from iterframe.plugins.hooks import call_each
from iterframe.plugins.manager import (
    DEFAULT_PLUGINS,
    HOOK_NAMES,
    LOAD_PLUGINS_ENV,
    get_plugin_manager,
    plugin_distribution,
    plugin_load_errors,
)
from iterframe.plugins.options import (
    OptionInfo,
    build_options,
    check_options_class,
    did_you_mean,
    option_infos,
)
from iterframe.plugins.settings import config_options

__all__ = [
    "KIND_BASES",
    "ComponentInfo",
    "ComponentRegistrationError",
    "PluginEntry",
    "UnknownComponentError",
    "create_component",
    "get_component_class",
    "list_components",
    "list_plugins",
    "registered_components",
]

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


@dataclasses.dataclass(frozen=True)
class ComponentInfo:
    """A registered component.

    Args:
        kind: one of :data:`iterframe.plugins.components.COMPONENT_KINDS`.
        name: the registry name.
        aliases: other names it answers to.
        plugin: name of the plugin that registered it.
        component_class: its class.
        template: the configured instance it was registered as, or ``None`` for a class.
    """

    kind: str
    name: str
    aliases: tuple[str, ...]
    plugin: str
    component_class: type[Component]
    template: Optional[Component] = None

    @property
    def description(self) -> str:
        return getattr(self.template, "description", None) or self.component_class.description

    @property
    def options(self) -> list[OptionInfo]:
        """``(name, type, default, help)`` per option; a template's values are the defaults."""
        if self.template is None:
            return option_infos(self.component_class.Options)
        return option_infos(type(self.template.options), base=self.template.options)

    def build(self, options: Optional[dict[str, Any]] = None) -> Component:
        """A new component with ``options`` (values may be CLI strings) on top of the defaults."""
        label = f"{kind_label(self.kind)} {self.name!r}"
        if self.template is None:
            component = self.component_class(build_options(self.component_class.Options, options, label))
        else:
            base = self.template.options
            component = self.template.with_options(build_options(type(base), options, label, base=base))
        if component.name != self.name:
            component.name = self.name
        return component

    def describe(self) -> dict[str, Any]:
        """The component as ``iterframe plugins show --json`` prints it (see docs/plugins.md)."""
        distribution, version = plugin_distribution(self.plugin)
        return {
            "kind": self.kind,
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "plugin": self.plugin,
            "distribution": distribution,
            "version": version,
            "options": [
                {
                    "name": option.name,
                    "type": option.type,
                    "required": option.required,
                    "default": None if option.required else option.default,
                    "help": option.help,
                }
                for option in self.options
            ],
        }


# --- building the registry ----------------------------------------------------------------------------------


def _component_info(
    kind: str, component: Union[type, Component], aliases: tuple, name: Optional[str], plugin_name: str
) -> ComponentInfo:
    base = KIND_BASES[kind]
    label = f"Plugin {plugin_name!r}"
    is_class = isinstance(component, type) and issubclass(component, base)
    if not (is_class or isinstance(component, base)):
        raise ComponentRegistrationError(
            f"{label} registered {component!r} as a {kind}, but a {kind} must be a subclass of "
            f"iterframe.{base.__name__} or an instance of one."
        )
    component_class = component if is_class else type(component)
    name = name if name is not None else component.name
    if not isinstance(name, str) or not name.strip():
        raise ComponentRegistrationError(
            f"{label} registered {kind} {component_class.__name__} without a name; set the class attribute "
            "name = '...' or pass register(..., name='...')."
        )
    if not all(isinstance(alias, str) and alias.strip() for alias in aliases):
        raise ComponentRegistrationError(
            f"{label} registered {kind} {name!r} with aliases {aliases!r}; aliases are non-empty strings."
        )
    options_class = component_class.Options if is_class else type(component.options)
    try:
        check_options_class(options_class, f"{label}, {kind} {name!r}")
    except TypeError as error:
        raise ComponentRegistrationError(str(error)) from None
    return ComponentInfo(kind, name, tuple(aliases), plugin_name, component_class, None if is_class else component)


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


def _offered(manager, kind: str) -> list[tuple[str, Any, tuple, Optional[str]]]:
    """``(plugin, component, aliases, name)`` for each ``register(...)`` call the plugins' ``register_{kind}s``
    hooks make, called one plugin at a time so each component knows its plugin."""
    offered = []

    def arguments(plugin_name: str) -> dict[str, Any]:
        def register(component, aliases=(), name=None):
            offered.append((plugin_name, component, tuple(aliases), name))

        return {"register": register}

    call_each(manager, f"register_{kind}s", arguments, when="Registering components")
    return offered


def _collect_components(manager) -> dict[str, dict[str, ComponentInfo]]:
    """Every component the plugins register, checked, in the order the plugins were registered."""
    order = {name: index for index, (name, _) in enumerate(manager.list_name_plugin())}
    by_kind: dict[str, dict[str, ComponentInfo]] = {kind: {} for kind in COMPONENT_KINDS}
    for kind in COMPONENT_KINDS:
        offered = sorted(_offered(manager, kind), key=lambda offer: order.get(offer[0], len(order)))
        for plugin_name, component, aliases, name in offered:
            _add_component(by_kind[kind], _component_info(kind, component, aliases, name, plugin_name))
    return by_kind


def _registry() -> dict[str, dict[str, ComponentInfo]]:
    """``{kind: {name or alias: info}}``, rebuilt whenever the set of registered plugins changed."""
    manager = get_plugin_manager()
    plugins_key = frozenset(id(plugin) for plugin in manager.get_plugins())
    if manager.component_registry is None or manager.component_registry[0] != plugins_key:
        manager.component_registry = (plugins_key, _collect_components(manager))
    return manager.component_registry[1]


def _check_kind(kind: str) -> None:
    if kind not in COMPONENT_KINDS:
        raise ValueError(f"Unknown component kind {kind!r}; use one of {', '.join(COMPONENT_KINDS)}.")


# --- lookups ------------------------------------------------------------------------------------------------


def component_info(kind: str, name: str) -> ComponentInfo:
    """The component registered as ``name`` (or an alias) for ``kind``.

    Raises:
        UnknownComponentError: no such name; the message lists the available names and the closest match.
    """
    _check_kind(kind)
    registered = _registry()[kind]
    if name in registered:
        return registered[name]
    available = sorted(registered)
    label = kind_label(kind)
    raise UnknownComponentError(
        f"No {label} named {name!r}.{did_you_mean(name, available)} "
        f"Available {label}s: {', '.join(available) or '(none)'}. "
        "Run `iterframe plugins --all` to see every component and the plugin providing it."
    )


def get_component_class(kind: str, name: str) -> type[Component]:
    """The class registered as ``name`` (or an alias) for ``kind`` (see :func:`component_info`)."""
    return component_info(kind, name).component_class


def create_component(kind: str, name: str, options: Optional[dict[str, Any]] = None) -> Component:
    """Build the ``kind`` component ``name`` with ``options`` (values may be CLI strings; see
    :func:`iterframe.plugins.options.build_options`)."""
    return component_info(kind, name).build(options)


def registered_components(kind: Optional[str] = None) -> list[ComponentInfo]:
    """Every registered component (aliases once, under the main name), by kind then registration order."""
    if kind is not None:
        _check_kind(kind)
    by_kind = _registry()
    return [
        info
        for each_kind in (COMPONENT_KINDS if kind is None else (kind,))
        for key, info in by_kind[each_kind].items()
        if key == info.name
    ]


def list_components(kind: Optional[str] = None) -> list[dict[str, Any]]:
    """Every registered component as ``iterframe plugins show --json`` prints it (see docs/plugins.md)."""
    return [info.describe() for info in registered_components(kind)]


# --- plugins ------------------------------------------------------------------------------------------------


def _installed_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


class PluginEntry(dict):
    """A plugin as :func:`list_plugins` lists it: a dict, as ``iterframe plugins --json`` prints it.

    Reading its fields as attributes (``entry.name``, ``entry.provides``), as on the ``PluginInfo`` objects of
    earlier versions, still works for one release, with a ``DeprecationWarning``; ``entry.provides`` then has the
    old shape, ``{kind: [component names]}``.
    """

    def __getattr__(self, name: str) -> Any:
        if name not in ("name", "distribution", "version", "builtin", "hooks", "provides", "error"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        warnings.warn(
            f"list_plugins() returns dicts: read entry[{name!r}], not entry.{name} (attribute access goes in the "
            "next release).",
            DeprecationWarning,
            stacklevel=2,
        )
        if name == "provides":
            return {kind: [item["name"] for item in items] for kind, items in self["provides"].items()}
        return self[name]


def _plugin_entry(name, distribution, version, builtin, hooks, provides, config, error=None) -> PluginEntry:
    return PluginEntry(
        name=name,
        version=version,
        distribution=distribution,
        builtin=builtin,
        hooks=hooks,
        provides=provides,
        config=config,
        error=error,
    )


def list_plugins(include_builtins: bool = False) -> list[PluginEntry]:
    """Registered plugins as ``iterframe plugins --json`` prints them (see docs/plugins.md): built-ins first when
    included, then in registration order, followed by the entry points that failed to load."""
    manager = get_plugin_manager()
    components = registered_components()
    listed = []
    for name, plugin in manager.list_name_plugin():
        builtin = name in DEFAULT_PLUGINS
        if plugin is None or (builtin and not include_builtins):
            continue
        implemented = {caller.name for caller in manager.get_hookcallers(plugin) or []}
        provides: dict[str, list[dict[str, Any]]] = {}
        for info in components:
            if info.plugin == name:
                provides.setdefault(info.kind, []).append({"name": info.name, "aliases": list(info.aliases)})
        distribution, version = plugin_distribution(name)
        hooks = [hook for hook in HOOK_NAMES if hook in implemented]
        config = config_options(plugin)
        listed.append(_plugin_entry(name, distribution, version, builtin, hooks, provides, config))
    listed.sort(key=lambda entry: not entry["builtin"])
    for failure in plugin_load_errors():
        version = _installed_version(failure.distribution)
        listed.append(
            _plugin_entry(failure.distribution, failure.distribution, version, False, [], {}, None, failure.error)
        )
    return listed
