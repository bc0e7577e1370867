"""Prompt sets for a run: read a dataset, pick its prompt and reference columns, split off eval prompts.

A dataset is a local JSON / JSON Lines / CSV / Parquet file, a folder written by ``datasets``' ``save_to_disk``,
a plugin's prompt source (``NAME:SPEC``, e.g. ``reasoning-gym:chain_sum?size=200&seed=1``) or (when online) a
Hugging Face Hub dataset id. Every row becomes a :class:`~iterframe.loop.PromptRecord`; a
prompt is a non-empty string or a non-empty list of chat messages (``{"role": ..., "content": ...}``).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json
import os
import random
from typing import Any, Optional

from iterframe.engine.json_object import parse_json_lines
from iterframe.plugins.prompt_sources import PromptSource, find_prompt_source

__all__ = ["DatasetSettings", "PromptSetError", "load_prompt_sets", "read_splits", "similar_paths"]

#: Reference column used when none is named and the dataset has a column of this name.
DEFAULT_REFERENCE_COLUMN = "reference"
_FILE_READERS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class PromptSetError(ValueError):
    """A dataset could not be turned into prompts: missing file or column, empty set, malformed prompt."""


@dataclasses.dataclass
class DatasetSettings:
    """Where the prompts come from and which columns hold what (the ``dataset:`` section of a run config)."""

    path: Optional[str] = dataclasses.field(
        default=None,
        metadata={"help": "Local .json/.jsonl/.csv/.parquet file, a `save_to_disk` folder, or a Hub dataset id."},
    )
    prompt_column: str = dataclasses.field(
        default="prompt", metadata={"help": "Column holding the prompt: a string or a list of chat messages."}
    )
    reference_column: Optional[str] = dataclasses.field(
        default=None,
        metadata={
            "help": "Column holding the reference answer handed to the reward. Default: `reference` when the "
            "dataset has such a column, else no references."
        },
    )
    split: str = dataclasses.field(
        default="train", metadata={"help": "Split to train on (a single file is one split named `train`)."}
    )
    eval_split: Optional[str] = dataclasses.field(
        default=None, metadata={"help": "Split of `path` (or of `eval_dataset`) holding the eval prompts."}
    )
    eval_dataset: Optional[str] = dataclasses.field(
        default=None, metadata={"help": "A separate file, folder or Hub id holding the eval prompts."}
    )
    eval_fraction: Optional[float] = dataclasses.field(
        default=None,
        metadata={
            "help": "Hold out this fraction (0 < f < 1) of the training prompts, chosen with the seed, for eval."
        },
    )

    def __post_init__(self):
        if self.eval_fraction is not None:
            if not 0.0 < self.eval_fraction < 1.0:
                raise PromptSetError(f"eval_fraction={self.eval_fraction!r} must lie strictly between 0 and 1.")
            if self.eval_split is not None or self.eval_dataset is not None:
                raise PromptSetError(
                    "eval_fraction cannot be combined with eval_split or eval_dataset: choose one way to get eval "
                    "prompts."
                )


def similar_paths(path: str, folders_only: bool = False) -> list[str]:
    """Up to two names in the folder of ``path`` that are close to its last part (what a mistyped path likely
    meant), folders only with ``folders_only``; none when that folder does not exist."""
    parent = os.path.dirname(os.path.expanduser(path)) or "."
    if not os.path.isdir(parent):
        return []
    names = [name for name in os.listdir(parent) if not folders_only or os.path.isdir(os.path.join(parent, name))]
    return difflib.get_close_matches(os.path.basename(path), names, n=2)


# --- reading sources ----------------------------------------------------------------------------------------


def read_splits(path: str) -> dict[str, list[dict[str, Any]]]:
    """Read a dataset into ``{split name: rows}``; a single file or ``Dataset`` folder is the split ``train``.

    Raises:
        PromptSetError: the path does not exist (and is no Hub id that loads), or cannot be read or parsed.
    """
    if os.path.isdir(path):
        return _read_saved_dataset(path)
    if os.path.isfile(path):
        return {"train": _read_file(path)}
    found = find_prompt_source(path)
    if found is not None:
        return _read_prompt_source(*found)
    if _looks_like_local_path(path):
        close = similar_paths(path)
        hint = f" Similar names there: {', '.join(close)}." if close else ""
        raise PromptSetError(f"Dataset file or folder {path!r} does not exist.{hint}")
    return _read_hub_dataset(path)


def _read_prompt_source(source: PromptSource, spec: str) -> dict[str, list[dict[str, Any]]]:
    """The rows a plugin's prompt source gives for ``spec``, as ``{split: rows}``."""
    where = f"prompt source {source.name!r} (plugin {source.plugin!r})"
    try:
        loaded = source.load(spec)
    except ValueError as error:
        raise PromptSetError(f"{where} cannot load {spec!r}: {error}") from None
    splits = loaded if isinstance(loaded, dict) else {"train": loaded}
    for split, rows in splits.items():
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise PromptSetError(
                f"{where} returned {type(rows).__name__} for split {split!r} of {spec!r}; a prompt source returns "
                "a list of row dicts, or {split: rows}."
            )
    return splits


