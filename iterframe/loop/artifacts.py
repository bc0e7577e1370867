"""The files a run leaves in its output directory, written atomically.

Layout (a contract: ``iterframe report``, loggers and resume read it)::

    OUTPUT_DIR/metrics.jsonl                        one JSON object per finished iteration, sorted by iteration
    OUTPUT_DIR/iterations/NNNNNN/samples.parquet    every sample generated in iteration NNNNNN (its text, and the
                                                    token ids that were sampled, with the tokenizer's hash)

Every write goes to a temporary file in the target's directory and is moved into place with ``os.replace``, so a
reader (or a resumed run) sees either the old file or the new one, never a half-written one. The file gets the
mode the umask asks for (a temporary file alone would be private to its owner).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from typing import Any, Union

from iterframe.engine.file_modes import follow_umask
from iterframe.engine.json_object import parse_json_lines
from iterframe.plugins.components import Sample

__all__ = [
    "METRICS_FILE",
    "SAMPLES_FILE",
    "SAMPLE_COLUMNS",
    "TOKEN_ID_COLUMNS",
    "atomic_write_bytes",
    "atomic_write_json",
    "iteration_dir",
    "read_metrics",
    "read_samples",
    "sample_row",
    "sample_from_row",
    "samples_path",
    "truncate_metrics",
    "write_metrics_row",
    "write_samples",
]

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.parquet"

#: Columns of ``samples.parquet``, in order.
SAMPLE_COLUMNS = (
    "iteration",
    "prompt_id",
    "sample_index",
    "prompt",
    "completion",
    "reference",
    "reward",
    "kept",
    "dropped_by",
    "drop_reason",
    "generator",
    "num_tokens",
    "finish_reason",
    "info",
)
#: Columns of ``samples.parquet`` after :data:`SAMPLE_COLUMNS`: the prompt's ids as the generator encoded it, the
#: completion's sampled ids, and the fingerprint of the tokenizer (and chat template) they belong to
#: (:func:`iterframe.generation.token_ids.tokenizer_fingerprint`); null where the generator gave no ids.
TOKEN_ID_COLUMNS = ("prompt_token_ids", "completion_token_ids", "tokenizer_hash")


# --- atomic writes ------------------------------------------------------------------------------------------


def atomic_write_bytes(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and ``os.replace``, with the
    mode the umask asks for."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp_file:
            temp_file.write(data)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        follow_umask(temp_path)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def atomic_write_json(path: Union[str, os.PathLike], obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON (UTF-8, sorted keys kept as given) to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=indent, default=_json_default) + "\n").encode("utf-8"))


def _json_default(value: Any) -> Any:
    """JSON for the values a metrics row or loop state may hold beyond plain types (numpy/torch scalars)."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# --- metrics.jsonl ------------------------------------------------------------------------------------------


def _finite_or_none(value: Any) -> Any:
    """NaN/inf are not JSON; a metric that has no value is written as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _iteration_of(row: dict, path: str) -> int:
    iteration = row.get("iteration")
    if not isinstance(iteration, int) or isinstance(iteration, bool):
        raise ValueError(f"A metrics row needs an integer 'iteration' key (writing {path!r}), got {iteration!r}.")
    return iteration


def read_metrics(path: Union[str, os.PathLike]) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file, in file order; ``[]`` when the file does not exist.

    Raises:
        ValueError: a line is not a JSON object (names the file and line).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return parse_json_lines(handle, path)


def _write_metrics(path: str, rows: Iterable[dict[str, Any]]) -> None:
    lines = [
        json.dumps({key: _finite_or_none(value) for key, value in row.items()}, default=_json_default) + "\n"
        for row in rows
    ]
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))


def write_metrics_row(path: Union[str, os.PathLike], row: dict[str, Any]) -> None:
    """Add ``row`` to ``metrics.jsonl``, replacing any row with the same ``iteration``; rows stay sorted.

    The whole file is rewritten atomically, so a row is never duplicated nor half-written. NaN and infinite
    values are written as ``null``.
    """
    path = os.fspath(path)
    iteration = _iteration_of(row, path)
    rows = [existing for existing in read_metrics(path) if existing.get("iteration") != iteration]
    rows.append(dict(row))
    rows.sort(key=lambda existing: existing.get("iteration", -1))
    _write_metrics(path, rows)


def truncate_metrics(path: Union[str, os.PathLike], last_iteration: int) -> list[dict[str, Any]]:
    """Drop the rows of iterations after ``last_iteration`` (``-1`` drops all); return the rows kept."""
    path = os.fspath(path)
    rows = read_metrics(path)
    kept_rows = [row for row in rows if row.get("iteration", -1) <= last_iteration]
    if len(kept_rows) != len(rows):
        _write_metrics(path, kept_rows)
    return kept_rows


# --- samples.parquet ----------------------------------------------------------------------------------------


def iteration_dir(output_dir: Union[str, os.PathLike], iteration: int) -> str:
    """``OUTPUT_DIR/iterations/NNNNNN`` (zero-padded to six digits) for a 0-based iteration."""
    return os.path.join(os.fspath(output_dir), "iterations", f"{iteration:06d}")


def samples_path(output_dir: Union[str, os.PathLike], iteration: int) -> str:
    """``OUTPUT_DIR/iterations/NNNNNN/samples.parquet``."""
    return os.path.join(iteration_dir(output_dir, iteration), SAMPLES_FILE)


def _as_text(value: Any) -> Any:
    """Strings stay strings, ``None`` stays null, anything else (chat messages, numbers, lists) becomes JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def sample_row(sample: Union[Sample, dict[str, Any]]) -> dict[str, Any]:
    """A sample (or a dict with its fields) as a row of ``samples.parquet``: the columns of
    :data:`SAMPLE_COLUMNS` then :data:`TOKEN_ID_COLUMNS`, chat prompts and non-text references as JSON, the rest of
    ``info`` as a JSON object."""
    if isinstance(sample, Sample):
        fields = {name: getattr(sample, name) for name in Sample.__dataclass_fields__}
    else:
        fields = dict(sample)
    info = dict(fields.get("info") or {})
    reward = fields.get("reward")
    row = {
        "iteration": int(fields["iteration"]),
        "prompt_id": int(fields["prompt_id"]),
        "sample_index": info.pop("sample_index", fields.get("sample_index")),
        "prompt": _as_text(fields["prompt"]),
        "completion": fields["completion"],
        "reference": _as_text(fields.get("reference")),
        "reward": math.nan if reward is None else float(reward),
        "kept": bool(fields.get("kept", False)),
        "dropped_by": fields.get("dropped_by"),
        "drop_reason": _as_text(fields.get("drop_reason")),
        "generator": info.pop("generator", fields.get("generator")),
        "num_tokens": info.pop("num_tokens", fields.get("num_tokens")),
        "finish_reason": info.pop("finish_reason", fields.get("finish_reason")),
        "tokenizer_hash": info.pop("tokenizer_hash", fields.get("tokenizer_hash")),
        "prompt_token_ids": _ids_or_none(fields.get("prompt_token_ids")),
        "completion_token_ids": _ids_or_none(fields.get("completion_token_ids")),
    }
    row["info"] = json.dumps(info, ensure_ascii=False, default=_json_default, sort_keys=True)
    return {column: row[column] for column in (*SAMPLE_COLUMNS, *TOKEN_ID_COLUMNS)}


