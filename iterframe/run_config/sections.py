"""The kinds of top-level key a run config has, each knowing how to read its value, take an override, and type it.

A :class:`Section` turns what a YAML file, a Python dict, a flag or ``--set`` gives it into one canonical draft
value (:meth:`Section.normalise`, :meth:`Section.merge`, :meth:`Section.assign`), and the draft value into typed
``RunConfig`` fields (:meth:`Section.resolve`) and back into YAML (:meth:`Section.to_config`). The table of keys
is :data:`iterframe.run_config.schema.SECTIONS`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, Optional

import yaml

from iterframe.engine.json_object import parse_json_object
from iterframe.plugins.components import kind_label
from iterframe.plugins.options import ComponentOptionError, build_options, did_you_mean, option_infos
from iterframe.run_config.components import (
    ComponentSpec,
    RunConfigError,
    component_entry,
    component_list,
    renamed,
    renamed_list,
    resolved_component,
)

__all__ = [
    "ComponentListSection",
    "ComponentSection",
    "KwargsSection",
    "Section",
    "SettingsSection",
    "ValueSection",
    "yaml_value",
]


def _not_settable(where: str, path: list[str]) -> RunConfigError:
    return RunConfigError(
        f"{where}: {'.'.join(path)!r} is not a settable key. Use e.g. model=PATH, train.learning_rate=1e-4, "
        "loop.iterations=3, dataset.prompt_column=question, generator.temperature=0.7, reward=answer-match, "
        "filter.top-fraction.fraction=0.25."
    )


class Section:
    """One top-level key. Subclasses override what differs; values from ``--set`` arrive as strings
    (``text=True``) and are typed by :meth:`resolve` like every other value."""

    def __init__(self, key: str):
        self.key = key

    def empty(self) -> Any:
        """The draft value when the key is absent."""
        return None

    def normalise(self, value: Any, where: str) -> Any:
        """A value as written in YAML or a dict config, as a draft value."""
        return value

    def merge(self, current: Any, value: Any, where: str) -> Any:
        """The draft value after an override of the whole key (flag, ``--set KEY=...``, ``run(KEY=...)``)."""
        return self.empty() if value is None else self.normalise(value, where)

    def assign(self, current: Any, path: list[str], value: Any, where: str, text: bool) -> Any:
        """The draft value after setting the nested key ``path`` (``--set KEY.PATH=VALUE``)."""
        if not path:
            return self.merge(current, value, self.key)  # a value of the wrong shape is named by its key
        raise _not_settable(where, [self.key, *path])

    def resolve(self, value: Any, resolved: dict[str, Any]) -> dict[str, Any]:
        """``{RunConfig field: typed value}`` (``resolved`` holds the fields of the sections resolved before)."""
        return {self.key: value}

    def to_config(self, run_config) -> Any:
        """The YAML value of the key (``None``: left out)."""
        return getattr(run_config, self.key)


class ValueSection(Section):
    """A single string (``model``, ``output_dir``); ``required`` names the flag that sets it when it is missing."""

    def __init__(self, key: str, required: str, absolute: bool = False, to_config: Optional[Callable] = None):
        super().__init__(key)
        self.required, self.absolute, self._to_config = required, absolute, to_config

    def resolve(self, value, resolved):
        if value is None or value == "":
            raise RunConfigError(f"No {self.key} given: pass {self.required} or set `{self.key}:` in the config.")
        if not isinstance(value, str):
            raise RunConfigError(
                f"{self.key} must be a string (a path or id), got {type(value).__name__} {value!r}."
            )
        value = os.path.expanduser(value)  # a path from ~ (Hub ids never start with it)
        return {self.key: os.path.abspath(value) if self.absolute else value}

    def to_config(self, run_config):
        value = getattr(run_config, self.key)
        return self._to_config(value) if self._to_config else value


def yaml_value(text: str) -> Any:
    """``--set`` text read as YAML (``true``, ``1.5``, ``[a, b]``); text that is not valid YAML stays text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


