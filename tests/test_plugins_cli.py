"""``iterframe plugins [--all] [--json] [--kind K]`` and ``iterframe plugins show NAME``."""

from __future__ import annotations

import dataclasses
import json
import re

import click
import pytest
from click.testing import CliRunner

import iterframe
from iterframe import hookimpl
from iterframe.cli import cli
from iterframe.plugins import DEFAULT_PLUGINS
from iterframe.plugins.components import Filter


class LongFilter(Filter):
    name = "long"
    description = "Keep completions longer than the median."

    @dataclasses.dataclass
    class Options:
        factor: float = dataclasses.field(default=1.0, metadata={"help": "Multiple of the median length."})

    def select(self, samples):
        return [True] * len(samples)


class LongFilterPlugin:
    @hookimpl
    def register_filters(self, register):
        register(LongFilter, aliases=("longer",))

    @hookimpl
    def on_iteration_end(self, context, iteration, metrics):
        return None


def invoke_cli(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def invoke(*args):
    return invoke_cli("plugins", *args)


@pytest.fixture
def long_filter_plugin(register_plugin):
    register_plugin(LongFilterPlugin(), name="long-filter")


def test_json_lists_third_party_plugins_with_name_version_hooks_and_provides(long_filter_plugin):
    result = invoke("--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [
        {
            "name": "long-filter",
            "version": None,
            "distribution": None,
            "builtin": False,
            "hooks": ["register_filters", "on_iteration_end"],
            "provides": {"filter": [{"name": "long", "aliases": ["longer"]}]},
            "config": None,
            "error": None,
        }
    ]


def test_all_adds_the_builtin_plugins_first(long_filter_plugin):
    listed = json.loads(invoke("--all", "--json").stdout)
    assert [entry["name"] for entry in listed] == [*DEFAULT_PLUGINS, "long-filter"]
    builtin_rewards = listed[DEFAULT_PLUGINS.index("iterframe.builtin.rewards")]
    assert builtin_rewards["provides"] == {
        "reward": [
            {"name": name, "aliases": []}
            for name in ("python", "answer-match", "trl", "math-verify", "http", "code-tests", "verl", "openrlhf")
        ]
    }
    assert builtin_rewards["version"] == iterframe.__version__
    assert builtin_rewards["hooks"] == ["register_rewards"]


def test_kind_keeps_only_plugins_providing_that_kind(long_filter_plugin):
    listed = json.loads(invoke("--all", "--kind", "filter", "--json").stdout)
    provided = [(entry["name"], [item["name"] for item in entry["provides"]["filter"]]) for entry in listed]
    assert provided == [
        (
            "iterframe.builtin.filters",
            ["threshold", "top-fraction", "best-of-n", "dedup", "length", "drop-uniform", "drop-truncated"],
        ),
        ("long-filter", ["long"]),
    ]
    assert [set(entry["provides"]) for entry in listed] == [{"filter"}, {"filter"}]
    assert json.loads(invoke("--kind", "generator", "--json").stdout) == []


def test_unknown_kind_is_a_usage_error(plugin_manager):
    result = CliRunner().invoke(cli, ["plugins", "--kind", "scorer"])
    assert result.exit_code == 2
    assert "'scorer' is not one of 'generator', 'reward', 'filter', 'tokenizer', 'logger'" in result.output


def test_table_shows_name_version_provides_and_hooks(long_filter_plugin):
    lines = invoke().stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "PROVIDES", "HOOKS"]
    assert lines[2].split() == [
        "long-filter",
        "-",
        "filter:",
        "long",
        "(longer)",
        "register_filters,",
        "on_iteration_end",
    ]


def test_without_third_party_plugins_the_table_says_so(plugin_manager, monkeypatch):
    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", "")
    assert invoke().stdout == (
        "No third-party plugins installed. (ITERFRAME_LOAD_PLUGINS='' limits which are loaded.) "
        "`iterframe plugins --all` includes the built-ins.\n"
    )


def test_broken_plugin_is_listed_with_its_error_beside_the_working_ones(fake_distribution, monkeypatch):
    working = "import iterframe\n\n@iterframe.hookimpl\ndef on_run_start(context):\n    pass\n"
    fake_distribution("iterframe-working", {"working": "iterframe_working"}, {"iterframe_working.py": working})
    fake_distribution(
        "iterframe-broken",
        {"broken": "iterframe_broken"},
        {"iterframe_broken.py": "import not_installed_x\n"},
        "0.2",
    )
    monkeypatch.delenv("ITERFRAME_LOAD_PLUGINS", raising=False)
    result = invoke("--json")
    assert result.exit_code == 0
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert listed["iterframe-working"]["hooks"] == ["on_run_start"]
    assert listed["iterframe-working"]["version"] == "1.0.0"
    assert listed["iterframe-broken"]["version"] == "0.2"
    assert "ModuleNotFoundError: No module named 'not_installed_x'" in listed["iterframe-broken"]["error"]
    table = invoke().stdout
    assert "iterframe-working" in table
    assert "FAILED TO LOAD: ModuleNotFoundError: No module named 'not_installed_x'" in table


