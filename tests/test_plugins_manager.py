"""The plugin manager: built-ins, programmatic registration, validation, the component registry, lookups."""

from __future__ import annotations

import dataclasses

import pluggy
import pytest

import iterframe
from iterframe import hookimpl
from iterframe.plugins import (
    DEFAULT_PLUGINS,
    ComponentOptionError,
    ComponentRegistrationError,
    UnknownComponentError,
    create_component,
    get_component_class,
    get_plugin_manager,
    list_components,
    register,
    reset_plugin_manager,
    unregister,
)
from iterframe.plugins.components import Reward

BUILTIN_NAMES = {
    "generator": {"hf"},
    "reward": {"python", "answer-match", "trl", "math-verify", "http", "code-tests", "verl", "openrlhf"},
    "filter": {"threshold", "top-fraction", "best-of-n", "dedup", "length", "drop-uniform", "drop-truncated"},
    "tokenizer": {"completion-only", "full-text", "chat"},
    "logger": {"console", "jsonl", "wandb", "tensorboard"},
}


class ConstantReward(Reward):
    name = "constant"
    description = "Scores every sample with the same value."

    @dataclasses.dataclass
    class Options:
        value: float = 1.0

    def score(self, samples):
        return [self.options.value] * len(samples)


class ConstantRewardPlugin:
    @hookimpl
    def register_rewards(self, register):
        register(ConstantReward, aliases=("const",))


def test_builtin_plugins_are_registered_under_their_module_names(plugin_manager):
    for module_name in DEFAULT_PLUGINS:
        plugin = plugin_manager.get_plugin(module_name)
        assert plugin is not None and plugin.__name__ == module_name


def test_plugin_manager_is_cached_until_reset(plugin_manager):
    assert get_plugin_manager() is plugin_manager
    reset_plugin_manager()
    assert get_plugin_manager() is not plugin_manager


def test_builtins_provide_every_component_of_the_contract(plugin_manager):
    for kind, names in BUILTIN_NAMES.items():
        assert {entry["name"] for entry in list_components(kind)} == names


def test_builtin_component_info_names_plugin_and_iterframe_version(plugin_manager):
    (entry,) = [entry for entry in list_components("reward") if entry["name"] == "answer-match"]
    assert entry["plugin"] == "iterframe.builtin.rewards"
    assert entry["distribution"] is None
    assert entry["version"] == iterframe.__version__
    assert entry["description"]
    assert [option["name"] for option in entry["options"]] == [
        "pattern",
        "ignore_case",
        "timeout_s",
        "workers",
        "cpu_limit_s",
        "memory_limit_mb",
        "open_files_limit",
    ]
    pattern = entry["options"][0]
    assert (pattern["type"], pattern["default"], pattern["required"]) == ("Optional[str]", None, False)
    assert "regex" in pattern["help"].lower()


def test_registered_plugin_contributes_components_by_name_and_alias(register_plugin):
    register_plugin(ConstantRewardPlugin(), name="constant-plugin")
    assert get_component_class("reward", "constant") is ConstantReward
    assert get_component_class("reward", "const") is ConstantReward
    (entry,) = [entry for entry in list_components("reward") if entry["name"] == "constant"]
    assert (entry["plugin"], entry["aliases"]) == ("constant-plugin", ["const"])
    assert (entry["distribution"], entry["version"]) == (None, None)


def test_aliases_are_listed_once_under_the_main_name(register_plugin):
    register_plugin(ConstantRewardPlugin(), name="constant-plugin")
    assert [entry["name"] for entry in list_components("reward")].count("constant") == 1
    assert "const" not in [entry["name"] for entry in list_components("reward")]


@pytest.mark.parametrize("by_name", [True, False])
def test_unregister_removes_the_plugins_components(plugin_manager, by_name):
    plugin = ConstantRewardPlugin()
    register(plugin, name="constant-plugin")
    assert get_component_class("reward", "constant") is ConstantReward
    unregister("constant-plugin" if by_name else plugin)
    assert plugin_manager.get_plugin("constant-plugin") is None
    with pytest.raises(UnknownComponentError):
        get_component_class("reward", "constant")


def test_unregister_unknown_name_lists_registered_plugins(plugin_manager):
    with pytest.raises(ValueError, match=r"No plugin named 'nope'.*iterframe\.builtin\.rewards"):
        unregister("nope")


def test_hook_with_wrong_argument_name_is_rejected_naming_the_plugin(plugin_manager):
    class Misspelled:
        @hookimpl
        def register_rewards(self, regster):
            pass

    with pytest.raises(pluggy.PluginValidationError, match=r"(?s)'misspelled'.*regster"):
        register(Misspelled(), name="misspelled")
    assert plugin_manager.get_plugin("misspelled") is None


