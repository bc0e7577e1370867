"""The package of docs/plugins.md, written out exactly as shown, built into a wheel and installed into a
temporary site directory: it is found through its entry point, listed, and its components are usable by name."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from iterframe.cli import cli
from iterframe.plugins import create_component, get_plugin_manager, reset_plugin_manager
from iterframe.plugins.components import RunContext, Sample

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def documented_files() -> dict[str, str]:
    """The code blocks of docs/plugins.md that carry a ``title="FILE"``, by file name."""
    blocks = re.findall(r'^```\w+ title="([^"]+)"\n(.*?)^```$', DOCS.read_text(), flags=re.MULTILINE | re.DOTALL)
    return dict(blocks)


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
    assert entry["hooks"] == ["register_rewards", "after_step"]
    assert entry["provides"] == {"reward": [{"name": "keyword", "aliases": []}]}
    assert entry["error"] is None
    table = CliRunner().invoke(cli, ["plugins"], catch_exceptions=False).stdout
    assert re.search(
        r"^iterframe-keyword\s+0\.1\.0\s+reward: keyword\s+register_rewards, after_step$", table, re.M
    )


def test_documented_reward_is_usable_by_name(installed):
    reward = create_component("reward", "keyword", {"keyword": "Nineteen"})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    samples = [
        Sample(iteration=0, prompt_id=0, prompt="12 + 7?", completion=completion)
        for completion in ("It is nineteen.", "It is 20.")
    ]
    assert reward.score(samples) == [1.0, 0.0]
    strict = create_component("reward", "keyword", {"keyword": "Nineteen", "case_sensitive": "true"})
    assert strict.score(samples) == [0.0, 0.0]


def test_documented_reward_options_are_shown(installed):
    shown = CliRunner().invoke(cli, ["plugins", "show", "keyword"], catch_exceptions=False).stdout
    assert shown.startswith("reward 'keyword' from iterframe-keyword 0.1.0")
    assert "  keyword (str, required)\n      Text the completion must contain." in shown
    assert "  case_sensitive (bool, default: false)" in shown


def test_documented_metric_hook_adds_perplexity(installed):
    context = RunContext(trainer=None, tokenizer=None)
    results = get_plugin_manager().hook.after_step(context=context, iteration=0, stats={"loss": 0.0})
    assert results == [{"perplexity": 1.0}]