class KwargsSection(Section):
    """Free keyword arguments (``model_init_kwargs``): a mapping, or a JSON object as text."""

    def empty(self):
        return {}

    def normalise(self, value, where):
        if value is None:
            return {}
        if isinstance(value, str):
            try:
                return parse_json_object(value, self.key)
            except ValueError as error:
                raise RunConfigError(str(error)) from None
        if not isinstance(value, dict):
            raise RunConfigError(f"{self.key} must be a mapping, got {value!r}.")
        return dict(value)

    def merge(self, current, value, where):
        return {} if value is None else {**current, **self.normalise(value, where)}

    def assign(self, current, path, value, where, text):
        if len(path) == 1:
            return {**current, path[0]: yaml_value(value) if text else value}
        return super().assign(current, path, value, where, text)

    def resolve(self, value, resolved):
        return {self.key: dict(value) or None}


class SettingsSection(Section):
    """A mapping of typed settings (``dataset``, ``loop``, ``peft``, ``train``), merged key by key.

    Args:
        options_class: returns the dataclass the section builds (imported on first use).
        string_key: the setting a bare string sets (``dataset: prompts.jsonl`` sets ``dataset.path``).
        set_elsewhere: settings of the dataclass that this section refuses, with where to set them instead.
        optional: an empty section resolves to ``None`` (``peft``: no adapters).
    """

    def __init__(
        self,
        key: str,
        options_class: Callable[[], type],
        string_key: Optional[str] = None,
        set_elsewhere: Optional[dict[str, str]] = None,
        optional: bool = False,
    ):
        super().__init__(key)
        self.options_class, self.string_key = options_class, string_key
        self.set_elsewhere, self.optional = dict(set_elsewhere or {}), optional

    def empty(self):
        return {}

    def normalise(self, value, where):
        if value is None:
            return {}
        if isinstance(value, str) and self.string_key:
            return {self.string_key: value}
        if not isinstance(value, dict):
            raise RunConfigError(f"{self.key} must be a mapping, got {value!r}.")
        return {str(name): setting for name, setting in value.items()}

    def merge(self, current, value, where):
        return {} if value is None else {**current, **self.normalise(value, where)}

    def assign(self, current, path, value, where, text):
        if len(path) == 1:
            return {**current, path[0]: value}
        return super().assign(current, path, value, where, text)

    def check_set_elsewhere(self, settings: dict[str, Any]) -> None:
        for name in settings:
            field = str(name).replace("-", "_")
            if field in self.set_elsewhere:
                raise RunConfigError(
                    f"{self.key}.{field} cannot be set in the {self.key} section; use {self.set_elsewhere[field]}."
                )

    def build(self, settings: dict[str, Any]):
        try:
            return build_options(self.options_class(), settings, f"{self.key} section")
        except ComponentOptionError as error:
            raise RunConfigError(str(error)) from None

    def resolve(self, value, resolved):
        self.check_set_elsewhere(value)
        if self.optional and not value:
            return {self.key: None}
        return {self.key: self.build(value)}

    def to_config(self, run_config):
        value = getattr(run_config, self.key)
        if value is None:
            return None
        fields = [info.name for info in option_infos(type(value))]
        return {name: getattr(value, name) for name in fields if name not in self.set_elsewhere}


def _without_options_step(path: list[str]) -> list[str]:
    """A component option as ``--print-config`` spells it (``options.max_new_tokens``) as ``--set`` takes it."""
    return list(path[1:]) if len(path) == 2 and path[0] == "options" else list(path)


