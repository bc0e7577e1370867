"""Prompt sources: datasets that plugins generate or fetch, named ``NAME:SPEC`` where a file path would go.

Plugins contribute them through the ``register_prompt_sources`` hook: ``register(name, load, description="")``;
``load(spec)`` returns the rows (a list of dicts) or ``{split: rows}``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, Optional

from iterframe.plugins.hooks import call_each
from iterframe.plugins.manager import get_plugin_manager

__all__ = ["PromptSource", "find_prompt_source", "prompt_sources"]

_NAME = re.compile(r"^([A-Za-z][\w.-]*):(.*)$", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class PromptSource:
    """A registered prompt source: its ``name``, the ``load(spec)`` function, the plugin and a description."""

    name: str
    load: Callable[[str], Any]
    plugin: str
    description: str = ""


def prompt_sources() -> dict[str, PromptSource]:
    """Every registered prompt source by name.

    Raises:
        ValueError: a registration is not ``register(name, callable)``, or two plugins use one name.
    """
    offered: list[PromptSource] = []

    def arguments(plugin_name: str) -> dict[str, Any]:
        def register(name, load, description=""):
            if not isinstance(name, str) or not _NAME.match(f"{name}:") or not callable(load):
                raise ValueError(
                    f"register(name, load) takes a source name (letters, digits, '.', '-', '_') and a function "
                    f"load(spec) -> rows; got {name!r} and {load!r}."
                )
            offered.append(PromptSource(name, load, plugin_name, description))

        return {"register": register}

    call_each(get_plugin_manager(), "register_prompt_sources", arguments, when="Registering prompt sources")
    sources: dict[str, PromptSource] = {}
    for source in offered:
        taken = sources.get(source.name)
        if taken is not None:
            raise ValueError(
                f"Two prompt sources are named {source.name!r}: from plugin {taken.plugin!r} and from plugin "
                f"{source.plugin!r}. Uninstall one of them, or leave one out with ITERFRAME_LOAD_PLUGINS."
            )
        sources[source.name] = source
    return sources


def find_prompt_source(path: str) -> Optional[tuple[PromptSource, str]]:
    """``(source, spec)`` when ``path`` is ``NAME:SPEC`` and a plugin registered the prompt source ``NAME``."""
    match = _NAME.match(path)
    if match is None:
        return None
    source = prompt_sources().get(match.group(1))
    return None if source is None else (source, match.group(2))
