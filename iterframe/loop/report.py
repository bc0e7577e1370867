"""``iterframe report``: a plot and a summary table of a run's ``metrics.jsonl``.

Works on a finished, running or killed run: it reads whatever iterations have finished, and skips (with a note)
a line that is not complete JSON, such as the last line of a file a crash cut short.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any, Optional

import yaml

from iterframe.loop.artifacts import METRICS_FILE, atomic_write_bytes
from iterframe.loop.funnel import FUNNEL_TITLE, draw_funnel, funnel_columns, legend_below
from iterframe.loop.run_state import FINAL_DIR

__all__ = [
    "REPORT_FILE",
    "Report",
    "closing_summary",
    "build_figure",
    "eval_endpoints",
    "funnel_table",
    "load_run_metrics",
    "plot_metrics",
    "run_name",
    "trend_line",
    "summary_table",
    "write_report",
]

REPORT_FILE = "report.png"
CONFIG_FILE = "config.yaml"

#: (metric key, label) of the reward curves, in plot order.
REWARD_CURVES = (("reward/mean", "all samples"), ("eval/reward", "eval"))
#: (header, metric key, format) of the summary table's columns.
TABLE_COLUMNS = (
    ("iter", "iteration", "{:d}"),
    ("reward", "reward/mean", "{:.3f}"),
    ("kept reward", "reward/kept_mean", "{:.3f}"),
    ("eval reward", "eval/reward", "{:.3f}"),
    ("keep rate", "keep_rate", "{:.1%}"),
    ("kept", "num_kept", "{:d}"),
    ("generated", "num_generated", "{:d}"),
    ("loss", "train/loss", "{:.4f}"),
    ("time (s)", "time/total_s", "{:.1f}"),
)


class ReportError(ValueError):
    """The output directory holds no run to report on."""


@dataclasses.dataclass
class Report:
    """What ``write_report`` produced: the table text, the plot's path and notes on skipped lines."""

    text: str
    plot_path: str
    notes: list[str]


def _number(value: Any) -> float:
    """A metric as a float for plotting; missing or non-numeric values are NaN (a gap in the curve)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def load_run_metrics(output_dir: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of ``OUTPUT_DIR/metrics.jsonl`` sorted by iteration, and notes about lines that were skipped.

    Raises:
        ReportError: the folder or its ``metrics.jsonl`` does not exist.
    """
    if not os.path.isdir(output_dir):
        raise ReportError(f"{output_dir!r} is not a folder; pass the --output-dir of an `iterframe run`.")
    path = os.path.join(output_dir, METRICS_FILE)
    if not os.path.isfile(path):
        raise ReportError(f"{output_dir!r} has no {METRICS_FILE}: no iteration of a run has finished there yet.")
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    rows, notes = [], []
    last_line = max((number for number, line in enumerate(lines, start=1) if line.strip()), default=0)
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("iteration"), int):
            reason = (
                "is cut short (the run stopped while writing it)" if line_number == last_line else "is damaged"
            )
            notes.append(f"Skipped line {line_number} of {path}: it {reason}.")
            continue
        rows.append(row)
    rows.sort(key=lambda row: row["iteration"])
    return [_with_total_time(row) for row in rows], notes


def _with_total_time(row: dict[str, Any]) -> dict[str, Any]:
    times = [_number(value) for key, value in row.items() if key.startswith("time/") and key != "time/total_s"]
    finite = [value for value in times if math.isfinite(value)]
    if "time/total_s" in row or not finite:
        return row
    return {**row, "time/total_s": sum(finite)}