class ComponentSection(Section):
    """One component (``generator``, ``reward``, ``sample_tokenizer``); ``default`` names it when absent."""

    def __init__(self, key: str, kind: str, default: Optional[str] = None, required: Optional[str] = None):
        super().__init__(key)
        self.kind, self.default, self.required = kind, default, required

    def normalise(self, value, where):
        return None if value is None else component_entry(self.kind, value, where)

    def merge(self, current, value, where):
        return None if value is None else renamed(current, self.normalise(value, where))

    def assign(self, current, path, value, where, text):
        path = _without_options_step(path)
        if len(path) == 1:
            base = current if current is not None else ComponentSpec(self.kind, None)
            if base.instance is not None:
                raise RunConfigError(
                    f"{where}: the {kind_label(self.kind)} is a Python object passed in code; set its options on "
                    "the object itself."
                )
            return dataclasses.replace(base, options={**base.options, path[0]: value})
        return super().assign(current, path, value, where, text)

    def resolve(self, value, resolved):
        if value is not None and value.name is None and value.instance is None and self.default:
            value = dataclasses.replace(value, name=self.default)
        if value is None and self.default:
            value = ComponentSpec(self.kind, self.default)
        if value is None and self.required:
            raise RunConfigError(f"No {self.key} given: {self.required}")
        return {self.key: resolved_component(value, self.kind, self.key)}

    def to_config(self, run_config):
        value = getattr(run_config, self.key)
        return None if value is None else value.to_config()


class ComponentListSection(Section):
    """A list of components (``filters``, ``loggers``); ``default`` names them when the key is absent.

    ``--set filter.NAME.OPTION=V`` (or ``filter.INDEX.OPTION=V``, or ``filter.OPTION=V`` for a one-entry list)
    sets an option of one entry.
    """

    def __init__(self, key: str, kind: str, default: tuple[str, ...] = ()):
        super().__init__(key)
        self.kind, self.default = kind, default
        self.singular = key[:-1]

    def normalise(self, value, where):
        return None if value is None else component_list(self.kind, value, where)

    def merge(self, current, value, where):
        return None if value is None else renamed_list(current, self.normalise(value, where))

    def _entry(self, entries: list[ComponentSpec], selector: Optional[str], where: str) -> int:
        names = [spec.name or "?" for spec in entries]
        if selector is None:
            if len(entries) == 1:
                return 0
            raise RunConfigError(
                f"{where}: the run has {len(entries)} {self.key} ({', '.join(names) or 'none'}); name one, as in "
                f"{self.singular}.NAME.OPTION=VALUE or {self.singular}.INDEX.OPTION=VALUE."
            )
        if selector.isdigit() and int(selector) < len(entries):
            return int(selector)
        if selector in names:
            return names.index(selector)
        raise RunConfigError(
            f"{where}: no {self.singular} {selector!r} in this run.{did_you_mean(selector, names)} Configured "
            f"{self.key}: {', '.join(names) or 'none'} (add one with --{self.singular} NAME)."
        )

    def assign(self, current, path, value, where, text):
        if not path:
            if text:
                value = [name.strip() for name in value.split(",") if name.strip()]
            return self.merge(current, value, self.key)
        path = [path[0], *_without_options_step(path[1:])] if len(path) > 2 else path
        if len(path) > 2:
            raise _not_settable(where, [self.key, *path])
        entries = list(current if current is not None else self.default_specs())
        index = self._entry(entries, path[0] if len(path) == 2 else None, where)
        spec = entries[index]
        if spec.instance is not None:
            raise RunConfigError(
                f"{where}: {self.key}[{index}] is a Python object passed in code; set its options "
                "on the object itself."
            )
        entries[index] = dataclasses.replace(spec, options={**spec.options, path[-1]: value})
        return entries

    def default_specs(self) -> list[ComponentSpec]:
        return [ComponentSpec(self.kind, name) for name in self.default]

    def resolve(self, value, resolved):
        entries = value if value is not None else self.default_specs()
        return {
            self.key: [
                resolved_component(spec, self.kind, f"{self.key}[{index}]") for index, spec in enumerate(entries)
            ]
        }

    def to_config(self, run_config):
        return [spec.to_config() for spec in getattr(run_config, self.key)]
