"""Public names that moved keep working for one release, with a DeprecationWarning (CHANGELOG.md lists them)."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest

import iterframe
from iterframe import MOVED_MODULES


def test_an_old_module_path_imports_the_moved_module_with_a_deprecation_warning(monkeypatch):
    import iterframe.loop.artifacts as artifacts

    monkeypatch.delitem(sys.modules, "iterframe.artifacts", raising=False)
    monkeypatch.delattr(iterframe, "artifacts", raising=False)
    with pytest.warns(
        DeprecationWarning, match=r"iterframe\.artifacts is deprecated .* import iterframe\.loop\.artifacts"
    ):
        from iterframe.artifacts import read_samples
    assert read_samples is artifacts.read_samples
    assert sys.modules["iterframe.artifacts"] is artifacts
    assert artifacts.__spec__.name == "iterframe.loop.artifacts"  # the module keeps its own spec


def test_every_moved_module_name_leads_to_a_module_that_exists():
    for old_name, new_name in MOVED_MODULES.items():
        assert importlib.util.find_spec(new_name) is not None, new_name
        assert importlib.util.find_spec(old_name).loader is not None, old_name


def test_list_plugins_entries_still_read_as_attributes_with_a_deprecation_warning(register_plugin):
    from iterframe import Reward, hookimpl
    from iterframe.plugins import list_plugins

    class OldStyleReward(Reward):
        name = "old-style-reward"

        def score(self, samples):
            return [0.0] * len(samples)

    class Plugin:
        @hookimpl
        def register_rewards(self, register):
            register(OldStyleReward)

    register_plugin(Plugin(), name="old-style-reader")
    (entry,) = [entry for entry in list_plugins() if entry["name"] == "old-style-reader"]
    with pytest.warns(DeprecationWarning, match=r"read entry\['hooks'\], not entry\.hooks"):
        assert entry.hooks == ["register_rewards"]
    with pytest.warns(DeprecationWarning):
        assert (entry.name, entry.builtin, entry.error) == ("old-style-reader", False, None)
    with pytest.warns(DeprecationWarning):
        assert entry.provides == {"reward": ["old-style-reward"]}  # the old shape: component names
    assert entry["provides"] == {"reward": [{"name": "old-style-reward", "aliases": []}]}
    with pytest.raises(AttributeError):
        entry.no_such_field  # noqa: B018
