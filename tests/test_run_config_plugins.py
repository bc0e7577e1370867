"""The run config's ``plugins:`` key: plugin settings from YAML, ``--set plugins.NAME.SETTING=VALUE`` and Python
overrides, checked against the loaded plugins and saved with the run."""

from __future__ import annotations

import pytest
import yaml
from settings_plugins import SettingsPlugin, UntypedPlugin

from iterframe.run_config import (
    RunConfigError,
    apply_overrides,
    apply_python_overrides,
    load_config_file,
    resolve_run_config,
    save_run_config,
)

BASE = {"model": "some/model", "reward": "answer-match", "output_dir": "out", "dataset": "prompts.jsonl"}


@pytest.fixture
def plugins(register_plugin):
    register_plugin(SettingsPlugin(), name="typed-plugin")
    register_plugin(UntypedPlugin(), name="untyped-plugin")


def _resolve(config=None, overrides=()):
    return resolve_run_config(apply_overrides(dict(BASE, **(config or {})), list(overrides)))


def test_settings_from_yaml_and_set_are_merged_and_typed(plugins):
    run = _resolve(
        {"plugins": {"typed-plugin": {"level": 3}, "untyped-plugin": {"url": "http://a"}}},
        ["plugins.typed-plugin.label=007", "plugins.untyped-plugin.retries=3", "plugins.untyped-plugin.on=true"],
    )
    assert run.plugins == {
        "typed-plugin": {"level": 3, "label": "007", "tags": []},
        "untyped-plugin": {"url": "http://a", "retries": 3, "on": True},
    }


def test_a_run_without_plugin_settings_has_none(plugins):
    run = _resolve()
    assert run.plugins == {}
    assert "plugins" not in run.to_config()


def test_python_overrides_merge_plugin_by_plugin(plugins):
    config = apply_python_overrides(
        dict(BASE, plugins={"typed-plugin": {"level": 2}, "untyped-plugin": {"a": 1}}),
        {"plugins": {"typed-plugin": {"label": "x"}}},
    )
    assert resolve_run_config(config).plugins == {
        "typed-plugin": {"level": 2, "label": "x", "tags": []},
        "untyped-plugin": {"a": 1},
    }


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        ({}, ["plugins.typed-plugin.levle=1"], "plugins.typed-plugin has no option 'levle'. Did you mean"),
        ({}, ["plugins.typed-plugin.level=high"], "option 'level' expects int, got 'high'"),
        (
            {"plugins": {"Typed-Plugn": {}}},
            [],
            "plugins.Typed-Plugn: no plugin named 'Typed-Plugn' is loaded. Did you mean 'typed-plugin'?",
        ),
        ({"plugins": ["typed-plugin"]}, [], "plugins must be a mapping of plugin names to their settings"),
    ],
)
def test_bad_plugin_settings_are_refused_naming_the_key(plugins, config, overrides, message):
    with pytest.raises(RunConfigError) as caught:
        _resolve(config, overrides)
    assert message in str(caught.value)


def test_plugin_settings_are_saved_with_every_typed_value_and_load_back(plugins, tmp_path):
    run = _resolve({"plugins": {"Typed_Plugin": {"level": 7}}})
    path = tmp_path / "config.yaml"
    save_run_config(run, str(path))
    assert yaml.safe_load(path.read_text())["plugins"] == {
        "typed-plugin": {"level": 7, "label": "run", "tags": []}
    }
    assert resolve_run_config(load_config_file(str(path))).plugins == run.plugins


def test_the_loop_context_reads_the_runs_settings(plugins):
    from iterframe.plugins.components import RunContext

    run = _resolve({}, ['plugins.typed-plugin.tags=["a", "b"]'])
    context = RunContext(trainer=None, tokenizer=None, config=run.to_config())
    assert context.plugin_config("typed-plugin") == SettingsPlugin.Config(tags=["a", "b"])