def test_show_prints_description_and_options(plugin_manager):
    result = invoke("show", "hf")
    assert result.exit_code == 0
    text = result.stdout
    assert text.startswith("generator 'hf' from iterframe.builtin.generators")
    assert "Sample K completions per prompt" in text
    assert "  max_new_tokens (int, default: 64)\n      Most tokens per completion." in text
    assert "  stop (list[str], default: [])" in text
    assert "  seed (Optional[int], default: none)" in text


def test_show_marks_required_options(plugin_manager):
    assert "  function (str, required)" in invoke("show", "--kind", "reward", "python").stdout


def test_show_json_and_aliases_of_a_third_party_component(long_filter_plugin):
    (shown,) = json.loads(invoke("show", "longer", "--json").stdout)
    assert shown["name"] == "long" and shown["aliases"] == ["longer"] and shown["plugin"] == "long-filter"
    assert shown["options"] == [
        {
            "name": "factor",
            "type": "float",
            "required": False,
            "default": 1.0,
            "help": "Multiple of the median length.",
        }
    ]


def test_show_unknown_name_suggests_the_closest(plugin_manager):
    result = CliRunner().invoke(cli, ["plugins", "show", "dedupe"])
    assert result.exit_code == 1
    assert "No component is named 'dedupe'. Did you mean 'dedup'?" in result.output


def test_show_unknown_name_of_a_kind_lists_that_kinds_names(plugin_manager):
    result = CliRunner().invoke(cli, ["plugins", "show", "--kind", "tokenizer", "chatml"])
    assert result.exit_code == 1
    assert (
        "No sample tokenizer named 'chatml'. Did you mean 'chat'? "
        "Available sample tokenizers: chat, completion-only" in result.output
    )


def test_list_plugins_returns_what_json_prints(long_filter_plugin):
    from iterframe.plugins import list_plugins

    assert json.loads(invoke("--all", "--json").stdout) == list_plugins(include_builtins=True)
    assert json.loads(invoke("--json").stdout) == list_plugins()


def test_list_components_returns_what_show_json_prints(long_filter_plugin):
    from iterframe.plugins import list_components

    (long_filter,) = [entry for entry in list_components("filter") if entry["name"] == "long"]
    assert json.loads(invoke("show", "long", "--json").stdout) == [long_filter]
    shown = json.loads(invoke("show", "hf", "--json").stdout)
    assert shown == [entry for entry in list_components() if entry["name"] == "hf"]


# --- commands from plugins ----------------------------------------------------------------------------------


class GreetingPlugin:
    """Adds ``iterframe greet``."""

    @hookimpl
    def register_commands(self, cli):
        @cli.command()
        @click.option("--name", default="world")
        def greet(name):
            """Say hello."""
            click.echo(f"hello, {name}")


def test_a_plugin_adds_a_command_to_the_command_line(register_plugin):
    register_plugin(GreetingPlugin(), name="greeting")
    assert invoke_cli("greet", "--name", "iterframe").stdout == "hello, iterframe\n"
    help_text = invoke_cli("--help").stdout
    assert re.search(r"^\s+greet\s+Say hello\.$", help_text, re.M)
    assert re.search(r"^\s+run\s+", help_text, re.M)


def test_an_unregistered_plugins_command_is_gone(plugin_manager):
    from iterframe.plugins import register, unregister

    plugin = GreetingPlugin()
    register(plugin, name="greeting")
    assert invoke_cli("greet").exit_code == 0
    unregister(plugin)
    result = CliRunner().invoke(cli, ["greet"])
    assert result.exit_code == 2 and "No such command 'greet'" in result.output


def test_a_command_named_like_a_builtin_or_another_plugins_is_left_out_with_a_warning(register_plugin):
    class Shadowing:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("run")
            def run_command():
                click.echo("not the real run")

            @cli.command("greet")
            def greet_again():
                click.echo("second greeting")

    register_plugin(GreetingPlugin(), name="greeting")
    register_plugin(Shadowing(), name="shadowing")
    result = invoke_cli("greet")
    assert result.stdout == "hello, world\n"
    assert "Warning: plugin 'shadowing' adds a command 'run', which 'iterframe' has already" in result.stderr
    assert "Warning: plugin 'shadowing' adds a command 'greet', which 'greeting' has already" in result.stderr
    assert "Fine-tune a model iteratively" in invoke_cli("run", "--help").stdout


def test_a_failing_register_commands_is_a_warning_naming_the_plugin(register_plugin):
    class Failing:
        @hookimpl
        def register_commands(self, cli):
            raise ImportError("no module named 'rich_ui'")

    register_plugin(GreetingPlugin(), name="greeting")
    register_plugin(Failing(), name="failing")
    result = invoke_cli("greet")
    assert result.stdout == "hello, world\n"
    assert (
        "Warning: Adding commands: hook register_commands of plugin 'failing' failed: ImportError: no module "
        "named 'rich_ui'; its commands are left out." in result.stderr
    )


def test_without_third_party_plugins_the_command_line_imports_none(monkeypatch):
    import iterframe.plugins.manager as manager
    from iterframe.plugins import reset_plugin_manager

    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", "")
    reset_plugin_manager()
    assert "run" in invoke_cli("--help").stdout
    assert manager._manager is None