def test_unknown_hook_is_rejected_with_the_closest_hook_name(plugin_manager):
    class UnknownHook:
        @hookimpl
        def register_reward(self, register):
            pass

    with pytest.raises(pluggy.PluginValidationError, match=r"'unknown-hook'.*Did you mean 'register_rewards'"):
        register(UnknownHook(), name="unknown-hook")
    assert plugin_manager.get_plugin("unknown-hook") is None


def test_same_component_name_in_two_plugins_names_both_plugins(plugin_manager):
    class ClashingReward(ConstantReward):
        name = "python"

    class Clashing:
        @hookimpl
        def register_rewards(self, register):
            register(ClashingReward)

    with pytest.raises(ComponentRegistrationError) as error:
        register(Clashing(), name="clashing")
    message = str(error.value)
    assert "'python'" in message and "'iterframe.builtin.rewards'" in message and "'clashing'" in message
    assert plugin_manager.get_plugin("clashing") is None
    assert get_component_class("reward", "python").__module__ == "iterframe.builtin.rewards"


def test_alias_colliding_with_a_name_is_rejected(plugin_manager):
    class AliasClash:
        @hookimpl
        def register_filters(self, register):
            from iterframe.builtin.filters import ThresholdFilter

            class MinReward(ThresholdFilter):
                name = "min-reward"

            register(MinReward, aliases=("dedup",))

    with pytest.raises(ComponentRegistrationError, match=r"'dedup'.*iterframe\.builtin\.filters.*alias-clash"):
        register(AliasClash(), name="alias-clash")


def test_registering_a_class_of_the_wrong_kind_is_rejected(plugin_manager):
    class WrongKind:
        @hookimpl
        def register_generators(self, register):
            register(ConstantReward)

    with pytest.raises(ComponentRegistrationError, match=r"'wrong-kind'.*subclass of iterframe\.Generator"):
        register(WrongKind(), name="wrong-kind")


def test_component_without_a_name_is_rejected(plugin_manager):
    class Nameless(ConstantReward):
        name = ""

    class NamelessPlugin:
        @hookimpl
        def register_rewards(self, register):
            register(Nameless)

    with pytest.raises(ComponentRegistrationError, match=r"'nameless'.*without a name"):
        register(NamelessPlugin(), name="nameless")


def test_option_of_unsupported_type_is_rejected_at_registration(plugin_manager):
    class DictOptionReward(ConstantReward):
        name = "dict-option"

        @dataclasses.dataclass
        class Options:
            weights: dict = dataclasses.field(default_factory=dict)

    class DictOptionPlugin:
        @hookimpl
        def register_rewards(self, register):
            register(DictOptionReward)

    with pytest.raises(ComponentRegistrationError, match=r"'weights' has type dict.*cannot be set from the CLI"):
        register(DictOptionPlugin(), name="dict-option-plugin")


def test_unknown_component_error_suggests_closest_and_lists_available(plugin_manager):
    with pytest.raises(UnknownComponentError) as error:
        get_component_class("filter", "top_fraction")
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert "Did you mean 'top-fraction'?" in message
    assert "best-of-n, dedup, drop-truncated, drop-uniform, length, threshold, top-fraction" in message


def test_unknown_kind_lists_the_kinds(plugin_manager):
    with pytest.raises(ValueError, match="generator, reward, filter, tokenizer, logger"):
        get_component_class("scorer", "python")


def test_create_component_coerces_cli_strings_to_option_types(plugin_manager):
    generator = create_component(
        "generator",
        "hf",
        {
            "max_new_tokens": "8",
            "temperature": "0.7",
            "do_sample": "false",
            "stop": '["###", "\\n\\n"]',
            "seed": "none",
        },
    )
    assert generator.options.max_new_tokens == 8
    assert generator.options.temperature == 0.7
    assert generator.options.do_sample is False
    assert generator.options.stop == ["###", "\n\n"]  # a JSON list
    assert generator.options.seed is None


def test_create_component_accepts_hyphenated_option_names(plugin_manager):
    generator = create_component("generator", "hf", {"max-new-tokens": 3})
    assert generator.options.max_new_tokens == 3


def test_misspelled_option_names_component_key_and_closest_valid_key(plugin_manager):
    with pytest.raises(ComponentOptionError) as error:
        create_component("generator", "hf", {"max_new_token": 8})
    message = str(error.value)
    assert "generator 'hf'" in message and "'max_new_token'" in message
    assert "Did you mean 'max_new_tokens'?" in message
    valid = "batch_size, do_sample, eval_batch_size, max_new_tokens, seed, stop, temperature, top_k, top_p"
    valid += ", use_generate"
    assert f"Valid options: {valid}." in message


