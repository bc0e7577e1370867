"""Overrides of a config: ``--set KEY=VALUE`` assignments and the keyword arguments of ``iterframe.run``; and, for
a flag that does not exist, the ``--set`` key that sets what it meant."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

from iterframe.run_config.schema import SECTIONS, assign, copy_draft, split_assignment

__all__ = ["apply_overrides", "apply_python_overrides", "settable_keys", "suggest_set_key"]


def apply_overrides(config: Mapping[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with ``--set KEY=VALUE`` assignments applied in order (values stay strings;
    they are typed when the config is resolved)."""
    draft = copy_draft(config)
    for assignment in assignments:
        path, value = split_assignment(assignment)
        assign(draft, path, value, f"--set {assignment!r}", text=True)
    return draft


def apply_python_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``config`` with ``iterframe.run(**overrides)`` applied: each keyword is a top-level key
    (``loop={"iterations": 2}`` merges into ``loop``; ``reward=my_function`` sets the reward)."""
    draft = copy_draft(config)
    for key, value in overrides.items():
        assign(draft, [key], value, f"iterframe.run({key}=...)")
    return draft


def settable_keys(generator: str = "hf") -> dict[str, str]:
    """``{field name: dotted key}`` for every setting of the loop, dataset, peft and train sections and the
    options of ``generator`` (a name in several sections maps to the first: loop, dataset, generator, peft,
    train)."""
    from iterframe.engine.config import IterativeSFTConfig
    from iterframe.plugins.options import option_infos
    from iterframe.plugins.registry import UnknownComponentError, get_component_class

    keys: dict[str, str] = {}
    for section in ("loop", "dataset"):
        for info in option_infos(SECTIONS[section].options_class()):
            if info.name not in SECTIONS[section].set_elsewhere:
                keys.setdefault(info.name, f"{section}.{info.name}")
    try:
        for info in option_infos(get_component_class("generator", generator).Options):
            keys.setdefault(info.name, f"generator.{info.name}")
    except UnknownComponentError:
        pass
    for info in option_infos(SECTIONS["peft"].options_class()):
        keys.setdefault(info.name, f"peft.{info.name}")
    for field in dataclasses.fields(IterativeSFTConfig):
        if field.init and field.name not in SECTIONS["train"].set_elsewhere:
            keys.setdefault(field.name, f"train.{field.name}")
    return keys


def suggest_set_key(flag: str) -> Optional[str]:
    """The config key an unknown flag most likely meant (``--warmup-steps`` -> ``train.warmup_steps``), or
    ``None``."""
    import difflib

    name = flag.lstrip("-").replace("-", "_")
    keys = settable_keys()
    if name in keys:
        return keys[name]
    close = difflib.get_close_matches(name, list(keys), n=1, cutoff=0.8)
    return keys[close[0]] if close else None