def _chat_or_text(text: Any) -> Any:
    """A stored prompt back as written: chat messages (stored as JSON) as a list, text as text."""
    if isinstance(text, str) and text.startswith("["):
        try:
            messages = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(messages, list) and all(isinstance(m, dict) and "role" in m for m in messages):
            return messages
    return text


def sample_from_row(row: dict[str, Any]) -> Sample:
    """A row of ``samples.parquet`` (as :func:`read_samples` returns it) back as a :class:`Sample`, with its
    reward, fate and token ids. Chat prompts come back as messages; a non-string reference stays as its JSON
    text."""
    info = json.loads(row.get("info") or "{}")
    for key in ("sample_index", "generator", "num_tokens", "finish_reason", "tokenizer_hash"):
        if row.get(key) is not None:
            info[key] = row[key]
    reward = row.get("reward")
    drop_reason = row.get("drop_reason")
    return Sample(
        iteration=int(row["iteration"]),
        prompt_id=int(row["prompt_id"]),
        prompt=_chat_or_text(row["prompt"]),
        completion=row["completion"],
        reference=row.get("reference"),
        reward=math.nan if reward is None else float(reward),
        kept=bool(row.get("kept")),
        dropped_by=row.get("dropped_by"),
        info=info,
        drop_reason=None if drop_reason is None else json.loads(drop_reason),
        prompt_token_ids=_ids_or_none(row.get("prompt_token_ids")),
        completion_token_ids=_ids_or_none(row.get("completion_token_ids")),
    )


def _ids_or_none(ids: Any) -> Any:
    return None if ids is None else [int(token) for token in ids]


def _samples_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("iteration", pa.int64()),
            ("prompt_id", pa.int64()),
            ("sample_index", pa.int64()),
            ("prompt", pa.string()),
            ("completion", pa.string()),
            ("reference", pa.string()),
            ("reward", pa.float64()),
            ("kept", pa.bool_()),
            ("dropped_by", pa.string()),
            ("drop_reason", pa.string()),
            ("generator", pa.string()),
            ("num_tokens", pa.int64()),
            ("finish_reason", pa.string()),
            ("info", pa.string()),
            ("prompt_token_ids", pa.list_(pa.int64())),
            ("completion_token_ids", pa.list_(pa.int64())),
            ("tokenizer_hash", pa.string()),
        ]
    )


def write_samples(path: Union[str, os.PathLike], samples: Iterable[Union[Sample, dict[str, Any]]]) -> None:
    """Write samples to a parquet file atomically, one row per sample (columns: :data:`SAMPLE_COLUMNS`, then
    :data:`TOKEN_ID_COLUMNS`).

    Chat-message prompts, non-string references and drop reasons are stored as JSON strings; ``Sample.info`` keys
    ``sample_index``, ``generator``, ``num_tokens``, ``finish_reason`` and ``tokenizer_hash`` get their own
    columns, the rest is stored as a JSON object in ``info``. Failed (non-finite) rewards are stored as NaN.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [sample_row(sample) for sample in samples]
    table = pa.Table.from_pylist(rows, schema=_samples_schema())
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_samples(path: Union[str, os.PathLike]) -> list[dict[str, Any]]:
    """Rows of a ``samples.parquet`` file as dicts (columns: :data:`SAMPLE_COLUMNS` and, in files written since
    token ids were recorded, :data:`TOKEN_ID_COLUMNS`)."""
    import pyarrow.parquet as pq

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No samples file at {path!r}.")
    return pq.read_table(path).to_pylist()