def test_option_of_wrong_type_names_option_and_expected_type(plugin_manager):
    expected = r"generator 'hf': option 'max_new_tokens' expects int, got 'many'"
    with pytest.raises(ComponentOptionError, match=expected):
        create_component("generator", "hf", {"max_new_tokens": "many"})


def test_missing_required_option_is_named(plugin_manager):
    with pytest.raises(ComponentOptionError, match=r"reward 'python': required option\(s\) 'function' not set"):
        create_component("reward", "python")


def test_option_value_rejected_by_the_component_is_reported_with_its_name(plugin_manager):
    expected = r"filter 'top-fraction': fraction must be in \(0, 1\], got 1.5"
    with pytest.raises(ComponentOptionError, match=expected):
        create_component("filter", "top-fraction", {"fraction": "1.5"})


def test_registry_follows_plugins_registered_directly_on_the_manager(plugin_manager):
    plugin = ConstantRewardPlugin()
    plugin_manager.register(plugin, name="direct")
    try:
        assert get_component_class("reward", "constant") is ConstantReward
    finally:
        plugin_manager.unregister(plugin)
    with pytest.raises(UnknownComponentError):
        get_component_class("reward", "constant")


# --- configured instances, aliases, the public built-in classes ---------------------------------------------


class WarmHf:
    """Registers the built-in hf generator, configured, under a name of its own and an alias."""

    def __init__(self):
        self.template = iterframe.HFGenerator(iterframe.HFGenerator.Options(temperature=0.7, max_new_tokens=5))

    @hookimpl
    def register_generators(self, register):
        register(self.template, name="hf-warm", aliases=("warm",))


def test_a_configured_instance_is_registered_under_its_name_and_aliases(register_plugin):
    plugin = WarmHf()
    register_plugin(plugin, name="warm-hf")
    assert get_component_class("generator", "warm") is iterframe.HFGenerator
    (entry,) = [entry for entry in list_components("generator") if entry["name"] == "hf-warm"]
    assert (entry["aliases"], entry["plugin"]) == (["warm"], "warm-hf")
    defaults = {option["name"]: option["default"] for option in entry["options"]}
    assert (defaults["temperature"], defaults["max_new_tokens"], defaults["top_k"]) == (0.7, 5, 0)


def test_each_use_of_a_configured_instance_is_a_copy_with_the_runs_options_on_top(register_plugin):
    plugin = WarmHf()
    register_plugin(plugin, name="warm-hf")
    built = create_component("generator", "warm", {"max_new_tokens": "9"})
    assert built is not plugin.template and built.name == "hf-warm"
    assert (built.options.temperature, built.options.max_new_tokens) == (0.7, 9)
    assert plugin.template.options.max_new_tokens == 5
    assert create_component("generator", "hf-warm").options == plugin.template.options
    with pytest.raises(ComponentOptionError, match=r"generator 'hf-warm': temperature must be > 0"):
        create_component("generator", "hf-warm", {"temperature": 0})


def test_a_subclass_of_a_public_builtin_keeps_its_options(register_plugin):
    class LongHf(iterframe.HFGenerator):
        name = "long-hf"

    class LongHfPlugin:
        @hookimpl
        def register_generators(self, register):
            register(LongHf)

    register_plugin(LongHfPlugin(), name="long-hf-plugin")
    built = create_component("generator", "long-hf", {"max_new_tokens": 256})
    assert isinstance(built, iterframe.HFGenerator) and built.options.max_new_tokens == 256


def test_every_builtin_component_class_is_exported_from_iterframe(plugin_manager):
    from iterframe.plugins import registered_components

    for info in registered_components():
        if info.plugin in DEFAULT_PLUGINS:
            assert getattr(iterframe, info.component_class.__name__) is info.component_class
            assert info.component_class.__name__ in iterframe.__all__


def test_registering_something_that_is_no_component_is_refused(plugin_manager):
    class NotAComponent:
        @hookimpl
        def register_rewards(self, register):
            register(lambda samples: [0.0] * len(samples), name="lambda")

    with pytest.raises(
        ComponentRegistrationError, match=r"must be a subclass of iterframe\.Reward or an instance"
    ):
        register(NotAComponent(), name="not-a-component")


def test_errors_name_the_plugin_that_registered_a_configured_instance(register_plugin):
    from iterframe.plugins.errors import describe_origin

    register_plugin(WarmHf(), name="warm-hf")
    assert describe_origin(create_component("generator", "hf-warm")) == "plugin 'warm-hf'"
    assert describe_origin(create_component("generator", "hf")) == "plugin 'iterframe.builtin.generators'"
