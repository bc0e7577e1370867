"""Where an iteration's samples went: generated -> failed -> dropped by each filter -> kept -> trained.

The funnel is read from a metrics row (``num_generated``, ``reward/num_failed``, ``filter/<name>/dropped`` in
chain order, ``num_kept``, ``train/num_samples``), so it works on any run's ``metrics.jsonl``.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["FUNNEL_TITLE", "draw_funnel", "funnel", "funnel_columns"]

FUNNEL_TITLE = "samples: generated -> failed -> dropped by each filter -> kept -> trained"
_FILTER_PREFIX, _FILTER_SUFFIX = "filter/", "/dropped"
_VERDICT_PREFIX = "reward/verdict/"


def _count(value: Any) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return int(value)


def _filter_names(row: dict[str, Any]) -> list[str]:
    """The plugins and filters that dropped samples, in the order they ran (the row's key order)."""
    return [
        key[len(_FILTER_PREFIX) : -len(_FILTER_SUFFIX)]
        for key in row
        if key.startswith(_FILTER_PREFIX) and key.endswith(_FILTER_SUFFIX)
    ]


def funnel(row: dict[str, Any]) -> list[tuple[str, Optional[int]]]:
    """``(stage, samples)`` of one metrics row: ``generated``, ``failed``, ``verdict V`` per verdict the
    reward gave (``reward/verdict/V``: a breakdown of the scored samples, not a stage they leave by), one
    ``dropped by NAME`` per filter (or ``on_samples_scored`` plugin), ``kept`` and ``trained`` (kept + replayed
    samples trained on; 0 when the iteration trained nothing). A count the row does not hold is ``None``."""
    stages = [("generated", _count(row.get("num_generated"))), ("failed", _count(row.get("reward/num_failed")))]
    stages += [  # how the reward judged the samples, where it says (code-tests: pass, timeout, crash, ...)
        (f"verdict {key[len(_VERDICT_PREFIX) :]}", _count(value))
        for key, value in row.items()
        if key.startswith(_VERDICT_PREFIX)
    ]
    stages += [
        (f"dropped by {name}", _count(row.get(f"{_FILTER_PREFIX}{name}{_FILTER_SUFFIX}")))
        for name in _filter_names(row)
    ]
    trained = _count(row.get("train/num_samples"))
    if row.get("train/tokens") == 0:  # nothing was trained (nothing kept, or fewer samples than processes)
        trained = 0
    stages += [("kept", _count(row.get("num_kept"))), ("trained", trained)]
    return stages


def funnel_columns(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Optional[int]]]]:
    """The funnel of every row as a table: the stage names (every stage any row has, in order) and one line of
    counts per row (``None`` where a row lacks the stage), the iteration first."""
    stage_names: list[str] = []
    per_row = []
    for row in rows:
        stages = dict(funnel(row))
        per_row.append(stages)
        for name in stages:
            if name not in stage_names:
                stage_names.append(name)
    # a filter seen only in later rows still goes before "kept" and "trained"
    stage_names = [name for name in stage_names if name not in ("kept", "trained")] + ["kept", "trained"]
    lines = [[row["iteration"], *(stages.get(name) for name in stage_names)] for row, stages in zip(rows, per_row)]
    return ["iteration", *stage_names], lines


def draw_funnel(axes, rows: list[dict[str, Any]]) -> None:
    """One stacked bar per iteration on matplotlib ``axes``: kept at the bottom, then what each filter dropped,
    then failed samples, adding up to the samples generated; trained samples as a line."""
    header, lines = funnel_columns(rows)
    iterations = [line[0] for line in lines]
    columns = {name: [line[index] or 0 for line in lines] for index, name in enumerate(header) if index}
    bottom = [0] * len(lines)
    segments = ["kept", *(name for name in header if name.startswith("dropped by ")), "failed"]
    for name in segments:
        if not any(columns[name]):
            continue
        axes.bar(iterations, columns[name], bottom=bottom, label=name, width=0.8)
        bottom = [low + value for low, value in zip(bottom, columns[name])]
    axes.plot(iterations, columns["trained"], marker="o", color="black", label="trained")
    axes.set_title("samples per iteration")
    legend_below(axes)


def legend_below(axes) -> None:
    """The legend of matplotlib ``axes`` under its x-axis label, where it covers no curve or bar."""
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize="small", frameon=False)
