"""The plugin system: hook specs, the plugin manager and component registry, the component interfaces, typed
options, and the errors that name a failing plugin or component.

The functions re-exported here are the documented Python API for plugins (see ``docs/plugins.md``).
"""

from iterframe.plugins.manager import (
    DEFAULT_PLUGINS,
    ENTRY_POINT_GROUP,
    HOOK_NAMES,
    LOAD_PLUGINS_ENV,
    TRACE_PLUGINS_ENV,
    PluginLoadError,
    PluginLoadFailure,
    check_plugin_load_errors,
    get_plugin_manager,
    plugin_distribution,
    plugin_load_errors,
    register,
    reset_plugin_manager,
    unregister,
)
from iterframe.plugins.options import ComponentOptionError
from iterframe.plugins.registry import (
    ComponentInfo,
    ComponentRegistrationError,
    UnknownComponentError,
    create_component,
    get_component_class,
    list_components,
    list_plugins,
    registered_components,
)

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "HOOK_NAMES",
    "LOAD_PLUGINS_ENV",
    "TRACE_PLUGINS_ENV",
    "ComponentInfo",
    "ComponentOptionError",
    "ComponentRegistrationError",
    "PluginLoadError",
    "PluginLoadFailure",
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
    "registered_components",
    "reset_plugin_manager",
    "unregister",
]
