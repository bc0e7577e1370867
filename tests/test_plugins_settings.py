"""Plugin settings: a plugin's typed ``Config``, the run config's ``plugins: {NAME: {...}}`` section, and
``RunContext.plugin_config(NAME)``."""

from __future__ import annotations

import dataclasses

import pluggy
import pytest
from settings_plugins import SettingsPlugin, UntypedPlugin

from iterframe import hookimpl
from iterframe.plugins import list_plugins
from iterframe.plugins.components import RunContext
from iterframe.plugins.settings import PluginConfigError, resolve_plugins_section


@pytest.fixture
def settings_plugins(register_plugin):
    register_plugin(SettingsPlugin(), name="settings-plugin")
    register_plugin(UntypedPlugin(), name="untyped-plugin")


def context_with(section) -> RunContext:
    return RunContext(trainer=None, tokenizer=None, config={"plugins": section})


def test_the_section_is_checked_converted_and_completed_with_defaults(settings_plugins):
    resolved = resolve_plugins_section(
        {"Settings_Plugin": {"level": "3", "tags": '["a", "b"]'}, "untyped-plugin": {"x": 1}}
    )
    assert resolved == {
        "settings-plugin": {"level": 3, "label": "run", "tags": ["a", "b"]},
        "untyped-plugin": {"x": 1},
    }


def test_hooks_read_typed_settings_from_the_context(settings_plugins):
    settings = context_with({"settings-plugin": {"level": 2}}).plugin_config("settings-plugin")
    assert isinstance(settings, SettingsPlugin.Config)
    assert (settings.level, settings.label) == (2, "run")
    assert context_with({}).plugin_config("settings-plugin") == SettingsPlugin.Config()


def test_a_plugin_without_a_config_class_reads_a_dict(settings_plugins):
    assert context_with({"untyped-plugin": {"url": "http://x"}}).plugin_config("untyped-plugin") == {
        "url": "http://x"
    }
    assert context_with({}).plugin_config("untyped-plugin") == {}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"settings-plugin": {"levle": 2}},
            "plugins.settings-plugin has no option 'levle'. Did you mean 'level'?",
        ),
        (
            {"settings-plugin": {"level": "high"}},
            "plugins.settings-plugin: option 'level' expects int, got 'high'",
        ),
        ({"settings-plugin": {"level": -1}}, "plugins.settings-plugin: level must be >= 0, got -1"),
        ({"settings-plugin": [1, 2]}, "plugins.settings-plugin must be a mapping of setting names to values"),
        (
            {"Setings-Plugin": {}},
            "plugins.Setings-Plugin: no plugin named 'Setings-Plugin' is loaded. Did you mean 'settings-plugin'?",
        ),
        (["settings-plugin"], "plugins must be a mapping of plugin names to their settings"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(settings_plugins, section, message):
    with pytest.raises(PluginConfigError) as caught:
        resolve_plugins_section(section)
    assert isinstance(caught.value, ValueError)
    assert message in str(caught.value)


def test_reading_the_settings_of_a_plugin_that_is_not_loaded_is_an_error(settings_plugins):
    with pytest.raises(PluginConfigError, match="no plugin named 'settings-plugn' is loaded"):
        context_with({}).plugin_config("settings-plugn")


def test_typed_settings_are_listed_with_the_plugin(settings_plugins):
    listed = {entry["name"]: entry for entry in list_plugins()}
    assert listed["settings-plugin"]["config"] == [
        {"name": "level", "type": "int", "required": False, "default": 1, "help": "How much to report."},
        {"name": "label", "type": "str", "required": False, "default": "run", "help": "Prefix of its metrics."},
        {"name": "tags", "type": "list[str]", "required": False, "default": [], "help": "Tags to attach."},
    ]
    assert listed["untyped-plugin"]["config"] is None


def test_a_config_that_is_no_dataclass_of_settable_fields_is_refused_at_registration(plugin_manager):
    from iterframe.plugins import register

    class BadConfig:
        Config = dict

        @hookimpl
        def on_run_start(self, context):
            pass

    with pytest.raises(
        pluggy.PluginValidationError,
        match=r"Plugin 'bad-config': Config \(its typed settings\) must be a dataclass",
    ):
        register(BadConfig(), name="bad-config")
    assert plugin_manager.get_plugin("bad-config") is None


def test_a_config_field_the_command_line_cannot_set_is_refused_at_registration(plugin_manager):
    from iterframe.plugins import register

    class DictConfig:
        @dataclasses.dataclass
        class Config:
            weights: dict = dataclasses.field(default_factory=dict)

        @hookimpl
        def on_run_start(self, context):
            pass

    with pytest.raises(
        pluggy.PluginValidationError, match=r"Plugin 'dict-config', Config: option 'weights' has type"
    ):
        register(DictConfig(), name="dict-config")


def test_the_context_finds_settings_under_any_spelling_of_the_plugins_name(settings_plugins):
    context = context_with({"Settings_Plugin": {"level": 4}})
    assert context.plugin_config("settings-plugin").level == 4
