"""JSON objects in text: keyword arguments (``--model-init-kwargs '{"dtype": "float32"}'``) and JSON Lines files
of rows."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["parse_json_lines", "parse_json_object"]


def parse_json_object(text: str, name: str) -> dict[str, Any]:
    """The JSON object in ``text``; a ``ValueError`` naming ``name`` when it is not valid JSON or not an object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} is not valid JSON ({error.msg}): {text!r}.") from None
    if not isinstance(value, dict):
        raise ValueError(f'{name} must be a JSON object like \'{{"dtype": "float32"}}\', got {text!r}.')
    return value


def parse_json_lines(lines: Iterable[str], path: str) -> list[dict[str, Any]]:
    """The JSON object on each non-blank line; a ``ValueError`` naming ``path`` and the line when one is not."""
    rows = []
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{line_number} is not valid JSON ({error.msg}).") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line_number} is a JSON {type(row).__name__}, not an object (one row).")
        rows.append(row)
    return rows
