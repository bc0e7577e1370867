"""The loop calls every lifecycle hook with the run context; hook answers drop samples and add metrics."""

from __future__ import annotations

import os

import pytest
from loop_fakes import RecordingLogger, make_loop

from iterframe import hookimpl
from iterframe.loop.artifacts import read_metrics, read_samples, samples_path


class RecordingPlugin:
    """Records hook calls; keeps only sample 0 of each prompt and adds metrics."""

    def __init__(self):
        self.calls: list[str] = []
        self.contexts = set()
        self.run_end = None
        self.checkpoints: list[tuple[int, str]] = []

    def _record(self, name, context):
        self.calls.append(name)
        self.contexts.add(id(context))

    @hookimpl
    def on_run_start(self, context):
        self._record("on_run_start", context)

    @hookimpl
    def on_iteration_start(self, context, iteration, prompts):
        self._record("on_iteration_start", context)

    @hookimpl
    def on_samples_generated(self, context, iteration, samples):
        self._record("on_samples_generated", context)
        for sample in samples:
            sample.info["seen_by_plugin"] = True

    @hookimpl
    def on_samples_scored(self, context, iteration, samples):
        self._record("on_samples_scored", context)
        return [sample.completion.endswith("-0") for sample in samples]

    @hookimpl
    def before_step(self, context, iteration, batch):
        self._record("before_step", context)

    @hookimpl
    def after_step(self, context, iteration, stats):
        self._record("after_step", context)
        return {"custom/step_loss": stats["loss"]}

    @hookimpl
    def on_iteration_end(self, context, iteration, metrics):
        self._record("on_iteration_end", context)
        return {"custom/kept_twice": 2 * metrics["num_kept"]}

    @hookimpl
    def on_checkpoint_saved(self, context, iteration, path):
        self._record("on_checkpoint_saved", context)
        self.checkpoints.append((iteration, path))

    @hookimpl
    def on_run_end(self, context, metrics, error):
        self._record("on_run_end", context)
        self.run_end = (metrics, error)


@pytest.fixture
def recording_plugin(register_plugin):
    plugin = RecordingPlugin()
    register_plugin(plugin, name="recorder")
    return plugin


def test_hooks_are_called_in_lifecycle_order_with_one_context(recording_plugin, tiny_llama_path, tmp_path):
    loop = make_loop(tiny_llama_path, tmp_path / "out", iterations=1)
    loop.run()
    assert recording_plugin.calls == [
        "on_run_start",
        "on_iteration_start",
        "on_samples_generated",
        "on_samples_scored",
        "before_step",
        "after_step",
        "on_iteration_end",
        "on_checkpoint_saved",
        "on_run_end",
    ]
    assert recording_plugin.contexts == {id(loop.context)}


def test_on_samples_scored_drops_samples_in_the_plugins_name(recording_plugin, tiny_llama_path, tmp_path):
    (row,) = make_loop(tiny_llama_path, tmp_path / "out", iterations=1).run()
    assert row["num_kept"] == 2
    assert row["filter/recorder/dropped"] == 2
    rows = read_samples(samples_path(tmp_path / "out", 0))
    assert sorted((row["sample_index"], row["kept"], row["dropped_by"]) for row in rows) == [
        (0, True, None),
        (0, True, None),
        (1, False, "recorder"),
        (1, False, "recorder"),
    ]


def test_hook_edits_of_generated_samples_are_recorded(recording_plugin, tiny_llama_path, tmp_path):
    import json

    make_loop(tiny_llama_path, tmp_path / "out", iterations=1).run()
    rows = read_samples(samples_path(tmp_path / "out", 0))
    assert all(json.loads(row["info"]) == {"seen_by_plugin": True} for row in rows)


def test_metrics_returned_by_hooks_join_the_row(recording_plugin, tiny_llama_path, tmp_path):
    logger = RecordingLogger()
    (row,) = make_loop(tiny_llama_path, tmp_path / "out", iterations=1, loggers=[logger]).run()
    assert row["custom/kept_twice"] == 4
    assert row["custom/step_loss"] == row["train/loss"]
    assert logger.rows[0]["custom/kept_twice"] == 4
    assert read_metrics(os.path.join(tmp_path, "out", "metrics.jsonl"))[0]["custom/kept_twice"] == 4


def test_checkpoint_hook_gets_the_checkpoint_path(recording_plugin, tiny_llama_path, tmp_path):
    make_loop(tiny_llama_path, tmp_path / "out", iterations=2).run()
    assert [iteration for iteration, _ in recording_plugin.checkpoints] == [0, 1]
    assert recording_plugin.checkpoints[-1][1] == os.path.join(
        str(tmp_path / "out"), "checkpoints", "iteration-000001"
    )


def test_on_run_end_gets_the_last_row_or_the_error(recording_plugin, tiny_llama_path, tmp_path):
    rows = make_loop(tiny_llama_path, tmp_path / "ok", iterations=1).run()
    assert recording_plugin.run_end == (rows[-1], None)

    def broken_reward(prompts, completions, references):
        raise RuntimeError("no scores today")

    with pytest.raises(RuntimeError, match="no scores today"):
        make_loop(tiny_llama_path, tmp_path / "broken", reward=broken_reward, iterations=1).run()
    metrics, error = recording_plugin.run_end
    assert metrics is None and str(error.__cause__) == "no scores today"