def _planned_iterations(output_dir: str) -> Optional[int]:
    """``loop.iterations`` from the run's saved ``config.yaml``, when it is there and readable."""
    try:
        with open(os.path.join(output_dir, CONFIG_FILE), encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return None
    iterations = (config or {}).get("loop", {}).get("iterations") if isinstance(config, dict) else None
    return iterations if isinstance(iterations, int) else None


def eval_endpoints(rows: list[dict[str, Any]]) -> Optional[tuple[float, float]]:
    """``(initial, final)`` held-out eval reward: the starting model's (``eval/initial_reward``, else the first
    ``eval/reward``) and the last ``eval/reward`` of an iteration that was not rolled back; ``None`` when the run
    has no eval."""
    kept_rows = [row for row in rows if not row.get("rolled_back")]
    evals = [value for value in (_number(row.get("eval/reward")) for row in kept_rows) if math.isfinite(value)]
    if not evals:
        return None
    initials = [_number(row.get("eval/initial_reward")) for row in rows]
    initial = next((value for value in initials if math.isfinite(value)), evals[0])
    return initial, evals[-1]


def _draw_rewards(axes, rows: list[dict[str, Any]]) -> None:
    """Reward curves, and the initial -> final eval reward marked: a dashed line at the initial value and the
    change in the title."""
    iterations = [row["iteration"] for row in rows]
    for key, label in REWARD_CURVES:
        values = [_number(row.get(key)) for row in rows]
        if any(math.isfinite(value) for value in values):
            axes.plot(iterations, values, marker="o", label=label)
    endpoints = eval_endpoints(rows)
    title = "reward"
    if endpoints is not None:
        initial, final = endpoints
        axes.axhline(initial, linestyle="--", color="tab:gray", linewidth=1, label=f"initial eval {initial:.2f}")
        title = f"reward (eval {initial:.2f} -> {final:.2f})"
    axes.set_title(title)
    if axes.get_lines():
        legend_below(axes)


def _draw_keep_rate(axes, rows: list[dict[str, Any]]) -> None:
    """Keep rate in percent, on an axis fitted to the values (a keep rate of a few percent stays readable)."""
    from matplotlib.ticker import PercentFormatter

    values = [_number(row.get("keep_rate")) for row in rows]
    axes.plot([row["iteration"] for row in rows], values, marker="o", color="tab:purple")
    finite = [value for value in values if math.isfinite(value)]
    top = min(1.0, max(finite, default=0.0) * 1.15) or 0.01
    axes.set_ylim(0, top)
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    axes.set_title("keep rate")


def build_figure(rows: list[dict[str, Any]], title: Optional[str] = None):
    """The report's matplotlib ``Figure``: reward (all / eval, initial -> final eval marked), the sample funnel,
    keep rate and loss per iteration, under ``title``."""
    from matplotlib.figure import Figure  # a Figure without pyplot renders with Agg and touches no global state

    iterations = [row["iteration"] for row in rows]
    figure = Figure(figsize=(16, 3.9), layout="constrained")
    if title:
        figure.suptitle(title, fontweight="bold")
    reward_axes, funnel_axes, keep_axes, loss_axes = figure.subplots(1, 4)
    _draw_rewards(reward_axes, rows)
    draw_funnel(funnel_axes, rows)
    _draw_keep_rate(keep_axes, rows)
    loss_axes.plot(iterations, [_number(row.get("train/loss")) for row in rows], marker="o", color="tab:red")
    loss_axes.set_title("train loss")
    for axes in (reward_axes, funnel_axes, keep_axes, loss_axes):
        axes.set_xlabel("iteration")
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    return figure


def plot_metrics(rows: list[dict[str, Any]], path: str, title: Optional[str] = None) -> str:
    """Write :func:`build_figure` of ``rows`` as a PNG at ``path``."""
    buffer = io.BytesIO()
    build_figure(rows, title).savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def run_name(output_dir: str) -> str:
    """The name a run goes by: its output folder's name."""
    return os.path.basename(os.path.normpath(os.path.abspath(output_dir)))


def _cell(value: Any, fmt: str) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return "-"
    if fmt == "{:d}":
        value = int(value)
    return fmt.format(value)


def _text_table(header: list[str], lines: list[list[str]]) -> str:
    """Right-aligned columns under ``header`` and a rule."""
    cells = [header, *lines]
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]
    text = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text)


def summary_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table, one line per iteration (``-`` where a metric is missing)."""
    return _text_table(
        [header for header, _, _ in TABLE_COLUMNS],
        [[_cell(row.get(key), fmt) for _, key, fmt in TABLE_COLUMNS] for row in rows],
    )


def funnel_table(rows: list[dict[str, Any]]) -> str:
    """Where each iteration's samples went, as a plain-text table with a title line (``-``: not recorded)."""
    header, lines = funnel_columns(rows)
    header = ["iter", *(name.removeprefix("dropped by ") for name in header[1:])]
    return f"Funnel, {FUNNEL_TITLE}:\n" + _text_table(
        header, [[_cell(value, "{:d}") for value in line] for line in lines]
    )


def trend_line(rows: list[dict[str, Any]]) -> Optional[str]:
    """``eval/reward`` from the starting model's (``eval/initial_reward``, else the first iteration's) to the
    model the run ended with (rolled-back iterations left out); else ``reward/mean`` at its first and last
    finished iteration."""
    for key in ("eval/reward", "reward/mean"):
        points = [
            (f"iteration {row['iteration']}", _number(row.get(key))) for row in rows if not row.get("rolled_back")
        ]
        if key == "eval/reward" and rows:
            points.insert(0, ("initial", _number(rows[0].get("eval/initial_reward"))))
        points = [(label, value) for label, value in points if math.isfinite(value)]
        if len(points) == 1:  # nothing to compare it with
            ((label, value),) = points
            starting_model_left_out = key == "eval/reward" and label != "initial"
            why = " (initial_eval off: the starting model was not evaluated)" if starting_model_left_out else ""
            return f"{key}: {value:.3f} ({label}, the only value){why}"
        if points:
            (first_label, first), (last_label, last) = points[0], points[-1]
            return f"{key}: {first:.3f} ({first_label}) -> {last:.3f} ({last_label}), change {last - first:+.3f}"
    return None


