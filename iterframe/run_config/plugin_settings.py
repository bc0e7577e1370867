"""The ``plugins:`` key of a run config: ``plugins: {NAME: {SETTING: value}}``, the settings of each plugin (see
``docs/plugins.md``, "Plugin settings"), set in YAML, by ``--set plugins.NAME.SETTING=VALUE`` or by
``iterframe.run(plugins={...})``."""

from __future__ import annotations

from collections.abc import Mapping

from iterframe.plugins.settings import (
    PluginConfigError,
    check_plugins_mapping,
    declares_config,
    resolve_plugins_section,
)
from iterframe.run_config.components import RunConfigError
from iterframe.run_config.sections import Section, yaml_value

__all__ = ["PluginsSection"]


class PluginsSection(Section):
    """Plugin settings by plugin name, merged plugin by plugin and setting by setting; checked against the loaded
    plugins (and each one's typed ``Config``) when the config is resolved."""

    def empty(self):
        return {}

    def normalise(self, value, where):
        if value is None:
            return {}
        try:
            check_plugins_mapping(value)
        except PluginConfigError as error:
            raise RunConfigError(str(error)) from None
        return {str(name): settings for name, settings in value.items()}

    def merge(self, current, value, where):
        if value is None:
            return {}
        merged = dict(current)
        for name, settings in self.normalise(value, where).items():
            before = merged.get(name)
            both = isinstance(before, Mapping) and isinstance(settings, Mapping)
            merged[name] = {**before, **settings} if both else settings
        return merged

    def assign(self, current, path, value, where, text):
        if not path:
            return self.merge(current, value, where)
        if len(path) == 1:  # plugins.NAME=VALUE: the plugin's whole settings
            return self.merge(current, {path[0]: yaml_value(value) if text else value}, where)
        name, setting = ".".join(path[:-1]), path[-1]  # a plugin's name may hold dots
        if text and declares_config(name) is False:
            value = yaml_value(value)  # untyped settings: the text read as YAML; a Config types its own
        return self.merge(current, {name: {setting: value}}, where)

    def resolve(self, value, resolved):
        try:
            return {self.key: resolve_plugins_section(value)}
        except PluginConfigError as error:
            raise RunConfigError(str(error)) from None

    def to_config(self, run_config):
        return dict(getattr(run_config, self.key)) or None
