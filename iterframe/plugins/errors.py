"""Errors a run raises when a component or a plugin's hook fails: they name the culprit, its plugin and the moment.

The loop calls every component inside :func:`blame`, and :mod:`iterframe.plugins.hooks` calls every hook
implementation inside :func:`blame_hook`. An exception raised there (or a wrong return value the loop detects)
becomes a :class:`ComponentError` chained to the original, keeping its kind: a ``ValueError`` stays a
``ValueError`` (:class:`ComponentValueError`), a ``TypeError`` a ``TypeError``; anything else is a
``RuntimeError``. ``KeyboardInterrupt`` and other ``BaseException``\\ s pass through untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Optional

from iterframe.plugins.components import kind_label

__all__ = [
    "ComponentError",
    "ComponentTypeError",
    "ComponentValueError",
    "blame",
    "blame_hook",
    "describe_origin",
]


class ComponentError(RuntimeError):
    """A component or a plugin's hook raised, or returned something the loop cannot use.

    Attributes:
        kind: the component kind (``generator``, ``reward``, ``filter``, ``tokenizer``, ``logger``), or ``hook``
            for a plugin's hook implementation.
        name: the component's name, or the hook's.
        origin: where it comes from: ``plugin 'NAME'``, or the class or function passed in code.
        iteration: the 0-based iteration (as in ``metrics.jsonl``), or ``None`` outside an iteration (setup, the
            run's start and end).
    """

    def __init__(self, message: str, *, kind: str, name: str, origin: str, iteration: Optional[int]):
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.origin = origin
        self.iteration = iteration


class ComponentValueError(ComponentError, ValueError):
    """A :class:`ComponentError` whose cause is a ``ValueError`` (bad configuration, data or return value)."""


class ComponentTypeError(ComponentError, TypeError):
    """A :class:`ComponentError` whose cause is a ``TypeError`` (often a wrong return type)."""


def _plugin_of(component: Any) -> Optional[str]:
    """The plugin that registered ``component``'s class (under the component's name, when several did)."""
    from iterframe.plugins.registry import registered_components

    registered = [info for info in registered_components() if info.component_class is type(component)]
    for info in registered:
        if info.name == getattr(component, "name", None):
            return info.plugin
    return registered[0].plugin if registered else None


def describe_origin(component: Any) -> str:
    """``plugin 'NAME'`` for a registered component, else the module and name of its class (or of the function a
    function reward wraps), marked as passed in code."""
    plugin = _plugin_of(component)
    if plugin is not None:
        return f"plugin {plugin!r}"
    function = getattr(component, "function", None)
    source = function if callable(function) else type(component)
    qualified = f"{getattr(source, '__module__', '?')}.{getattr(source, '__qualname__', type(source).__name__)}"
    return f"{qualified}, passed in code"


def _moment(iteration: Optional[int]) -> str:
    return f"Iteration {iteration}" if iteration is not None else "Setup, before the first iteration"


def _raise_named(error: Exception, culprit: str, *, when: str, **attributes: Any) -> None:
    """Raise the :class:`ComponentError` subclass matching ``error``, saying when and who failed."""
    detail = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
    error_class = (
        ComponentValueError
        if isinstance(error, ValueError)
        else ComponentTypeError
        if isinstance(error, TypeError)
        else ComponentError
    )
    raise error_class(f"{when}: {culprit} failed: {detail}", **attributes) from error


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
        _raise_named(
            error,
            f"{kind_label(kind)} {name!r} ({origin})",
            when=_moment(iteration),
            kind=kind,
            name=name,
            origin=origin,
            iteration=iteration,
        )


@contextlib.contextmanager
def blame_hook(
    hook_name: str, plugin_name: str, iteration: Optional[int] = None, when: Optional[str] = None
) -> Iterator[None]:
    """Turn an exception raised inside the block into a :class:`ComponentError` (``kind="hook"``) naming the
    hook, the plugin and the moment: the iteration, else ``when`` (default: setup, before the first iteration)."""
    try:
        yield
    except ComponentError:
        raise
    except Exception as error:
        origin = f"plugin {plugin_name!r}"
        _raise_named(
            error,
            f"hook {hook_name} of {origin}",
            when=when or _moment(iteration),
            kind="hook",
            name=hook_name,
            origin=origin,
            iteration=iteration,
        )
