"""The package of docs/plugins.md, written out exactly as shown, built into a wheel and installed into a
temporary site directory: it is found through its entry point and listed; its components are usable by name and
alias, its metric hook acts only in runs that use its rewards and reads its settings, and its command runs."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from iterframe.cli import cli
from iterframe.plugins import create_component, reset_plugin_manager
from iterframe.plugins.components import RunContext, Sample

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


#: The files of the documented package.
PACKAGE_FILES = ("pyproject.toml", "iterframe_keyword.py")


def documented_files() -> dict[str, str]:
    """The code blocks of docs/plugins.md's package that carry a ``title="FILE"``, by file name."""
    blocks = re.findall(r'^```\w+ title="([^"]+)"\n(.*?)^```$', DOCS.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {name: text for name, text in blocks if name in PACKAGE_FILES}


@pytest.fixture(scope="module")
def documented_package(tmp_path_factory):
    """The documented package written to a folder, built into a wheel, and the wheel unpacked into a site dir."""
    files = documented_files()
    project = tmp_path_factory.mktemp("iterframe-keyword")
    for name, text in files.items():
        (project / name).write_text(text)
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(project),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("*.whl")
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    (dist_info,) = site.glob("*.dist-info")
    return {"site": site, "distribution": importlib.metadata.PathDistribution(dist_info)}


@pytest.fixture
def installed(documented_package, monkeypatch):
    """The unpacked wheel on ``sys.path`` and every installed entry point allowed, as for a user."""
    monkeypatch.syspath_prepend(str(documented_package["site"]))
    monkeypatch.delenv("ITERFRAME_LOAD_PLUGINS", raising=False)
    reset_plugin_manager()
    try:
        yield documented_package
    finally:
        sys.modules.pop("iterframe_keyword", None)
        reset_plugin_manager()


def test_docs_show_a_complete_package_that_builds(documented_package):
    assert sorted(documented_files()) == ["iterframe_keyword.py", "pyproject.toml"]
    distribution = documented_package["distribution"]
    assert (distribution.metadata["Name"], distribution.version) == ("iterframe-keyword", "0.1.0")
    entry_points = [(ep.group, ep.name, ep.value) for ep in distribution.entry_points]
    assert entry_points == [("iterframe", "keyword", "iterframe_keyword")]


def test_documented_package_is_listed_by_iterframe_plugins(installed):
    result = CliRunner().invoke(cli, ["plugins", "--json"], catch_exceptions=False)
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    entry = listed["iterframe-keyword"]
    assert entry["version"] == "0.1.0"
    assert entry["distribution"] == "iterframe-keyword"
    assert entry["hooks"] == ["register_rewards", "register_commands", "after_step"]
    assert entry["provides"] == {
        "reward": [{"name": "keyword", "aliases": ["contains"]}, {"name": "final-answer", "aliases": []}]
    }
    assert entry["config"] == [
        {
            "name": "max_perplexity",
            "type": "float",
            "required": False,
            "default": 1000.0,
            "help": "Largest perplexity reported.",
        }
    ]
    assert entry["error"] is None
    table = CliRunner().invoke(cli, ["plugins"], catch_exceptions=False).stdout
    assert re.search(
        r"^iterframe-keyword\s+0\.1\.0\s+reward: keyword \(contains\), final-answer\s+"
        r"register_rewards, register_commands, after_step$",
        table,
        re.M,
    )


def test_documented_reward_is_usable_by_name(installed):
    reward = create_component("reward", "keyword", {"keyword": "Nineteen"})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    samples = [
        Sample(iteration=0, prompt_id=0, prompt="12 + 7?", completion=completion)
        for completion in ("It is nineteen.", "It is 20.")
    ]
    assert reward.score(samples) == [1.0, 0.0]
    strict = create_component("reward", "contains", {"keyword": "Nineteen", "case_sensitive": "true"})
    assert strict.score(samples) == [0.0, 0.0]


def test_documented_configured_instance_scores_final_answers(installed):
    reward = create_component("reward", "final-answer")
    assert reward.name == "final-answer" and reward.options.keyword == "####"
    samples = [
        Sample(iteration=0, prompt_id=0, prompt="12 + 7?", completion=completion)
        for completion in ("12 + 7 = 19\n#### 19", "It is 19.")
    ]
    assert reward.score(samples) == [1.0, 0.0]


def test_documented_reward_options_are_shown(installed):
    shown = CliRunner().invoke(cli, ["plugins", "show", "keyword"], catch_exceptions=False).stdout
    assert shown.startswith("reward 'keyword' (aliases: contains) from iterframe-keyword 0.1.0")
    assert "  keyword (str, required)\n      Text the completion must contain." in shown
    assert "  case_sensitive (bool, default: false)" in shown


def test_documented_metric_hook_reads_its_setting_in_runs_that_use_its_rewards(installed):
    from iterframe.plugins.hooks import Hooks

    reward = create_component("reward", "keyword", {"keyword": "19"})
    settings = {"plugins": {"iterframe-keyword": {"max_perplexity": 5.0}}}
    context = RunContext(trainer=None, tokenizer=None, config=settings, components={"reward": [reward]})
    assert Hooks(context).metrics("after_step", iteration=0, stats={"loss": 0.0}) == [
        ("iterframe-keyword", {"keyword/perplexity": 1.0})
    ]
    assert Hooks(context).metrics("after_step", iteration=0, stats={"loss": 3.0}) == [
        ("iterframe-keyword", {"keyword/perplexity": 5.0})
    ]
    other = RunContext(
        trainer=None,
        tokenizer=None,
        components={"reward": [create_component("reward", "python", {"function": "math:fsum"})]},
    )
    assert Hooks(other).metrics("after_step", iteration=0, stats={"loss": 0.0}) == []


def test_documented_command_reports_keyword_hits(installed, tmp_path):
    rows = [{"iteration": 0, "reward/mean": 0.25}, {"iteration": 1, "reward/mean": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = CliRunner().invoke(cli, ["keyword-hits", str(tmp_path)], catch_exceptions=False)
    assert result.stdout == "iteration 0: 25% of completions\niteration 1: 50% of completions\n"
    help_text = CliRunner().invoke(cli, ["--help"], catch_exceptions=False).stdout
    assert re.search(r"^\s+keyword-hits\s+Per iteration of a run scored by a keyword reward", help_text, re.M)


def test_a_run_with_the_documented_plugin_uses_its_reward_setting_and_command(
    installed, tiny_llama_path, tmp_path
):
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": f"{a} + 1 ="}) + "\n" for a in range(4)))
    output_dir = tmp_path / "out"
    args = ["run", "--model", tiny_llama_path, "--dataset", str(dataset), "--reward", "keyword"]
    args += ["--set", "reward.keyword=1", "--set", "plugins.iterframe-keyword.max_perplexity=1.5"]
    args += ["--set", "generator.max_new_tokens=3", "--iterations", "2", "--prompts-per-iteration", "2"]
    args += ["--samples-per-prompt", "2", "--output-dir", str(output_dir), "--quiet"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    trained = [row for row in rows if row["train/tokens"]]
    assert trained and all(row["keyword/perplexity"] == 1.5 for row in trained)  # the tiny model's is far higher
    saved = yaml.safe_load((output_dir / "config.yaml").read_text())
    assert saved["plugins"] == {"iterframe-keyword": {"max_perplexity": 1.5}}
    hits = CliRunner().invoke(cli, ["keyword-hits", str(output_dir)], catch_exceptions=False).stdout
    assert hits.splitlines() == [
        f"iteration {row['iteration']}: {row['reward/mean']:.0%} of completions" for row in rows
    ]


def documented_json(after: str):
    """The first JSON code block of docs/plugins.md after the text ``after``."""
    text = DOCS.read_text()
    return json.loads(re.search(r"^```json\n(.*?)^```$", text[text.index(after) :], re.M | re.S).group(1))


def test_the_documented_json_is_what_iterframe_plugins_prints_for_the_documented_package(installed):
    listed = json.loads(CliRunner().invoke(cli, ["plugins", "--json"], catch_exceptions=False).stdout)
    assert [entry for entry in listed if entry["name"] == "iterframe-keyword"] == documented_json(
        "`iterframe plugins --json` prints a"
    )
    shown = json.loads(CliRunner().invoke(cli, ["plugins", "show", "keyword", "--json"]).stdout)
    assert shown == documented_json("`iterframe plugins show NAME --json` prints a list")
