"""Built-in loggers: ``console`` (a line or a table per iteration), ``jsonl`` (``metrics.jsonl``), ``wandb`` and
``tensorboard``. Heavy libraries are imported in ``setup()``, only when the logger is used."""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import string
from numbers import Real
from typing import Any, Optional

from iterframe.loop.artifacts import METRICS_FILE, SAMPLE_COLUMNS, sample_row, write_metrics_row
from iterframe.loop.progress import echo
from iterframe.loop.run_state import read_run_file, record_in_run_file
from iterframe.plugins.components import Logger, RunContext, Sample
from iterframe.plugins.hookspecs import hookimpl

__all__ = ["ConsoleLogger", "JsonlLogger", "TensorBoardLogger", "WandbLogger", "sample_table"]


def _table_row(sample: Sample) -> dict[str, Any]:
    """The sample as a row of ``samples.parquet``, with a missing (non-finite) reward as ``None``."""
    row = sample_row(sample)
    if isinstance(row["reward"], float) and not math.isfinite(row["reward"]):
        row["reward"] = None
    return row


def sample_table(samples: list[Sample], limit: Optional[int] = None) -> list[list[Any]]:
    """Rows of ``samples.parquet``'s columns (:data:`iterframe.loop.artifacts.SAMPLE_COLUMNS`) for the first
    ``limit`` samples; chat prompts and non-text references as JSON."""
    return [[row[column] for column in SAMPLE_COLUMNS] for row in map(_table_row, samples[:limit])]


