"""Entry-point discovery: the ``iterframe`` group, the ``ITERFRAME_LOAD_PLUGINS`` allow-list, broken plugins."""

from __future__ import annotations

import textwrap

import pytest

from iterframe.plugins import (
    DEFAULT_PLUGINS,
    PluginLoadError,
    UnknownComponentError,
    check_plugin_load_errors,
    get_component_class,
    get_plugin_manager,
    list_components,
    plugin_load_errors,
)

REWARD_MODULE = textwrap.dedent(
    """
    import iterframe


    class {class_name}(iterframe.Reward):
        name = "{component}"
        description = "Test reward."

        def score(self, samples):
            return [0.0] * len(samples)


    @iterframe.hookimpl
    def register_rewards(register):
        register({class_name})
    """
)


def reward_distribution(fake_distribution, dist_name: str, component: str, version: str = "1.0.0"):
    module = dist_name.replace("-", "_")
    source = REWARD_MODULE.format(class_name="TestReward", component=component)
    return fake_distribution(dist_name, {"main": module}, {f"{module}.py": source}, version=version)


def test_entry_point_plugins_load_when_the_allow_list_is_unset(fake_distribution, monkeypatch):
    reward_distribution(fake_distribution, "iterframe-alpha", "alpha", version="2.3.4")
    monkeypatch.delenv("ITERFRAME_LOAD_PLUGINS", raising=False)
    assert get_component_class("reward", "alpha").__module__ == "iterframe_alpha"
    (entry,) = [entry for entry in list_components("reward") if entry["name"] == "alpha"]
    assert (entry["plugin"], entry["distribution"], entry["version"]) == (
        "iterframe-alpha",
        "iterframe-alpha",
        "2.3.4",
    )
    assert get_plugin_manager().get_plugin("iterframe-alpha").__name__ == "iterframe_alpha"


def test_allow_list_loads_only_the_named_distributions(fake_distribution, monkeypatch):
    reward_distribution(fake_distribution, "iterframe-alpha", "alpha")
    reward_distribution(fake_distribution, "iterframe-beta", "beta")
    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", " Iterframe_Beta ,iterframe-gamma")
    with pytest.warns(UserWarning, match="names 'iterframe-gamma', which is no installed iterframe plugin"):
        assert get_component_class("reward", "beta").__module__ == "iterframe_beta"
    with pytest.raises(UnknownComponentError):
        get_component_class("reward", "alpha")


def test_empty_allow_list_loads_only_the_builtins(fake_distribution, monkeypatch):
    reward_distribution(fake_distribution, "iterframe-alpha", "alpha")
    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", "")
    with pytest.raises(UnknownComponentError):
        get_component_class("reward", "alpha")
    assert [name for name, _ in get_plugin_manager().list_name_plugin()] == list(DEFAULT_PLUGINS)


def test_distribution_with_several_entry_points_names_each_plugin_after_both(fake_distribution, monkeypatch):
    files = {
        "multi_a.py": REWARD_MODULE.format(class_name="RewardA", component="multi-a"),
        "multi_b.py": REWARD_MODULE.format(class_name="RewardB", component="multi-b"),
    }
    fake_distribution("iterframe-multi", {"a": "multi_a", "b": "multi_b"}, files)
    monkeypatch.delenv("ITERFRAME_LOAD_PLUGINS", raising=False)
    plugins = {entry["name"]: entry["plugin"] for entry in list_components("reward")}
    assert plugins["multi-a"] == "iterframe-multi:a"
    assert plugins["multi-b"] == "iterframe-multi:b"


def test_plugin_that_fails_to_import_is_recorded_and_the_others_still_load(fake_distribution, monkeypatch):
    reward_distribution(fake_distribution, "iterframe-alpha", "alpha")
    broken = "import a_module_that_is_not_installed\n"
    fake_distribution("iterframe-broken", {"broken": "iterframe_broken"}, {"iterframe_broken.py": broken})
    monkeypatch.delenv("ITERFRAME_LOAD_PLUGINS", raising=False)
    assert get_component_class("reward", "alpha").__module__ == "iterframe_alpha"
    (error,) = plugin_load_errors()
    assert error[:2] == ("iterframe-broken", "broken")
    assert "ModuleNotFoundError" in error[2] and "a_module_that_is_not_installed" in error[2]


def test_check_plugin_load_errors_names_the_distribution_and_the_error(fake_distribution, monkeypatch):
    fake_distribution("iterframe-broken", {"broken": "iterframe_broken"}, {"iterframe_broken.py": "1 / 0\n"})
    monkeypatch.delenv("ITERFRAME_LOAD_PLUGINS", raising=False)
    with pytest.raises(PluginLoadError) as error:
        check_plugin_load_errors()
    message = str(error.value)
    assert "iterframe-broken" in message and "ZeroDivisionError" in message
    assert "ITERFRAME_LOAD_PLUGINS" in message


def test_check_plugin_load_errors_passes_when_every_plugin_loaded(fake_distribution, monkeypatch):
    reward_distribution(fake_distribution, "iterframe-alpha", "alpha")
    monkeypatch.delenv("ITERFRAME_LOAD_PLUGINS", raising=False)
    check_plugin_load_errors()
    assert plugin_load_errors() == []


def test_entry_point_with_an_invalid_hook_is_a_load_error_not_a_crash(fake_distribution, monkeypatch):
    source = "import iterframe\n\n@iterframe.hookimpl\ndef register_rewards(regster):\n    pass\n"
    fake_distribution("iterframe-typo", {"typo": "iterframe_typo"}, {"iterframe_typo.py": source})
    monkeypatch.delenv("ITERFRAME_LOAD_PLUGINS", raising=False)
    (error,) = plugin_load_errors()
    assert error[0] == "iterframe-typo" and "regster" in error[2]
    assert get_plugin_manager().get_plugin("iterframe-typo") is None
    assert get_component_class("reward", "python").__module__ == "iterframe.builtin.rewards"


def test_a_blocked_broken_plugin_is_not_an_error(fake_distribution, monkeypatch):
    fake_distribution("iterframe-broken", {"broken": "iterframe_broken"}, {"iterframe_broken.py": "1 / 0\n"})
    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", "")
    check_plugin_load_errors()


def test_allow_list_names_matching_no_plugin_are_warned_about_with_the_closest(fake_distribution, monkeypatch):
    reward_distribution(fake_distribution, "iterframe-alpha", "alpha")
    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", "ITERFRAME-ALPHA,Iterframe-Alhpa")
    with pytest.warns(UserWarning) as warned:
        get_plugin_manager()
    (message,) = [str(warning.message) for warning in warned if "ITERFRAME_LOAD_PLUGINS" in str(warning.message)]
    assert message.startswith(
        "ITERFRAME_LOAD_PLUGINS names 'Iterframe-Alhpa', which is no installed iterframe plugin. "
        "Did you mean 'iterframe-alpha'? Installed plugins: iterframe-alpha"
    )
    assert get_component_class("reward", "alpha").__module__ == "iterframe_alpha"


def test_an_allow_list_of_installed_plugins_warns_about_nothing(fake_distribution, monkeypatch, recwarn):
    reward_distribution(fake_distribution, "iterframe-alpha", "alpha")
    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", "iterframe-alpha")
    get_plugin_manager()
    assert [str(warning.message) for warning in recwarn if "ITERFRAME_LOAD_PLUGINS" in str(warning.message)] == []
