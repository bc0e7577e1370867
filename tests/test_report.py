"""``iterframe report``: plot and summary table from metrics.jsonl of finished, running and killed runs."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from click.testing import CliRunner

from iterframe.cli import cli
from iterframe.loop.artifacts import write_metrics_row
from iterframe.loop.report import load_run_metrics, summary_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(iteration: int, **overrides) -> dict:
    row = {
        "iteration": iteration,
        "reward/mean": 0.1 * (iteration + 1),
        "reward/max": 1.0,
        "reward/kept_mean": 0.9,
        "keep_rate": 0.25,
        "num_generated": 8,
        "num_kept": 2,
        "train/loss": 2.5 - iteration,
        "train/tokens": 40,
        "eval/reward": 0.2 + 0.3 * iteration,
        "time/generate_s": 1.0,
        "time/score_s": 0.5,
        "time/train_s": 2.0,
    }
    row.update(overrides)
    return row


def _finished_run(tmp_path, iterations: int = 3, planned: int | None = None) -> str:
    output_dir = str(tmp_path / "run")
    os.makedirs(output_dir)
    for iteration in range(iterations):
        write_metrics_row(os.path.join(output_dir, "metrics.jsonl"), _row(iteration))
    with open(os.path.join(output_dir, "config.yaml"), "w") as handle:
        yaml.safe_dump({"loop": {"iterations": planned or iterations}}, handle)
    return output_dir


def test_report_writes_png_and_prints_one_table_line_per_iteration(tmp_path):
    output_dir = _finished_run(tmp_path, iterations=3)
    result = CliRunner().invoke(cli, ["report", output_dir])
    assert result.exit_code == 0, result.output
    with open(os.path.join(output_dir, "report.png"), "rb") as handle:
        assert handle.read(8) == PNG_MAGIC
    summary = result.output.split("Funnel")[0]
    table_lines = [line for line in summary.splitlines() if line.strip()[:1].isdigit()]
    assert [line.split()[0] for line in table_lines] == ["0", "1", "2"]
    assert "3 of 3 iterations finished" in result.output
    assert "eval/reward: 0.200 (iteration 0) -> 0.800 (iteration 2), change +0.600" in result.output


def test_report_on_killed_run_skips_truncated_last_line_with_note(tmp_path):
    output_dir = _finished_run(tmp_path, iterations=2, planned=5)
    with open(os.path.join(output_dir, "metrics.jsonl"), "a") as handle:
        handle.write(json.dumps(_row(2))[:25])
    result = CliRunner().invoke(cli, ["report", output_dir])
    assert result.exit_code == 0, result.output
    assert "Skipped line 3" in result.output and "cut short" in result.output
    assert "2 of 5 iterations finished" in result.output
    assert "--resume" in result.output
    assert os.path.getsize(os.path.join(output_dir, "report.png")) > 0


def test_load_run_metrics_sorts_rows_and_skips_damaged_middle_line(tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    lines = [json.dumps(_row(1)), "{not json", json.dumps(_row(0)), ""]
    (output_dir / "metrics.jsonl").write_text("\n".join(lines))
    rows, notes = load_run_metrics(str(output_dir))
    assert [row["iteration"] for row in rows] == [0, 1]
    assert len(notes) == 1 and "line 2" in notes[0] and "damaged" in notes[0]


def test_summary_table_shows_dash_for_missing_metrics_and_total_time(tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    row = _row(0)
    del row["eval/reward"]
    row["train/loss"] = None
    (output_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    rows, _ = load_run_metrics(str(output_dir))
    header, _, line = summary_table(rows).splitlines()
    values = dict(zip([h.strip() for h in header.split("  ") if h.strip()], line.split()))
    assert values["eval reward"] == "-"
    assert values["loss"] == "-"
    assert values["keep rate"] == "25.0%"
    assert values["time (s)"] == "3.5"


def test_report_plot_option_writes_elsewhere(tmp_path):
    output_dir = _finished_run(tmp_path, iterations=1)
    plot_path = str(tmp_path / "plots" / "mine.png")
    report = write_report(output_dir, plot_path)
    assert report.plot_path == plot_path
    assert os.path.isfile(plot_path)
    assert not os.path.exists(os.path.join(output_dir, "report.png"))


def test_report_without_eval_reports_reward_trend(tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    for iteration in range(2):
        row = _row(iteration)
        del row["eval/reward"]
        write_metrics_row(str(output_dir / "metrics.jsonl"), row)
    report = write_report(str(output_dir))
    assert "reward/mean: 0.100 (iteration 0) -> 0.200 (iteration 1)" in report.text
    assert "2 finished iterations" in report.text


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "is not a folder"),
        ("no-metrics", "has no metrics.jsonl"),
        ("empty-metrics", "holds no finished iteration"),
    ],
)
def test_report_errors_name_the_problem(tmp_path, setup, message):
    output_dir = tmp_path / "run"
    if setup != "missing":
        output_dir.mkdir()
    if setup == "empty-metrics":
        (output_dir / "metrics.jsonl").write_text('{"iteration": 0, "reward/me')
    result = CliRunner().invoke(cli, ["report", str(output_dir)])
    assert result.exit_code == 1
    assert message in result.output
    assert not (output_dir / "report.png").exists()


def _axes(figure, title: str):
    return next(axes for axes in figure.axes if axes.get_title() == title)


def test_report_plot_is_titled_with_the_run_name_and_progress(tmp_path, monkeypatch):
    from iterframe.loop import report as report_module

    titles = []
    build_figure = report_module.build_figure
    monkeypatch.setattr(
        report_module, "build_figure", lambda rows, title=None: titles.append(title) or build_figure(rows, title)
    )
    output_dir = _finished_run(tmp_path, iterations=2, planned=4)
    write_report(output_dir)
    assert titles == ["run (2 of 4 iterations finished)"]
    figure = build_figure([_row(0)], titles[0])
    assert figure.get_suptitle() == "run (2 of 4 iterations finished)"


def test_keep_rate_axis_is_fitted_to_small_keep_rates():
    from iterframe.loop.report import build_figure

    rows = [_row(iteration, keep_rate=rate) for iteration, rate in enumerate((0.03, 0.045, 0.06))]
    low, high = _axes(build_figure(rows), "keep rate").get_ylim()
    assert low == 0
    assert 0.06 < high < 0.1


def test_reward_panel_marks_initial_and_final_eval_and_has_no_kept_reward_line():
    from iterframe.loop.report import build_figure, eval_endpoints

    rows = [_row(0, **{"eval/initial_reward": 0.05}), _row(1), _row(2)]
    assert eval_endpoints(rows) == (0.05, 0.8)
    axes = _axes(build_figure(rows), "reward (eval 0.05 -> 0.80)")
    labels = [line.get_label() for line in axes.get_lines()]
    assert "initial eval 0.05" in labels
    assert not any("kept" in label for label in labels)


def test_legends_and_the_eval_change_sit_where_they_cover_no_curve_or_bar():
    import io

    from iterframe.loop.report import build_figure

    rows = [_row(i, **{"filter/threshold/dropped": 5, "eval/reward": 0.2 + 0.1 * i}) for i in range(6)]
    figure = build_figure(rows)
    figure.savefig(io.BytesIO(), format="png", dpi=100)  # laid out as report.png is
    reward_axes, funnel_axes = figure.axes[:2]
    assert reward_axes.get_title() == "reward (eval 0.20 -> 0.70)" and not reward_axes.texts  # not on the line
    for axes in (reward_axes, funnel_axes):
        legend, plot_area = axes.get_legend().get_window_extent(), axes.get_window_extent()
        assert legend.y1 <= plot_area.y0  # below the plot, over neither bars nor curves
        assert figure.bbox.y0 <= legend.y0  # and inside the picture


def test_without_a_recorded_initial_eval_the_first_eval_is_the_initial_one():
    from iterframe.loop.report import eval_endpoints

    assert eval_endpoints([_row(0), _row(1)]) == (0.2, 0.5)
    assert eval_endpoints([{"iteration": 0, "reward/mean": 0.1}]) is None


def test_initial_to_final_leaves_out_rolled_back_iterations():
    from iterframe.loop.report import eval_endpoints, trend_line

    rows = [_row(0, **{"eval/initial_reward": 0.1}), _row(1, rolled_back=True, **{"eval/reward": 0.05})]
    assert eval_endpoints(rows) == (0.1, 0.2)
    assert trend_line(rows) == "eval/reward: 0.100 (initial) -> 0.200 (iteration 0), change +0.100"


def test_a_single_value_is_stated_once_not_compared_with_itself():
    from iterframe.loop.report import trend_line

    eval_only_after = [_row(0, **{"eval/reward": 0.217})]
    assert trend_line(eval_only_after) == (
        "eval/reward: 0.217 (iteration 0, the only value) (initial_eval off: the starting model was not evaluated)"
    )
    no_eval = [{"iteration": 0, "reward/mean": 0.5}]
    assert trend_line(no_eval) == "reward/mean: 0.500 (iteration 0, the only value)"


def test_report_says_when_a_run_stopped_early(tmp_path):
    output_dir = _finished_run(tmp_path, iterations=2, planned=5)
    write_metrics_row(os.path.join(output_dir, "metrics.jsonl"), _row(1, stopped_early=True))
    text = write_report(output_dir).text
    assert "2 of 5 iterations finished (stopped early: no new best eval/reward; the best model is in" in text
    assert "--resume" not in text
