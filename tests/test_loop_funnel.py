"""Why each sample was dropped (``drop_reason`` next to ``dropped_by``) and the per-iteration funnel:
generated -> failed -> each filter -> kept -> trained, in metrics, the report's table and its plot."""

from __future__ import annotations

import json
import math
import os

import pytest
from loop_fakes import MinReward, ScriptedGenerator, make_loop

from iterframe.loop.artifacts import read_samples, samples_path, write_metrics_row
from iterframe.loop.funnel import draw_funnel, funnel, funnel_columns
from iterframe.loop.report import funnel_table, write_report
from iterframe.plugins import create_component


def duplicate_pairs(prompt, index):
    """Samples 0 and 1 differ; samples 2 and 3 are the same text."""
    return f"{prompt}-{index}" if index < 2 else f"{prompt} answer-2"


def score_answers(prompts, completions, references):
    """Sample 0 fails (NaN), sample 1 scores 0.2, samples 2 and 3 score 1."""
    return [[math.nan, 0.2, 1.0][int(completion.rsplit("-", 1)[1])] for completion in completions]


@pytest.fixture(scope="module")
def funnel_run(tiny_llama_path, tmp_path_factory, plugin_manager_module):
    output_dir = tmp_path_factory.mktemp("funnel") / "out"
    loop = make_loop(
        tiny_llama_path,
        output_dir,
        generator=ScriptedGenerator(duplicate_pairs),
        reward=score_answers,
        filters=[
            create_component("filter", "threshold", {"min_reward": 0.5}),
            create_component("filter", "dedup"),
        ],
        iterations=1,
        prompts_per_iteration=2,
        samples_per_prompt=4,
    )
    (row,) = loop.run()
    return row, read_samples(samples_path(output_dir, 0)), str(output_dir)


@pytest.fixture(scope="module")
def plugin_manager_module():
    from iterframe.plugins import get_plugin_manager, reset_plugin_manager

    reset_plugin_manager()
    try:
        yield get_plugin_manager()
    finally:
        reset_plugin_manager()


def test_samples_record_the_value_that_decided_each_drop(funnel_run):
    _, samples, _ = funnel_run
    fates = {
        (row["prompt_id"], row["sample_index"]): (
            row["dropped_by"],
            row["drop_reason"] and json.loads(row["drop_reason"]),
        )
        for row in samples
    }
    prompt_id = samples[0]["prompt_id"]
    assert fates[(prompt_id, 0)] == ("failed-reward:no-score", {"error": "Reward 'score_answers' returned nan"})
    assert fates[(prompt_id, 1)] == ("threshold", {"reward": 0.2, "min_reward": 0.5})
    assert fates[(prompt_id, 2)] == (None, None)
    assert fates[(prompt_id, 3)] == (
        "dedup",
        {"duplicate_of_prompt_id": prompt_id, "duplicate_of_sample_index": 2},
    )


def test_metrics_row_holds_every_funnel_stage_in_chain_order(funnel_run):
    row, _, _ = funnel_run
    assert funnel(row) == [
        ("generated", 8),
        ("failed", 2),
        ("dropped by threshold", 2),
        ("dropped by dedup", 2),
        ("kept", 2),
        ("trained", 2),
    ]


def test_report_prints_the_funnel_of_a_real_run(funnel_run):
    _, _, output_dir = funnel_run
    text = write_report(output_dir, os.path.join(output_dir, "..", "report.png")).text
    funnel_lines = text.split("Funnel, ")[1].splitlines()
    assert funnel_lines[1].split() == ["iter", "generated", "failed", "threshold", "dedup", "kept", "trained"]
    assert funnel_lines[3].split() == ["0", "8", "2", "2", "2", "2", "2"]


def test_a_filter_that_sees_no_survivors_still_counts_zero(tiny_llama_path, tmp_path):
    loop = make_loop(
        tiny_llama_path,
        tmp_path / "out",
        reward=lambda p, c, r: [0.0] * len(c),
        filters=[MinReward(1.0), MinReward(0.0, name="never-reached")],
        iterations=1,
    )
    (row,) = loop.run()
    assert row["filter/min-reward/dropped"] == 4
    assert row["filter/never-reached/dropped"] == 0
    assert [stage for stage, _ in funnel(row)][2:4] == ["dropped by min-reward", "dropped by never-reached"]