def top_rewarded_samples(samples: list, count: int = 3, width: int = 160) -> Optional[str]:
    """The ``count`` best-rewarded samples (prompt and completion, each cut at ``width`` characters) as lines to
    read: a reward that pays for the wrong thing shows in its best samples at once. ``None`` without a score."""
    scored = [sample for sample in samples if math.isfinite(_number(sample.reward))]
    if not scored:
        return None
    best = sorted(scored, key=lambda sample: -sample.reward)[:count]

    def cut(text) -> str:
        text = text if isinstance(text, str) else " ".join(str(part.get("content", "")) for part in text)
        return repr(text if len(text) <= width else text[:width] + "...")

    lines = [
        f"reward {sample.reward:.3f}: prompt {cut(sample.prompt)} -> {cut(sample.completion)}" for sample in best
    ]
    return (
        f"Top-rewarded samples of iteration {best[0].iteration} (does the reward pay for what you mean?):\n  "
        + ("\n  ".join(lines))
    )


def eval_falls_while_reward_rises(rows: list[dict[str, Any]]) -> Optional[str]:
    """A warning when the last three evaluated iterations (rolled-back ones left out) have ``eval/reward`` falling
    twice in a row while ``reward/mean`` rose: the model may be learning the training prompts (or the reward's
    blind spots) rather than the task. ``None`` otherwise."""
    points = [
        (row["iteration"], _number(row.get("eval/reward")), _number(row.get("reward/mean")))
        for row in rows
        if not row.get("rolled_back")
    ]
    points = [point for point in points if math.isfinite(point[1]) and math.isfinite(point[2])][-3:]
    if len(points) < 3:
        return None
    (_, eval_a, reward_a), (_, eval_b, reward_b), (last, eval_c, reward_c) = points
    if not (eval_a > eval_b > eval_c and reward_a < reward_b < reward_c):
        return None
    return (
        f"eval/reward fell two iterations in a row ({eval_a:.3f} -> {eval_b:.3f} -> {eval_c:.3f}, iteration "
        f"{last}) while the training reward rose ({reward_a:.3f} -> {reward_b:.3f} -> {reward_c:.3f}): the model "
        "may be fitting the training prompts or the reward rather than the task. Consider a lower "
        "train.learning_rate, loop.replay_buffer_size, or loop.accept_if_eval_drop_below to roll such iterations "
        "back (docs/loop.md)."
    )


def closing_summary(
    rows: list[dict[str, Any]], output_dir: str, notes: Sequence[str] = (), table: bool = True
) -> str:
    """What a run prints when it ends: the summary table (unless ``table`` is false, as in quiet runs),
    ``eval/reward`` from the starting model to the final one, ``notes`` and where the artifacts are."""
    lines = ["", summary_table(rows)] if table else []
    trend = trend_line(rows)
    if trend:
        lines.append(trend)
    lines += notes
    lines.append(f"Artifacts: {output_dir} (final model: {os.path.join(output_dir, FINAL_DIR)})")
    return "\n".join(lines)


def write_report(output_dir: str, plot_path: Optional[str] = None) -> Report:
    """Plot ``OUTPUT_DIR/metrics.jsonl`` to ``plot_path`` (default ``OUTPUT_DIR/report.png``) and build the table.

    Raises:
        ReportError: no folder, no ``metrics.jsonl``, or no finished iteration in it.
    """
    rows, notes = load_run_metrics(output_dir)
    if not rows:
        raise ReportError(
            f"{os.path.join(output_dir, METRICS_FILE)} holds no finished iteration yet; try again later."
        )
    plot_path = plot_path or os.path.join(output_dir, REPORT_FILE)
    planned = _planned_iterations(output_dir)
    finished = len(rows)
    progress = f"{finished} finished iteration{'s' if finished != 1 else ''}"
    if planned is not None:
        progress = f"{finished} of {planned} iterations finished"
    plot_metrics(rows, plot_path, title=f"{run_name(output_dir)} ({progress})")
    status = progress
    if rows[-1].get("stopped_early"):
        status += (
            f" (stopped early: no new best eval/reward; the best model is in {os.path.join(output_dir, 'best')})"
        )
    elif planned is not None and finished < planned:
        status += " (running or stopped; `iterframe run --resume` continues a stopped run)"
    lines = [f"Run {output_dir}: {status}", "", summary_table(rows), "", funnel_table(rows), ""]
    trend = trend_line(rows)
    if trend:
        lines.append(trend)
    lines.append(f"Plot: {plot_path}")
    return Report(text="\n".join(lines), plot_path=plot_path, notes=notes)
