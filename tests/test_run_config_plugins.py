"""The run config's ``plugins:`` key: plugin settings from YAML, ``--set plugins.NAME.SETTING=VALUE`` and Python
overrides, checked against the loaded plugins and saved with the run."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from iterframe import hookimpl
from iterframe.run_config import (
    RunConfigError,
    apply_overrides,
    apply_python_overrides,
    load_config_file,
    resolve_run_config,
    save_run_config,
)

BASE = {"model": "some/model", "reward": "answer-match", "output_dir": "out", "dataset": "prompts.jsonl"}


class TypedPlugin:
    @dataclasses.dataclass
    class Config:
        threshold: float = dataclasses.field(default=0.5, metadata={"help": "Score to reach."})
        label: str = dataclasses.field(default="run", metadata={"help": "Prefix of its metrics."})

    @hookimpl
    def on_run_start(self, context):
        pass


class UntypedPlugin:
    @hookimpl
    def on_run_start(self, context):
        pass


@pytest.fixture
def plugins(register_plugin):
    register_plugin(TypedPlugin(), name="typed-plugin")
    register_plugin(UntypedPlugin(), name="untyped-plugin")


def _resolve(config=None, overrides=()):
    return resolve_run_config(apply_overrides(dict(BASE, **(config or {})), list(overrides)))


def test_settings_from_yaml_and_set_are_merged_and_typed(plugins):
    run = _resolve(
        {"plugins": {"typed-plugin": {"threshold": 0.9}, "untyped-plugin": {"url": "http://a"}}},
        ["plugins.typed-plugin.label=007", "plugins.untyped-plugin.retries=3", "plugins.untyped-plugin.on=true"],
    )
    assert run.plugins == {
        "typed-plugin": {"threshold": 0.9, "label": "007"},
        "untyped-plugin": {"url": "http://a", "retries": 3, "on": True},
    }


def test_a_run_without_plugin_settings_has_none(plugins):
    run = _resolve()
    assert run.plugins == {}
    assert "plugins" not in run.to_config()


def test_python_overrides_merge_plugin_by_plugin(plugins):
    config = apply_python_overrides(
        dict(BASE, plugins={"typed-plugin": {"threshold": 0.1}, "untyped-plugin": {"a": 1}}),
        {"plugins": {"typed-plugin": {"label": "x"}}},
    )
    assert resolve_run_config(config).plugins == {
        "typed-plugin": {"threshold": 0.1, "label": "x"},
        "untyped-plugin": {"a": 1},
    }


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        ({}, ["plugins.typed-plugin.treshold=1"], "plugins.typed-plugin has no option 'treshold'. Did you mean"),
        ({}, ["plugins.typed-plugin.threshold=high"], "option 'threshold' expects float, got 'high'"),
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
    run = _resolve({"plugins": {"Typed_Plugin": {"threshold": 0.7}}})
    path = tmp_path / "config.yaml"
    save_run_config(run, str(path))
    assert yaml.safe_load(path.read_text())["plugins"] == {"typed-plugin": {"threshold": 0.7, "label": "run"}}
    assert resolve_run_config(load_config_file(str(path))).plugins == run.plugins


def test_the_loop_context_reads_the_runs_settings(plugins):
    from iterframe.plugins.components import RunContext

    run = _resolve({}, ["plugins.typed-plugin.threshold=0.25"])
    context = RunContext(trainer=None, tokenizer=None, config=run.to_config())
    assert context.plugin_config("typed-plugin") == TypedPlugin.Config(threshold=0.25)
