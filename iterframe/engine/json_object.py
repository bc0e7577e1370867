"""Keyword arguments given as JSON text (``--model-init-kwargs '{"dtype": "float32"}'``)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["parse_json_object"]


def parse_json_object(text: str, name: str) -> dict[str, Any]:
    """The JSON object in ``text``; a ``ValueError`` naming ``name`` when it is not valid JSON or not an object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} is not valid JSON ({error.msg}): {text!r}.") from None
    if not isinstance(value, dict):
        raise ValueError(f'{name} must be a JSON object like \'{{"dtype": "float32"}}\', got {text!r}.')
    return value
