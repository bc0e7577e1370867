"""``iterframe rescore`` and ``iterframe run --train-from`` end to end on a tiny local model."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from iterframe.cli import cli
from iterframe.loop.artifacts import read_metrics, read_samples, samples_path


def _run_args(model: str, dataset: str, output_dir: str, *extra: str) -> list[str]:
    return [
        "run", "--model", model, "--dataset", dataset, "--reference-column", "answer", "--reward", "answer-match",
        "--filter", "best-of-n", "--prompts-per-iteration", "2", "--samples-per-prompt", "3", "--eval-fraction",
        "0.5", "--set", "generator.max_new_tokens=3", "--output-dir", output_dir, "--quiet", *extra,
    ]  # fmt: skip


def _invoke(args, exit_code: int = 0):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == exit_code, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def source_run(tiny_llama_path, arithmetic_path, tmp_path_factory) -> str:
    output_dir = str(tmp_path_factory.mktemp("runs") / "source")
    _invoke(_run_args(tiny_llama_path, arithmetic_path, output_dir, "--iterations", "2"))
    return output_dir


@pytest.fixture(scope="module")
def rescored(source_run, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("sets") / "everything-scored")
    args = ["rescore", source_run, "--filter", "threshold", "--set", "filter.threshold.min_reward=0"]
    result = _invoke([*args, "--iterations", "1", "--output-dir", output_dir])
    return output_dir, result.output


def test_rescore_keeps_the_runs_reward_and_applies_the_new_filters(source_run, rescored):
    output_dir, output = rescored
    rows = read_samples(samples_path(output_dir, 1))
    assert len(rows) == 6 and all(row["kept"] for row in rows)  # every scored sample passes min_reward 0
    assert [row["completion"] for row in rows] == [
        row["completion"] for row in read_samples(samples_path(source_run, 1))
    ]
    run = json.loads(open(os.path.join(output_dir, "run.json")).read())
    assert run["reward"]["name"] == run["rescored_from"]["reward"]["name"] == "answer-match"
    assert [(item["name"], item["options"]) for item in run["filters"]] == [("threshold", {"min_reward": 0.0})]
    assert [item["name"] for item in run["rescored_from"]["filters"]] == ["best-of-n"]
    assert "Rescored iteration(s) 1 of" in output and "6 of 6 samples kept" in output
    assert "Funnel, " in output and f"iterframe run --train-from {output_dir}" in output


def test_run_trains_on_the_rescored_set(tiny_llama_path, arithmetic_path, rescored, tmp_path):
    set_dir, _ = rescored
    output_dir = str(tmp_path / "trained")
    _invoke(_run_args(tiny_llama_path, arithmetic_path, output_dir, "--iterations", "1", "--train-from", set_dir))
    (row,) = read_metrics(os.path.join(output_dir, "metrics.jsonl"))
    assert (row["num_generated"], row["num_kept"], row["train/num_samples"]) == (6, 6, 6)
    assert row["global_step"] > 0
    rows = read_samples(samples_path(output_dir, 0))
    assert {json.loads(sample["info"])["source_iteration"] for sample in rows} == {1}


def test_train_from_a_set_too_short_is_refused_before_anything_is_written(
    tiny_llama_path, arithmetic_path, rescored, tmp_path
):
    output_dir = str(tmp_path / "trained")
    args = _run_args(
        tiny_llama_path, arithmetic_path, output_dir, "--iterations", "3", "--train-from", rescored[0]
    )
    result = _invoke(args, exit_code=1)
    assert "holds 1 iteration(s) of samples (iteration 1), but the run asks for 3" in result.output
    assert not os.path.exists(output_dir)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "loop.iterations=3"], "rescoring takes reward and filter options only"),
        (["--iterations", "4:6"], "asks for iterations 4-5, but the set holds iterations 0-1"),
        (["--reward", "no-such-reward"], "no-such-reward"),
        (["--set", "filter.threshold.min_reward=x", "--filter", "threshold"], "min_reward"),
    ],
)
def test_rescore_refuses_bad_input_without_writing(source_run, tmp_path, extra, message):
    output_dir = str(tmp_path / "new")
    result = _invoke(["rescore", source_run, "--output-dir", output_dir, *extra], exit_code=1)
    assert "Error:" in result.output and message in result.output
    assert not os.path.exists(output_dir)


def test_rescore_does_not_replace_a_set_unless_told(source_run, rescored, tmp_path):
    output_dir = str(tmp_path / "set")
    shutil.copytree(rescored[0], output_dir)
    result = _invoke(["rescore", source_run, "--output-dir", output_dir], exit_code=1)
    assert "already holds a run or a rescored set" in result.output and "--overwrite" in result.output
    assert os.listdir(os.path.join(output_dir, "iterations")) == ["000001"]
    _invoke(["rescore", source_run, "--output-dir", output_dir, "--overwrite"])
    assert sorted(os.listdir(os.path.join(output_dir, "iterations"))) == ["000000", "000001"]


def test_rescore_of_a_folder_that_is_no_run(tmp_path):
    result = _invoke(["rescore", str(tmp_path), "--output-dir", str(tmp_path / "new")], exit_code=1)
    assert "is not an iterframe run (no run.json)" in result.output


def test_the_python_api_rescores_too(source_run, tmp_path):
    import iterframe

    result = iterframe.rescore(
        source_run,
        output_dir=tmp_path / "api",
        reward=lambda samples: [1.0] * len(samples),
        filters=[{"name": "best-of-n", "options": {"k": 2}}],
        iterations="0",
    )
    assert result.iterations == [0]
    assert [row["num_kept"] for row in result.metrics] == [4]  # two per prompt
