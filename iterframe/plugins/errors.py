"""Errors a run raises when a component fails: they name the component, the plugin it came from and the iteration.

The loop calls every component inside :func:`blame`. An exception a component raises (or a wrong return value the
loop detects) becomes a :class:`ComponentError` chained to the original, keeping its kind: a ``ValueError`` stays a
``ValueError`` (:class:`ComponentValueError`), a ``TypeError`` a ``TypeError``; anything else is a
``RuntimeError``. ``KeyboardInterrupt`` and other ``BaseException``\\ s pass through untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Optional

__all__ = ["ComponentError", "ComponentTypeError", "ComponentValueError", "blame", "describe_origin"]


class ComponentError(RuntimeError):
    """A component raised, or returned something the loop cannot use.

    Attributes:
        kind: the component kind (``generator``, ``reward``, ``filter``, ``tokenizer``, ``logger``).
        name: the component's name.
        origin: where it comes from: ``plugin 'NAME'``, or the class or function passed in code.
        iteration: the 0-based iteration (as in ``metrics.jsonl``), or ``None`` when it failed during setup.
    """

    def __init__(self, message: str, *, kind: str, name: str, origin: str, iteration: Optional[int]):
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.origin = origin
        self.iteration = iteration


class ComponentValueError(ComponentError, ValueError):
    """A :class:`ComponentError` whose cause is a ``ValueError`` (bad configuration or data)."""


class ComponentTypeError(ComponentError, TypeError):
    """A :class:`ComponentError` whose cause is a ``TypeError`` (often a wrong return type)."""


def _plugin_of(component_class: type) -> Optional[str]:
    from iterframe.plugins.manager import list_components

    for info in list_components():
        if info.component_class is component_class:
            return info.plugin
    return None


def describe_origin(component: Any) -> str:
    """``plugin 'NAME'`` for a registered component, else the module and name of its class (or of the function a
    function reward wraps), marked as passed in code."""
    plugin = _plugin_of(type(component))
    if plugin is not None:
        return f"plugin {plugin!r}"
    function = getattr(component, "function", None)
    source = function if callable(function) else type(component)
    qualified = f"{getattr(source, '__module__', '?')}.{getattr(source, '__qualname__', type(source).__name__)}"
    return f"{qualified}, passed in code"


@contextlib.contextmanager
def blame(kind: str, component: Any, iteration: Optional[int]) -> Iterator[None]:
    """Turn an exception raised inside the block into a :class:`ComponentError` naming ``component``."""
    try:
        yield
    except ComponentError:
        raise
    except Exception as error:
        name = getattr(component, "name", "") or type(component).__name__
        origin = describe_origin(component)
        when = f"Iteration {iteration}" if iteration is not None else "Setup, before the first iteration"
        detail = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        message = f"{when}: {kind} {name!r} ({origin}) failed: {detail}"
        error_class = (
            ComponentValueError
            if isinstance(error, ValueError)
            else ComponentTypeError
            if isinstance(error, TypeError)
            else ComponentError
        )
        raise error_class(message, kind=kind, name=name, origin=origin, iteration=iteration) from error
