"""Component options: describe an ``Options`` dataclass and build it from CLI strings, YAML values or dicts.

Supported field types: ``int``, ``float``, ``bool``, ``str``, ``list[X]`` of those, ``Optional[...]`` of any of
them, and ``Any`` (passed through unchanged). Strings are coerced to the field's type, so ``{"top_k": "50"}``
from the command line and ``{"top_k": 50}`` from YAML build the same options.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any, NamedTuple, Optional, Union

__all__ = [
    "ComponentOptionError",
    "OptionInfo",
    "build_options",
    "check_options_class",
    "coerce_option",
    "did_you_mean",
    "option_infos",
    "type_name",
]

_SCALARS = (bool, int, float, str)
_TRUE_WORDS = {"true", "1", "yes", "y", "on"}
_FALSE_WORDS = {"false", "0", "no", "n", "off"}
_NONE_WORDS = {"none", "null"}


def did_you_mean(name: str, candidates) -> str:
    """``" Did you mean 'x'?"`` for the closest candidate to ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), list(candidates), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


class ComponentOptionError(ValueError):
    """An option given to a component is unknown, missing, or of the wrong type."""


class OptionInfo(NamedTuple):
    """One option of a component: its name, readable type, default (``dataclasses.MISSING`` when required)
    and help text."""

    name: str
    type: str
    default: Any
    help: str

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


def _optional_inner(annotation) -> Optional[Any]:
    """``X`` for ``Optional[X]`` / ``X | None``, else ``None``."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(members) == 1 and len(typing.get_args(annotation)) == 2:
            return members[0]
    return None


def _list_item(annotation) -> Optional[Any]:
    """``X`` for ``list[X]``, else ``None``."""
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return item
    return None


def type_name(annotation) -> str:
    """A readable name for an option type: ``int``, ``list[str]``, ``Optional[float]``."""
    inner = _optional_inner(annotation)
    if inner is not None:
        return f"Optional[{type_name(inner)}]"
    item = _list_item(annotation)
    if item is not None:
        return f"list[{type_name(item)}]"
    if annotation is Any:
        return "Any"
    return getattr(annotation, "__name__", str(annotation))


def _is_supported(annotation) -> bool:
    inner = _optional_inner(annotation)
    if inner is not None:
        return _is_supported(inner)
    item = _list_item(annotation)
    if item is not None:
        return item in _SCALARS or item is Any
    return annotation in _SCALARS or annotation is Any


def _field_types(options_class) -> dict[str, Any]:
    hints = typing.get_type_hints(options_class)
    return {field.name: hints.get(field.name, Any) for field in dataclasses.fields(options_class) if field.init}


def check_options_class(options_class, label: str) -> None:
    """Raise ``TypeError`` unless ``options_class`` is a dataclass whose fields all have supported types."""
    if not dataclasses.is_dataclass(options_class) or not isinstance(options_class, type):
        raise TypeError(f"{label}: Options must be a dataclass, got {options_class!r}.")
    for name, annotation in _field_types(options_class).items():
        if not _is_supported(annotation):
            raise TypeError(
                f"{label}: option {name!r} has type {type_name(annotation)}, which cannot be set from the CLI. "
                "Use int, float, bool, str, list[...] of those, or Optional[...] of any of them."
            )


def option_infos(options_class, base: Any = None) -> list[OptionInfo]:
    """Describe every settable option of an ``Options`` dataclass, in the order of its constructor (declaration
    order, keyword-only fields such as a pooled reward's ``timeout_s`` last), with ``base``'s values as the
    defaults when given."""
    types_by_name = _field_types(options_class)
    infos = []
    for field in sorted(dataclasses.fields(options_class), key=lambda field: field.kw_only is True):
        if not field.init:
            continue
        if base is not None:
            default = getattr(base, field.name)
        elif field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        infos.append(
            OptionInfo(field.name, type_name(types_by_name[field.name]), default, field.metadata.get("help", ""))
        )
    return infos


def _coerce_scalar(value, annotation):
    if annotation is Any:
        return value
    if isinstance(value, str) and annotation is not str:
        text = value.strip()
        if annotation is bool:
            if text.lower() in _TRUE_WORDS:
                return True
            if text.lower() in _FALSE_WORDS:
                return False
            raise ValueError
        return annotation(text)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if isinstance(value, bool):  # bool is an int subclass, but True is not a number of tokens
        raise ValueError
    if annotation is float and isinstance(value, int):
        return float(value)
    if isinstance(value, annotation):
        return value
    raise ValueError


def _list_from_text(text: str, item) -> list:
    """A string given for a ``list[item]`` option: a JSON list (``'["a", "b"]'``) is that list; otherwise, for a
    list of strings, the string is one item, byte for byte (whitespace and commas are part of a stop string); for
    a list of numbers or booleans, comma-separated values. An empty string is the empty list."""
    if not text:
        return []
    if text.lstrip().startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
    if item is str or item is Any:
        return [text]
    return [part.strip() for part in text.split(",") if part.strip()]


def _coerce(value, annotation):
    inner = _optional_inner(annotation)
    if inner is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            return None
        return _coerce(value, inner)
    item = _list_item(annotation)
    if item is not None:
        if isinstance(value, str):
            value = _list_from_text(value, item)
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return [_coerce_scalar(element, item) for element in value]
    return _coerce_scalar(value, annotation)


def coerce_option(value, annotation, label: str, option: str):
    """Convert ``value`` (a CLI string or a Python value) to ``annotation`` or raise ``ComponentOptionError``.

    Lists may be given as JSON (``'["a", "b"]'``); any other string is one item of a ``list[str]``, kept byte for
    byte, and comma-separated values of a list of numbers or booleans (``"1,2"``); ``Optional`` options accept
    ``none``/``null``; booleans accept true/false, yes/no, on/off, 1/0.
    """
    try:
        return _coerce(value, annotation)
    except (ValueError, TypeError):
        raise ComponentOptionError(
            f"{label}: option {option!r} expects {type_name(annotation)}, got {value!r}."
        ) from None


def _normalise_key(key: str) -> str:
    return str(key).strip().replace("-", "_")


def build_options(options_class, values: Optional[dict[str, Any]], label: str, base: Any = None):
    """Build ``options_class`` from ``values`` (keys may use ``-`` for ``_``), coercing each value to its type.

    Args:
        options_class: the component's ``Options`` dataclass.
        values: option values by name; ``None`` means all defaults.
        label: how errors name the component, e.g. ``"reward 'python'"``.
        base: an ``options_class`` instance whose values replace the declared defaults (a component registered
            as a configured instance).

    Raises:
        ComponentOptionError: an unknown key (with the closest valid key), a value of the wrong type, a missing
            required option, or a value the ``Options`` class itself rejects.
    """
    types_by_name = _field_types(options_class)
    coerced = {}
    for key, value in (values or {}).items():
        name = _normalise_key(key)
        if name not in types_by_name:
            valid = sorted(types_by_name)
            raise ComponentOptionError(
                f"{label} has no option {key!r}.{did_you_mean(name, valid)} "
                f"Valid options: {', '.join(valid) or '(none)'}."
            )
        coerced[name] = coerce_option(value, types_by_name[name], label, name)
    missing = [info.name for info in option_infos(options_class) if info.required and info.name not in coerced]
    if missing and base is None:
        raise ComponentOptionError(f"{label}: required option(s) {', '.join(map(repr, missing))} not set.")
    try:
        return options_class(**coerced) if base is None else dataclasses.replace(base, **coerced)
    except (ValueError, TypeError) as error:
        raise ComponentOptionError(f"{label}: {error}") from error
