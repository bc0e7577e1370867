"""docs/artifacts.md is the contract of a run's output: every metrics key, ``samples.parquet`` column and
``run.json`` key a run writes is documented there, and what it documents of the samples table is what is written.

The run uses every option that adds keys (adaptive sampling, eval gating, early stopping, filters with reasons).
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest
from loop_fakes import make_loop, make_prompts

from iterframe.loop.artifacts import SAMPLE_COLUMNS, TOKEN_ID_COLUMNS, read_metrics, read_samples, samples_path
from iterframe.plugins import create_component

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "artifacts.md"


def section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def documented_names(title: str) -> list[str]:
    """The backticked names in the first cell of each row of a section's first table."""
    names, in_table = [], False
    for line in section(title).splitlines():
        if in_table and not line.startswith("|"):
            break
        in_table = line.startswith("|")
        if line.startswith("| `"):
            names += re.findall(r"`([^`]+)`", line.split(" | ")[0])
    return names


def as_pattern(name: str) -> re.Pattern:
    return re.compile(re.escape(name).replace(re.escape("<name>"), "[^/]+") + "$")


@pytest.fixture(scope="module")
def full_run(tiny_llama_path, tmp_path_factory):
    from iterframe.plugins import get_plugin_manager, reset_plugin_manager

    reset_plugin_manager()
    get_plugin_manager()
    output_dir = tmp_path_factory.mktemp("contract") / "out"
    loop = make_loop(
        tiny_llama_path,
        output_dir,
        reward=lambda prompts, completions, references: [float(p.endswith(("0", "2"))) for p in prompts],
        filters=[
            create_component("filter", "threshold", {"min_reward": 1.0}),
            create_component("filter", "dedup"),
        ],
        eval_prompts=make_prompts(2, "e"),
        iterations=2,
        samples_per_prompt=3,
        until_accepted=1,
        redistribute=True,
        accept_if_eval_drop_below=0.5,
        early_stop_patience=3,
    )
    loop.run()
    reset_plugin_manager()
    return output_dir


def test_every_metrics_key_a_run_writes_is_documented(full_run):
    patterns = [as_pattern(name) for name in documented_names("`metrics.jsonl`")]
    written = {key for row in read_metrics(full_run / "metrics.jsonl") for key in row}
    undocumented = sorted(key for key in written if not any(pattern.match(key) for pattern in patterns))
    assert undocumented == []
    for key in ("eval/initial_reward", "kept_per_1k_generated_tokens", "prompts/solved", "rolled_back"):
        assert key in written


def test_the_documented_sample_columns_are_the_written_ones(full_run):
    documented = documented_names("`iterations/NNNNNN/samples.parquet`")
    assert documented == [*SAMPLE_COLUMNS, *TOKEN_ID_COLUMNS]
    rows = read_samples(samples_path(full_run, 0))
    assert list(rows[0]) == documented
    assert any(row["drop_reason"] for row in rows)


def test_run_json_keys_are_documented(full_run):
    run = json.loads((full_run / "run.json").read_text(encoding="utf-8"))
    intro = DOC.read_text(encoding="utf-8").split("## ")[0]
    assert [key for key in run if f"`{key}`" not in intro] == []


def test_the_documented_folders_are_the_written_ones(full_run):
    layout = DOC.read_text(encoding="utf-8").split("## ")[0]
    for name in ("run.json", "metrics.jsonl", "iterations/000000/initial_eval_samples.parquet", "best/", "final/"):
        assert name in layout
        assert (full_run / name).exists(), name


def test_a_rescored_sets_run_json_keys_are_documented(full_run, tmp_path):
    from iterframe.loop.rescore import rescore_run
    from iterframe.loop.stages import FunctionReward

    reward = FunctionReward(lambda prompts, completions, references: [0.5] * len(prompts))
    rescore_run(str(full_run), str(tmp_path / "set"), reward, iterations="0")
    run = json.loads((tmp_path / "set" / "run.json").read_text(encoding="utf-8"))
    documented = set(documented_names("A rescored sample set"))
    documented |= {name for key in documented for name in key.split(".")[:1]}
    keys = {key for key in run if key not in ("iterframe_version", "started", "loop")}
    keys |= {f"rescored_from.{key}" for key in run["rescored_from"]}
    assert sorted(keys - documented) == []
    assert {"rescored_from", "reward", "filters"} <= keys
