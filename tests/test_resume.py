"""An existing output directory: error, resume (also after a crash) and overwrite."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from loop_fakes import ScriptedGenerator, TableReward, make_loop, make_prompts, make_trainer

from iterframe.loop import iterative_loop as loop_module
from iterframe.loop.artifacts import read_metrics, read_samples, samples_path
from iterframe.loop.run_state import OutputDirError


class CrashingReward(TableReward):
    """Scores 1.0, but raises on its ``crash_on_call``-th call (0-based)."""

    name = "crashing"

    def __init__(self, crash_on_call: int):
        super().__init__({}, default=1.0)
        self.crash_on_call = crash_on_call
        self.calls = 0

    def score(self, samples):
        self.calls += 1
        if self.calls - 1 == self.crash_on_call:
            raise RuntimeError("reward server went away")
        return super().score(samples)


def metrics_iterations(output_dir) -> list[int]:
    return [row["iteration"] for row in read_metrics(os.path.join(output_dir, "metrics.jsonl"))]


def drawn_prompts(generator: ScriptedGenerator) -> list[list[str]]:
    return [prompts for prompts, num_samples in generator.calls]


def test_existing_run_is_an_error_without_resume_or_overwrite(tiny_llama_path, tmp_path):
    make_loop(tiny_llama_path, tmp_path / "out", iterations=1).run()
    with pytest.raises(OutputDirError, match=r"already holds a run.*--resume.*--overwrite"):
        make_loop(tiny_llama_path, tmp_path / "out", iterations=1).run()
    assert metrics_iterations(tmp_path / "out") == [0]


def test_resume_of_a_folder_without_a_run_is_an_error(tiny_llama_path, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="Nothing to resume"):
        make_loop(tiny_llama_path, tmp_path / "out", existing_output="resume").run()
    assert os.listdir(tmp_path / "out") == ["notes.txt"]


def test_overwrite_replaces_the_run_and_keeps_other_files(tiny_llama_path, tmp_path):
    output_dir = tmp_path / "out"
    make_loop(tiny_llama_path, output_dir, iterations=2).run()
    (output_dir / "config.yaml").write_text("loop: {}\n")
    rows = make_loop(
        tiny_llama_path, output_dir, iterations=1, existing_output="overwrite", reward=TableReward({}, 0.25)
    ).run()
    assert [row["iteration"] for row in rows] == [0]
    assert metrics_iterations(output_dir) == [0]
    assert read_metrics(output_dir / "metrics.jsonl")[0]["reward/mean"] == 0.25
    assert os.listdir(output_dir / "iterations") == ["000000"]
    assert os.listdir(output_dir / "checkpoints") == ["iteration-000000"]
    assert (output_dir / "config.yaml").read_text() == "loop: {}\n"


def test_resume_continues_after_the_last_finished_iteration(tiny_llama_path, tmp_path):
    uninterrupted = ScriptedGenerator()
    make_loop(tiny_llama_path, tmp_path / "whole", generator=uninterrupted, iterations=4).run()

    first_half, second_half = ScriptedGenerator(), ScriptedGenerator()
    make_loop(tiny_llama_path, tmp_path / "out", generator=first_half, iterations=2).run()
    resumed = make_loop(
        tiny_llama_path, tmp_path / "out", generator=second_half, iterations=4, existing_output="resume"
    )
    rows = resumed.run()
    assert [row["iteration"] for row in rows] == [0, 1, 2, 3]
    assert metrics_iterations(tmp_path / "out") == [0, 1, 2, 3]
    assert [row["global_step"] for row in rows] == [1, 2, 3, 4]
    assert drawn_prompts(first_half) + drawn_prompts(second_half) == drawn_prompts(uninterrupted)


def test_resume_of_a_run_that_saved_only_its_weights_is_refused_with_the_setting_named(tiny_llama_path, tmp_path):
    def weights_only_trainer():
        return make_trainer(tiny_llama_path, str(tmp_path / "trainer"), save_only_model=True)

    make_loop(tiny_llama_path, tmp_path / "out", trainer=weights_only_trainer(), iterations=1).run()
    resumed = make_loop(
        tiny_llama_path, tmp_path / "out", trainer=weights_only_trainer(), iterations=2, existing_output="resume"
    )
    with pytest.raises(OutputDirError, match=r"iteration-000000.*save_only_model.*optimizer.*--model"):
        resumed.run()
    assert metrics_iterations(tmp_path / "out") == [0]


def test_resume_restores_the_trained_weights(tiny_llama_path, tmp_path):
    first = make_loop(tiny_llama_path, tmp_path / "out", iterations=2)
    first.run()
    trained = {name: value.clone() for name, value in first.trainer.model.state_dict().items()}
    resumed = make_loop(tiny_llama_path, tmp_path / "out", iterations=2, existing_output="resume")
    assert resumed.run()[-1]["iteration"] == 1
    for name, value in resumed.trainer.model.state_dict().items():
        assert (value == trained[name]).all(), name
    assert resumed.trainer.state.global_step == 2


def test_crash_mid_iteration_loses_only_that_iteration(tiny_llama_path, tmp_path):
    output_dir = tmp_path / "out"
    with pytest.raises(RuntimeError, match="reward server went away"):
        make_loop(tiny_llama_path, output_dir, reward=CrashingReward(crash_on_call=2), iterations=4).run()
    assert metrics_iterations(output_dir) == [0, 1]
    finished = {iteration: open(samples_path(output_dir, iteration), "rb").read() for iteration in (0, 1)}

    rows = make_loop(tiny_llama_path, output_dir, iterations=4, existing_output="resume").run()
    assert [row["iteration"] for row in rows] == [0, 1, 2, 3]
    assert metrics_iterations(output_dir) == [0, 1, 2, 3]
    for iteration, content in finished.items():
        assert open(samples_path(output_dir, iteration), "rb").read() == content
    assert len(read_samples(samples_path(output_dir, 2))) == 4


def test_crash_after_logging_before_checkpoint_never_duplicates_a_row(tiny_llama_path, tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    real_complete = loop_module.complete_loop_checkpoint

    def complete_then_crash_at_iteration_1(trainer, directory, iteration, state, keep=1):
        if iteration == 1:
            raise KeyboardInterrupt
        return real_complete(trainer, directory, iteration, state, keep)

    monkeypatch.setattr(loop_module, "complete_loop_checkpoint", complete_then_crash_at_iteration_1)
    with pytest.raises(KeyboardInterrupt):
        make_loop(tiny_llama_path, output_dir, iterations=3).run()
    assert metrics_iterations(output_dir) == [0, 1]
    monkeypatch.setattr(loop_module, "complete_loop_checkpoint", real_complete)

    rows = make_loop(tiny_llama_path, output_dir, iterations=3, existing_output="resume").run()
    assert [row["iteration"] for row in rows] == [0, 1, 2]
    assert metrics_iterations(output_dir) == [0, 1, 2]
    assert [row["global_step"] for row in rows] == [1, 2, 3]


def test_resume_ignores_half_written_checkpoints(tiny_llama_path, tmp_path):
    output_dir = tmp_path / "out"
    make_loop(tiny_llama_path, output_dir, iterations=1).run()
    checkpoints = output_dir / "checkpoints"
    (checkpoints / ".tmp-iteration-000001").mkdir()
    (checkpoints / "iteration-000005").mkdir()  # renamed but without loop_state.json: not trusted
    rows = make_loop(tiny_llama_path, output_dir, iterations=2, existing_output="resume").run()
    assert [row["iteration"] for row in rows] == [0, 1]
    assert not (checkpoints / ".tmp-iteration-000001").exists()


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_over(tiny_llama_path, tmp_path):
    output_dir = tmp_path / "out"
    with pytest.raises(RuntimeError):
        make_loop(tiny_llama_path, output_dir, reward=CrashingReward(crash_on_call=0), iterations=2).run()
    assert json.loads((output_dir / "run.json").read_text())["loop"]["iterations"] == 2
    rows = make_loop(tiny_llama_path, output_dir, iterations=2, existing_output="resume").run()
    assert [row["iteration"] for row in rows] == [0, 1]


def test_resume_with_another_prompt_set_is_an_error(tiny_llama_path, tmp_path):
    make_loop(tiny_llama_path, tmp_path / "out", iterations=1).run()
    with pytest.raises(ValueError, match="drew from 4 prompts, but this prompt set has 6"):
        make_loop(
            tiny_llama_path, tmp_path / "out", prompts=make_prompts(6), iterations=2, existing_output="resume"
        ).run()


def test_resume_drops_rows_and_samples_after_the_last_checkpoint(tiny_llama_path, tmp_path):
    output_dir = tmp_path / "out"
    make_loop(tiny_llama_path, output_dir, iterations=3, save_every=2, keep_checkpoints=0).run()
    # iterations 0..2 finished; checkpoints after iteration 1 (save_every) and 2 (the last); forget the last one
    shutil.rmtree(output_dir / "checkpoints" / "iteration-000002")
    make_loop(tiny_llama_path, output_dir, iterations=2, existing_output="resume").run()
    assert metrics_iterations(output_dir) == [0, 1]
    assert sorted(os.listdir(output_dir / "iterations")) == ["000000", "000001"]


def test_resume_removes_the_hidden_temporary_files_a_kill_leaves_behind(tmp_path):
    from iterframe.loop.run_state import claim_output_dir

    output_dir = tmp_path / "out"
    (output_dir / "iterations" / "000000").mkdir(parents=True)
    (output_dir / "run.json").write_text("{}")
    (output_dir / "metrics.jsonl").write_text('{"iteration": 0}\n')
    left_behind = [
        output_dir / ".metrics.jsonl.k3j2x9.tmp",
        output_dir / "iterations" / "000000" / ".samples.parquet.a8f0q1.tmp",
    ]
    for path in left_behind:
        path.write_text("half written")
    kept = [
        output_dir / ".gitignore",
        output_dir / "notes.tmp",
        output_dir / "iterations" / "000000" / "x.parquet",
    ]
    for path in kept:
        path.write_text("mine")

    assert claim_output_dir(str(output_dir), "resume", {}) is None

    assert not any(path.exists() for path in left_behind)
    assert all(path.read_text() == "mine" for path in kept)
    assert (output_dir / "metrics.jsonl").read_text() == '{"iteration": 0}\n'