def _numeric_metrics(metrics: dict[str, Any]) -> dict[str, Real]:
    """The metrics a chart can show: finite numbers (booleans as 0/1)."""
    return {
        key: int(value) if isinstance(value, bool) else value
        for key, value in metrics.items()
        if isinstance(value, Real) and math.isfinite(value)
    }


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _shorten(text: Optional[str], width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


#: (label, metric key, format) of the console logger's one-line-per-iteration output.
CONSOLE_LINE = (
    ("reward", "reward/mean", "{:.3f}"),
    ("keep", "keep_rate", "{:.1%}"),
    ("loss", "train/loss", "{:.4f}"),
    ("eval", "eval/reward", "{:.3f}"),
)
CONSOLE_FORMATS = ("line", "table")


def _line_value(value: Any, fmt: str) -> str:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        return "-"
    return fmt.format(value)


class ConsoleLogger(Logger):
    """Prints one line per iteration (reward, keep rate, loss, eval reward, seconds), or with ``format=table``
    a two-column table of its metrics; optionally its best kept samples."""

    name = "console"
    description = "Print each iteration's metrics: one line, or a table (format=table); optionally best samples."
    #: The run's planned iterations (from the run config, when it has them), shown as "iteration 3/30".
    iterations: Optional[int] = None

    @dataclasses.dataclass
    class Options:
        format: str = dataclasses.field(
            default="line",
            metadata={"help": "line: one line per iteration; table: every metric (iterframe run -v)."},
        )
        metrics: list[str] = dataclasses.field(
            default_factory=list, metadata={"help": "Metrics the table shows, in order (default: all)."}
        )
        samples: int = dataclasses.field(default=0, metadata={"help": "Best kept samples to print per iteration."})

        def __post_init__(self):
            if self.format not in CONSOLE_FORMATS:
                raise ValueError(f"format={self.format!r} is not one of {', '.join(CONSOLE_FORMATS)}.")

    def setup(self, context: RunContext) -> None:
        loop_settings = context.config.get("loop") if isinstance(context.config, dict) else None
        iterations = loop_settings.get("iterations") if isinstance(loop_settings, dict) else None
        self.iterations = iterations if isinstance(iterations, int) and not isinstance(iterations, bool) else None

    def log_metrics(self, metrics: dict[str, Any], iteration: int) -> None:
        echo(self._table(metrics, iteration) if self.options.format == "table" else self._line(metrics, iteration))

    def _line(self, metrics: dict[str, Any], iteration: int) -> str:
        total = self.iterations
        width = len(str(total - 1)) if total else 0
        position = f"{iteration:>{width}d}/{total}" if total else str(iteration)
        parts = [f"iteration {position}"]
        parts += [f"{label} {_line_value(metrics.get(key), fmt)}" for label, key, fmt in CONSOLE_LINE]
        parts.append(_line_value(metrics.get("time/total_s"), "{:.1f}s"))
        return "  ".join(parts)

    def _table(self, metrics: dict[str, Any], iteration: int) -> str:
        keys = [key for key in self.options.metrics if key in metrics] if self.options.metrics else list(metrics)
        rows = [(key, _format_value(metrics[key])) for key in keys if key != "iteration"]
        width = max([len("metric")] + [len(key) for key, _ in rows])
        lines = [f"iteration {iteration}", f"  {'metric':<{width}}  value", f"  {'-' * width}  -----"]
        lines += [f"  {key:<{width}}  {value}" for key, value in rows]
        return "\n".join(lines)

    def log_samples(self, samples: list[Sample], iteration: int) -> None:
        if self.options.samples <= 0:
            return
        rows = sorted(
            (_table_row(sample) for sample in samples if sample.kept),
            key=lambda row: math.inf if row["reward"] is None else -row["reward"],
        )
        lines = [f"iteration {iteration}: best kept samples"]
        for row in rows[: self.options.samples]:
            reward = "-" if row["reward"] is None else _format_value(row["reward"])
            prompt, completion = _shorten(row["prompt"], 40), _shorten(row["completion"], 60)
            lines.append(f"  [{reward}] {prompt} => {completion}")
        echo("\n".join(lines))


class JsonlLogger(Logger):
    """Writes each iteration's metrics as one row of ``OUTPUT_DIR/metrics.jsonl`` (atomically, never twice)."""

    name = "jsonl"
    description = "Write one row per iteration to OUTPUT_DIR/metrics.jsonl (atomic; a rerun row replaces the old)."

    @dataclasses.dataclass
    class Options:
        path: Optional[str] = dataclasses.field(
            default=None, metadata={"help": "File to write (default: OUTPUT_DIR/metrics.jsonl)."}
        )

    def setup(self, context: RunContext) -> None:
        if self.options.path is None and context.output_dir is None:
            raise ValueError("The jsonl logger needs the run's output_dir or a path option.")
        self.path = self.options.path or os.path.join(context.output_dir, METRICS_FILE)

    def log_metrics(self, metrics: dict[str, Any], iteration: int) -> None:
        row = dict(metrics)
        row.setdefault("iteration", iteration)
        write_metrics_row(self.path, row)


#: The ``run.json`` key of the run's W&B run id.
WANDB_RUN_ID = "wandb/run_id"


class WandbLogger(Logger):
    """Logs metrics and a per-iteration samples table to Weights & Biases (``WANDB_MODE=offline`` works); a resumed
    run goes on logging to the W&B run it started (its id is kept in ``run.json``)."""

    name = "wandb"
    description = "Log metrics and a samples table per iteration to Weights & Biases (online or offline)."

    @dataclasses.dataclass
    class Options:
        project: str = dataclasses.field(default="iterframe", metadata={"help": "W&B project."})
        entity: Optional[str] = dataclasses.field(default=None, metadata={"help": "W&B entity (team or user)."})
        run_name: Optional[str] = dataclasses.field(default=None, metadata={"help": "Run name shown in W&B."})
        mode: Optional[str] = dataclasses.field(
            default=None, metadata={"help": "online, offline or disabled (default: WANDB_MODE, else online)."}
        )
        tags: list[str] = dataclasses.field(default_factory=list, metadata={"help": "Tags of the W&B run."})
        dir: Optional[str] = dataclasses.field(
            default=None, metadata={"help": "Where W&B writes its files (default: the run's output_dir)."}
        )
        max_samples: int = dataclasses.field(
            default=256, metadata={"help": "Rows of the samples table per iteration (0: no table)."}
        )

        def __post_init__(self):
            if self.mode not in (None, "online", "offline", "disabled"):
                raise ValueError(f"mode must be online, offline or disabled, got {self.mode!r}.")

    def setup(self, context: RunContext) -> None:
        import wandb

        self.wandb = wandb
        directory = self.options.dir or context.output_dir
        if directory:
            os.makedirs(directory, exist_ok=True)
        self.run = wandb.init(
            project=self.options.project,
            entity=self.options.entity,
            name=self.options.run_name,
            mode=self.options.mode,
            tags=list(self.options.tags) or None,
            dir=directory,
            config=context.config,
            reinit="create_new",
            **self._resumed_run(context),
        )

    def _resumed_run(self, context: RunContext) -> dict[str, Any]:
        """The W&B run of this output folder: the id ``run.json`` recorded (a resumed run goes on logging to
        it), else a new id, recorded there."""
        if context.output_dir is None or not os.path.isfile(os.path.join(context.output_dir, "run.json")):
            return {}
        run_id = read_run_file(context.output_dir).get(WANDB_RUN_ID)
        if not isinstance(run_id, str):
            run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
            if context.trainer is None or context.trainer.args.should_save:
                record_in_run_file(context.output_dir, {WANDB_RUN_ID: run_id})
        return {"id": run_id, "resume": "allow"}

    def log_metrics(self, metrics: dict[str, Any], iteration: int) -> None:
        self.run.log(_numeric_metrics(metrics), step=iteration)

    def log_samples(self, samples: list[Sample], iteration: int) -> None:
        if self.options.max_samples <= 0:
            return
        table = self.wandb.Table(
            columns=list(SAMPLE_COLUMNS), data=sample_table(samples, self.options.max_samples)
        )
        self.run.log({"samples": table}, step=iteration)

    def close(self) -> None:
        if getattr(self, "run", None) is not None:
            self.run.finish()
            self.run = None


class TensorBoardLogger(Logger):
    """Writes metrics as scalars and each iteration's samples as a text table to TensorBoard event files."""

    name = "tensorboard"
    description = "Write metrics as scalars and samples as a text table for TensorBoard."

    @dataclasses.dataclass
    class Options:
        log_dir: Optional[str] = dataclasses.field(
            default=None, metadata={"help": "Event file directory (default: OUTPUT_DIR/tensorboard)."}
        )
        max_samples: int = dataclasses.field(
            default=32, metadata={"help": "Rows of the samples text table per iteration (0: none)."}
        )

    def setup(self, context: RunContext) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if self.options.log_dir is None and context.output_dir is None:
            raise ValueError("The tensorboard logger needs the run's output_dir or a log_dir option.")
        self.log_dir = self.options.log_dir or os.path.join(context.output_dir, "tensorboard")
        os.makedirs(self.log_dir, exist_ok=True)
        self.summary_writer = SummaryWriter
        self.writer = None

    def _writer(self, iteration: int):
        """The event writer, opened at the first iteration this process logs: TensorBoard then drops the events
        of that iteration and later ones from earlier files (``purge_step``), those of iterations a crashed run
        logged and the resumed run does again."""
        if self.writer is None:
            self.writer = self.summary_writer(log_dir=self.log_dir, purge_step=iteration)
        return self.writer

    def log_metrics(self, metrics: dict[str, Any], iteration: int) -> None:
        writer = self._writer(iteration)
        for key, value in _numeric_metrics(metrics).items():
            if key != "iteration":
                writer.add_scalar(key, value, global_step=iteration)
        writer.flush()

    def log_samples(self, samples: list[Sample], iteration: int) -> None:
        if self.options.max_samples <= 0:
            return
        writer = self._writer(iteration)
        header = "| " + " | ".join(SAMPLE_COLUMNS) + " |"
        lines = [header, "|" + "---|" * len(SAMPLE_COLUMNS)]
        for row in sample_table(samples, self.options.max_samples):
            cells = [_shorten("" if cell is None else str(cell), 200).replace("|", "\\|") for cell in row]
            lines.append("| " + " | ".join(cells) + " |")
        writer.add_text("samples", "\n".join(lines), global_step=iteration)
        writer.flush()

    def close(self) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.close()
            self.writer = None


@hookimpl
def register_loggers(register):
    for logger_class in (ConsoleLogger, JsonlLogger, WandbLogger, TensorBoardLogger):
        register(logger_class)