def _looks_like_local_path(path: str) -> bool:
    extension = os.path.splitext(path)[1].lower()
    return extension in _FILE_READERS or path.startswith((".", "~", os.sep)) or path.count("/") > 1


def _read_file(path: str) -> list[dict[str, Any]]:
    extension = os.path.splitext(path)[1].lower()
    reader = _FILE_READERS.get(extension)
    if reader is None:
        raise PromptSetError(
            f"Cannot read {path!r}: unknown file type {extension or '(none)'!r}. Supported: "
            f"{', '.join(sorted(_FILE_READERS))}, or a `save_to_disk` folder."
        )
    try:
        if reader == "parquet":
            return _read_parquet(path)
        with open(path, encoding="utf-8", newline="" if reader == "csv" else None) as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise PromptSetError(f"Cannot read {path!r}: {error}") from None
    if not text.strip():
        raise PromptSetError(f"Dataset file {path!r} is empty.")
    if reader == "csv":
        return list(csv.DictReader(text.splitlines()))
    if reader == "json":
        return _parse_json(text, path)
    return _parse_json_lines(text, path)


def _read_parquet(path: str) -> list[dict[str, Any]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as error:
        raise PromptSetError(f"Cannot read {path!r} as Parquet: {error}") from None


def _parse_json_lines(text: str, path: str) -> list[dict[str, Any]]:
    try:
        return parse_json_lines(text.splitlines(), path)
    except ValueError as error:
        raise PromptSetError(str(error)) from None


def _parse_json(text: str, path: str) -> list[dict[str, Any]]:
    """A JSON list of row objects, an object of equal-length column lists, or JSON Lines under a .json name."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":
            return _parse_json_lines(text, path)
        raise PromptSetError(f"{path} is not valid JSON ({error}).") from None
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return data
    if isinstance(data, dict) and data and all(isinstance(column, list) for column in data.values()):
        lengths = {len(column) for column in data.values()}
        if len(lengths) == 1:
            return [dict(zip(data, values)) for values in zip(*data.values())]
    raise PromptSetError(
        f"{path} holds JSON of an unsupported shape: use a list of row objects, an object of equal-length "
        "column lists, or one object per line (JSON Lines)."
    )


def _read_saved_dataset(path: str) -> dict[str, list[dict[str, Any]]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(path)
    except FileNotFoundError:
        raise PromptSetError(
            f"Folder {path!r} is not a dataset saved with `save_to_disk` (no dataset_info.json or "
            "dataset_dict.json). Point --dataset at a data file or a saved dataset folder."
        ) from None
    return _splits_of(loaded)


def _read_hub_dataset(dataset_id: str) -> dict[str, list[dict[str, Any]]]:
    import datasets

    try:
        loaded = datasets.load_dataset(dataset_id)
    except Exception as error:  # offline, unknown id, gated, malformed: all end the same way for the user
        raise PromptSetError(
            f"{dataset_id!r} is no local file or folder, and loading it as a Hugging Face Hub dataset failed: "
            f"{type(error).__name__}: {error}"
        ) from None
    return _splits_of(loaded)


def _splits_of(loaded) -> dict[str, list[dict[str, Any]]]:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        return {name: split.to_list() for name, split in loaded.items()}
    return {"train": loaded.to_list()}


# --- rows -> prompt records ---------------------------------------------------------------------------------


def _select_split(splits: dict[str, list[dict]], split: Optional[str], source: str, option: str) -> list[dict]:
    if split is None:
        if len(splits) == 1:
            return next(iter(splits.values()))
        split = "test" if "test" in splits else None
        if split is None:
            raise PromptSetError(f"{source} has several splits ({', '.join(splits)}); name one with {option}.")
    if split not in splits:
        raise PromptSetError(
            f"{source} has no split {split!r}; available splits: {', '.join(splits)}. Set {option} to one of them."
        )
    return splits[split]


def _columns_of(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _check_prompt(prompt: Any, where: str, column: str) -> None:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptSetError(f"{where}: the prompt in column {column!r} is empty.")
        return
    if isinstance(prompt, list) and prompt and all(_is_chat_message(message) for message in prompt):
        return
    raise PromptSetError(
        f"{where}: column {column!r} holds {type(prompt).__name__} {_short_repr(prompt)}; a prompt must be a "
        "non-empty string or a non-empty list of chat messages ({'role': str, 'content': str})."
    )


def _is_chat_message(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and isinstance(message.get("role"), str)
        and isinstance(message.get("content"), str)
    )


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resolve_reference_column(settings: DatasetSettings, columns: list[str]) -> Optional[str]:
    if settings.reference_column is not None:
        return settings.reference_column
    return DEFAULT_REFERENCE_COLUMN if DEFAULT_REFERENCE_COLUMN in columns else None


def _records_from_rows(rows: list[dict], settings: DatasetSettings, source: str) -> list:
    from iterframe.loop.iterative_loop import PromptRecord

    if not rows:
        raise PromptSetError(f"{source} has no rows: there are no prompts to train on.")
    columns = _columns_of(rows)
    reference_column = _resolve_reference_column(settings, columns)
    for option, column in (("prompt_column", settings.prompt_column), ("reference_column", reference_column)):
        if column is not None and column not in columns:
            raise PromptSetError(
                f"{source} has no column {column!r} (set by {option}); available columns: {', '.join(columns)}."
            )
    records = []
    for index, row in enumerate(rows):
        prompt = row.get(settings.prompt_column)
        _check_prompt(prompt, f"{source}, row {index}", settings.prompt_column)
        extra = {key: value for key, value in row.items() if key not in (settings.prompt_column, reference_column)}
        reference = row.get(reference_column) if reference_column is not None else None
        records.append(PromptRecord(prompt_id=index, prompt=prompt, reference=reference, extra=extra))
    return records


def _renumbered(records: list) -> list:
    return [dataclasses.replace(record, prompt_id=index) for index, record in enumerate(records)]


def _hold_out(records: list, fraction: float, seed: int, source: str) -> tuple[list, list]:
    num_eval = round(fraction * len(records))
    if num_eval < 1 or num_eval >= len(records):
        raise PromptSetError(
            f"eval_fraction={fraction} of the {len(records)} prompts of {source} leaves "
            f"{len(records) - num_eval} to train on and {num_eval} to evaluate; both need at least one."
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    eval_indices = set(order[:num_eval])
    train = [record for index, record in enumerate(records) if index not in eval_indices]
    held_out = [record for index, record in enumerate(records) if index in eval_indices]
    return _renumbered(train), _renumbered(held_out)


def load_prompt_sets(settings: DatasetSettings, seed: int = 0) -> tuple[list, Optional[list]]:
    """Load the training prompts and, when asked for, the eval prompts.

    Args:
        settings: the dataset section of the run config.
        seed: seed of the ``eval_fraction`` hold-out.

    Returns:
        ``(train_prompts, eval_prompts)``: lists of :class:`~iterframe.loop.PromptRecord` with ``prompt_id`` the
        0-based position in each list; ``eval_prompts`` is ``None`` when no eval prompts were asked for.

    Raises:
        PromptSetError: naming the file, split, column or row that is wrong and how to fix it.
    """
    if not settings.path:
        raise PromptSetError("No dataset given: pass --dataset PATH_OR_ID or set dataset.path in the config.")
    splits = read_splits(settings.path)
    source = f"dataset {settings.path!r}"
    train_rows = _select_split(splits, settings.split, source, "--split")
    train = _records_from_rows(train_rows, settings, f"{source} (split {settings.split!r})")
    if settings.eval_fraction is not None:
        return _hold_out(train, settings.eval_fraction, seed, source)
    if settings.eval_dataset is not None:
        eval_source = f"eval dataset {settings.eval_dataset!r}"
        eval_rows = _select_split(
            read_splits(settings.eval_dataset), settings.eval_split, eval_source, "--eval-split"
        )
        return train, _records_from_rows(eval_rows, settings, eval_source)
    if settings.eval_split is not None:
        eval_rows = _select_split(splits, settings.eval_split, source, "--eval-split")
        return train, _records_from_rows(eval_rows, settings, f"{source} (split {settings.eval_split!r})")
    return train, None
