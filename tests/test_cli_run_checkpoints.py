"""``iterframe run`` writes only the loop's own checkpoints, keeps ``train.save_total_limit`` of them, gives a
requested schedule the run's horizon, and ``--overwrite`` removes everything a run left."""

from __future__ import annotations

import os

from click.testing import CliRunner

from iterframe.cli import cli
from iterframe.loop.artifacts import read_metrics


def run(model, dataset, output_dir, *extra):
    args = [
        "run",
        *("--model", model, "--dataset", dataset, "--reference-column", "answer", "--reward", "answer-match"),
        *("--prompts-per-iteration", "2", "--samples-per-prompt", "2", "--output-dir", output_dir, "--quiet"),
        *("--set", "generator.max_new_tokens=3", "--set", "train.per_device_train_batch_size=1"),
        *extra,
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_a_five_iteration_run_keeps_save_total_limit_loop_checkpoints_and_nothing_else(
    tiny_llama_path, arithmetic_path, tmp_path
):
    out = str(tmp_path / "run")
    settings = ("--set", "train.save_total_limit=2", "--set", "train.lr_scheduler_type=cosine")
    settings += ("--set", "train.learning_rate=1e-3")
    run(tiny_llama_path, arithmetic_path, out, "--iterations", "5", *settings)
    assert sorted(os.listdir(out)) == [
        "checkpoints",
        "config.yaml",
        "final",
        "iterations",
        "metrics.jsonl",
        "run.json",
    ]
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["iteration-000003", "iteration-000004"]
    assert len(os.listdir(os.path.join(out, "iterations"))) == 5
    folders = [name for _, names, _ in os.walk(out) for name in names]
    assert not [name for name in folders if name.startswith("checkpoint-")]
    # no filter: every sample trains, 4 updates per iteration, so the cosine schedule ends with the run
    rates = [row["train/learning_rate"] for row in read_metrics(os.path.join(out, "metrics.jsonl"))]
    assert rates == sorted(rates, reverse=True) and 0.85e-3 < rates[0] < 0.95e-3 and rates[-1] < 1e-9


def test_overwrite_removes_what_a_run_left_and_nothing_else(tiny_llama_path, arithmetic_path, tmp_path):
    out = tmp_path / "run"
    run(tiny_llama_path, arithmetic_path, str(out), "--iterations", "1")
    for leftover in ("checkpoint-500", "tensorboard", "wandb"):  # an older version's trainer, loggers
        (out / leftover).mkdir()
        (out / leftover / "file").write_text("x")
    (out / "notes.txt").write_text("mine")
    run(tiny_llama_path, arithmetic_path, str(out), "--iterations", "1", "--overwrite")
    assert sorted(os.listdir(out)) == sorted(
        ["checkpoints", "config.yaml", "final", "iterations", "metrics.jsonl", "notes.txt", "run.json"]
    )
    assert (out / "notes.txt").read_text() == "mine"


def test_trainer_checkpoints_are_refused_with_what_to_set_instead(tiny_llama_path, arithmetic_path, tmp_path):
    args = ["run", "--model", tiny_llama_path, "--dataset", arithmetic_path, "--reward", "answer-match"]
    result = CliRunner().invoke(cli, [*args, "--output-dir", str(tmp_path / "o"), "--set", "train.save_steps=10"])
    assert result.exit_code != 0
    assert "train.save_steps=10 asks the trainer for its own checkpoint-N folders" in result.output
    assert "loop.save_every" in result.output and not (tmp_path / "o").exists()