def test_a_filter_without_reasons_leaves_drop_reason_empty(tiny_llama_path, tmp_path):
    loop = make_loop(
        tiny_llama_path,
        tmp_path / "out",
        reward=lambda p, c, r: [0.0] * len(c),
        filters=[MinReward(1.0)],
        iterations=1,
    )
    loop.run()
    rows = read_samples(samples_path(tmp_path / "out", 0))
    assert {(row["dropped_by"], row["drop_reason"]) for row in rows} == {("min-reward", None)}


class BadReasons(MinReward):
    def drop_reasons(self, samples, keep):
        return ["too low"] * len(samples)


def test_drop_reasons_that_are_not_dicts_are_refused_naming_the_filter(tiny_llama_path, tmp_path):
    from iterframe.plugins.errors import ComponentError

    loop = make_loop(
        tiny_llama_path, tmp_path / "out", reward=lambda p, c, r: [0.0] * len(c), filters=[BadReasons(1.0)]
    )
    with pytest.raises((ValueError, ComponentError), match="min-reward.*drop_reasons must return dicts or None"):
        loop.run()


def rows_with_filters():
    return [
        {"iteration": 0, "num_generated": 8, "reward/num_failed": 1, "filter/threshold/dropped": 5,
         "num_kept": 2, "train/num_samples": 2, "train/tokens": 10},
        {"iteration": 1, "num_generated": 8, "reward/num_failed": 0, "filter/threshold/dropped": 3,
         "filter/dedup/dropped": 1, "num_kept": 4, "train/num_samples": 6, "train/tokens": 30},
        {"iteration": 2, "num_generated": 8, "reward/num_failed": 8, "filter/threshold/dropped": 0,
         "filter/dedup/dropped": 0, "num_kept": 0, "train/num_samples": 0, "train/tokens": 0},
    ]  # fmt: skip


def test_funnel_table_has_a_column_per_stage_and_dash_where_a_row_lacks_it():
    header, lines = funnel_columns(rows_with_filters())
    assert header == [
        "iteration", "generated", "failed", "dropped by threshold", "dropped by dedup", "kept", "trained"
    ]  # fmt: skip
    assert lines[0] == [0, 8, 1, 5, None, 2, 2]
    text = funnel_table(rows_with_filters())
    assert text.splitlines()[3].split() == ["0", "8", "1", "5", "-", "2", "2"]
    assert text.splitlines()[4].split() == ["1", "8", "0", "3", "1", "4", "6"]


def test_funnel_plot_stacks_kept_drops_and_failures_up_to_the_generated_count():
    from matplotlib.figure import Figure

    axes = Figure().subplots()
    draw_funnel(axes, rows_with_filters())
    heights = {container.get_label(): [bar.get_height() for bar in container] for container in axes.containers}
    assert heights == {
        "kept": [2, 4, 0],
        "dropped by threshold": [5, 3, 0],
        "dropped by dedup": [0, 1, 0],
        "failed": [1, 0, 8],
    }
    assert [sum(column) for column in zip(*heights.values())] == [8, 8, 8]
    (trained,) = axes.get_lines()
    assert list(trained.get_ydata()) == [2, 6, 0]


def test_report_plot_has_a_funnel_panel(tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    for row in rows_with_filters():
        write_metrics_row(str(output_dir / "metrics.jsonl"), row)
    report = write_report(str(output_dir))
    assert "Funnel, samples: generated -> failed -> dropped by each filter -> kept -> trained:" in report.text
    assert os.path.getsize(report.plot_path) > 0


class HalfCutGenerator(ScriptedGenerator):
    """Like :class:`ScriptedGenerator`, but every odd sample hit ``max_new_tokens``."""

    def generate(self, prompts, num_samples):
        completions = super().generate(prompts, num_samples)
        for row in completions:
            for index, completion in enumerate(row):
                completion.finish_reason = "length" if index % 2 else "stop"
        return completions


def test_the_funnel_counts_samples_dropped_for_being_cut_at_max_new_tokens(
    tiny_llama_path, tmp_path, plugin_manager
):
    loop = make_loop(
        tiny_llama_path,
        tmp_path / "out",
        generator=HalfCutGenerator(),
        filters=[create_component("filter", "drop-truncated")],
        iterations=1,
        samples_per_prompt=4,
    )
    (row,) = loop.run()
    assert funnel(row) == [
        ("generated", 8),
        ("failed", 0),
        ("dropped by drop-truncated", 4),
        ("kept", 4),
        ("trained", 4),
    ]
    dropped = [sample for sample in read_samples(samples_path(tmp_path / "out", 0)) if sample["dropped_by"]]
    assert {sample["finish_reason"] for sample in dropped} == {"length"}
