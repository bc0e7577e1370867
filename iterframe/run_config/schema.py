"""The run config's schema: the table of top-level keys, and the one way every source changes a draft config.

A *draft* is a dict with one canonical value per key of :data:`SECTIONS` (see
:mod:`iterframe.run_config.sections`). A config file or dict becomes a draft with :func:`normalise_config`; flags,
``--set KEY=VALUE`` and Python overrides all go through :func:`assign`;
:func:`iterframe.run_config.resolve_run_config` types the draft in one pass. Adding a top-level key is one entry
in :data:`SECTIONS` (and a field of ``RunConfig``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, Optional, Union

from iterframe.plugins.options import ComponentOptionError, coerce_option, did_you_mean
from iterframe.run_config.components import RunConfigError
from iterframe.run_config.plugin_settings import PluginsSection
from iterframe.run_config.schedule_horizon import set_schedule_horizon
from iterframe.run_config.sections import (
    ComponentListSection,
    ComponentSection,
    KwargsSection,
    Section,
    SettingsSection,
    ValueSection,
)

__all__ = [
    "LOOP_FIELDS_SET_ELSEWHERE",
    "SECTIONS",
    "SECTION_ALIASES",
    "TOP_LEVEL_KEYS",
    "TRAIN_FIELDS_SET_ELSEWHERE",
    "assign",
    "normalise_config",
    "split_assignment",
]

#: LoopConfig fields that are not part of the ``loop:`` section, and where to set them instead.
LOOP_FIELDS_SET_ELSEWHERE = {
    "output_dir": "the top-level `output_dir:` key or --output-dir",
    "existing_output": "--resume or --overwrite",
}
#: IterativeSFTConfig fields that are not part of the ``train:`` section, and where to set them instead.
TRAIN_FIELDS_SET_ELSEWHERE = {
    "output_dir": "the top-level `output_dir:` key or --output-dir",
    "model_init_kwargs": "the top-level `model_init_kwargs:` key or --model-init-kwargs",
}

#: Training settings ``--print-config`` and ``config.yaml`` show at the value the run uses, given or not (the run's
#: own ``max_steps`` horizon and the device's precision are left to be worked out again).
SHOWN_TRAIN_FIELDS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "optim",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
)


def _absolute_if_local(value: Optional[str]) -> Optional[str]:
    """An existing local path made absolute (so a saved config works from any folder); Hub ids unchanged."""
    return os.path.abspath(value) if value and os.path.exists(value) else value


def _dataset_settings_class():
    from iterframe.loop.datasets import DatasetSettings

    return DatasetSettings


def _loop_config_class():
    from iterframe.loop.config import LoopConfig

    return LoopConfig


def _peft_settings_class():
    from iterframe.engine.peft_settings import PeftSettings

    return PeftSettings


class DatasetSection(SettingsSection):
    """``dataset:``; its paths may start from ``~``."""

    def resolve(self, value, resolved):
        paths = {
            key: os.path.expanduser(value[key])
            for key in ("path", "eval_dataset")
            if isinstance(value.get(key), str)
        }
        return super().resolve({**value, **paths}, resolved)

    def to_config(self, run_config):
        dataset = super().to_config(run_config)
        for key in ("path", "eval_dataset"):
            dataset[key] = _absolute_if_local(dataset[key])
        return dataset


class LoopSection(SettingsSection):
    """``loop:``; its output directory and existing-output policy come from elsewhere."""

    def resolve(self, value, resolved):
        self.check_set_elsewhere(value)
        settings = {**value, "output_dir": resolved["output_dir"], "existing_output": resolved["existing_output"]}
        return {self.key: self.build(settings)}

    def to_config(self, run_config):
        loop = super().to_config(run_config)
        for key in ("quiet", "verbose"):  # how this run prints, not what it computes
            loop.pop(key, None)
        return loop


class PeftSection(SettingsSection):
    """``peft:``; empty means full fine-tuning, so options without a method are a mistake worth naming."""

    def resolve(self, value, resolved):
        if value and value.get("method") is None:
            raise RunConfigError(
                f"peft options ({', '.join(map(str, value))}) were set but no adapter method: pass --peft lora or "
                "set `peft: {method: lora, ...}` in the config."
            )
        return super().resolve(value, resolved)


def _numeric_annotation(annotation) -> bool:
    """Whether ``annotation`` is ``bool``, ``int`` or ``float``, possibly ``Optional``."""
    members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) not in (Union, types.UnionType):
        members = [annotation]
    return len(members) == 1 and members[0] in (bool, int, float)


class TrainSection(SettingsSection):
    """``train:``: fields of ``IterativeSFTConfig``, which gets the run's output directory, seed (unless set here)
    and ``model_init_kwargs``. The section as given is kept for the saved config."""

    def resolve(self, value, resolved):
        from iterframe.engine.config import IterativeSFTConfig

        self.check_set_elsewhere(value)
        hints = typing.get_type_hints(IterativeSFTConfig)
        valid = [field.name for field in dataclasses.fields(IterativeSFTConfig) if field.init]
        coerced = {}
        for key, setting in value.items():
            name = key.replace("-", "_")
            if name not in valid:
                raise RunConfigError(
                    f"train.{key} is not an IterativeSFTConfig field.{did_you_mean(name, valid)} The train "
                    "section takes the fields of iterframe.IterativeSFTConfig (transformers.TrainingArguments and "
                    "more)."
                )
            if _numeric_annotation(hints.get(name)):
                try:
                    setting = coerce_option(setting, hints[name], "train", name)
                except ComponentOptionError as error:
                    raise RunConfigError(str(error)) from None
            coerced[name] = setting
        loop = resolved["loop"]
        fixed = {"output_dir": resolved["output_dir"], "model_init_kwargs": resolved["model_init_kwargs"]}
        train = _training_arguments({"seed": loop.seed, **coerced, **fixed}, coerced)
        set_schedule_horizon(loop, train)  # a decaying schedule spans the run's updates unless max_steps is set
        train.save_strategy = type(train.save_strategy)("no")  # the loop writes the checkpoints
        return {"train": train, "train_settings": coerced}

    def to_config(self, run_config):
        """The training settings the run uses, given or not (:data:`SHOWN_TRAIN_FIELDS`), then the rest given."""
        train = run_config.train
        shown = {name: getattr(train, name) for name in SHOWN_TRAIN_FIELDS if hasattr(train, name)}
        shown = {name: getattr(value, "value", value) for name, value in shown.items()}  # enums as their names
        return {**shown, **run_config.train_settings}


def _training_arguments(arguments: dict[str, Any], settings: dict[str, Any]):
    """``IterativeSFTConfig(**arguments)``; any error it raises becomes a :class:`RunConfigError` naming the
    ``train`` setting at fault (tried alone when the message does not say which)."""
    from iterframe.engine.config import IterativeSFTConfig

    try:
        return IterativeSFTConfig(**arguments)
    except Exception as error:  # TrainingArguments checks values in many ways; none of them may escape as a crash
        message = str(error).strip() or type(error).__name__
        culprit = _setting_at_fault(IterativeSFTConfig, arguments, settings, message)
        where = (
            f"Invalid train settings (train.{culprit}={settings[culprit]!r})" if culprit else "Invalid settings"
        )
        raise RunConfigError(f"{where}: {message}") from None


def _setting_at_fault(config_class, arguments: dict[str, Any], settings: dict[str, Any], message: str):
    """The ``train`` setting that ``message`` names, or the first one that fails on its own; ``None`` when the
    arguments fail without any (``model_init_kwargs`` or the output directory)."""
    named = [name for name in settings if name in message]
    if named:
        return named[0]
    base = {key: value for key, value in arguments.items() if key not in settings}
    try:
        config_class(**base)
    except Exception:
        return None
    for name in settings:
        try:
            config_class(**base, **{name: settings[name]})
        except Exception:
            return name
    return None


#: Every top-level key, in the order of a saved config.
SECTIONS: dict[str, Section] = {
    section.key: section
    for section in (
        ValueSection("model", "--model PATH_OR_ID", to_config=_absolute_if_local),
        KwargsSection("model_init_kwargs"),
        DatasetSection("dataset", _dataset_settings_class, string_key="path"),
        ComponentSection("generator", "generator", default="hf"),
        ComponentSection(
            "reward",
            "reward",
            required="pass --reward NAME (e.g. answer-match, or python with "
            "--set reward.function=module:function) or set `reward:` in the config.",
        ),
        ComponentListSection("filters", "filter"),
        ComponentSection("sample_tokenizer", "tokenizer"),
        ComponentListSection("loggers", "logger", default=("console",)),
        LoopSection("loop", _loop_config_class, set_elsewhere=LOOP_FIELDS_SET_ELSEWHERE),
        TrainSection("train", lambda: None, set_elsewhere=TRAIN_FIELDS_SET_ELSEWHERE),
        PeftSection("peft", _peft_settings_class, string_key="method", optional=True),
        PluginsSection("plugins"),
        ValueSection("output_dir", "--output-dir DIR", absolute=True),
    )
}
#: Other spellings of top-level keys: the sample tokenizer's old key, and the singular of list sections that
#: ``--set filter.NAME.OPTION=VALUE`` uses.
SECTION_ALIASES = {"tokenizer": "sample_tokenizer", "filter": "filters", "logger": "loggers"}
#: Keys a config file or dict may use (aliases of list sections are for ``--set`` only).
TOP_LEVEL_KEYS = tuple(SECTIONS)
_FILE_ALIASES = {"tokenizer": "sample_tokenizer"}


def _section_key(key: Any, where: str, aliases: Mapping[str, str]) -> str:
    name = str(key).strip()
    name = aliases.get(name, name)
    if name not in SECTIONS:
        valid = [*TOP_LEVEL_KEYS, *aliases]
        what = f"{where}: unknown key" if where else "Unknown config key"
        raise RunConfigError(
            f"{what} {key!r}.{did_you_mean(str(key), valid)} Valid keys: {', '.join(TOP_LEVEL_KEYS)}."
        )
    return name


def empty_draft() -> dict[str, Any]:
    """A draft with every key absent."""
    return {key: section.empty() for key, section in SECTIONS.items()}


def normalise_config(config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """A new draft from a config in the YAML schema (a dict from a file or from Python); ``config`` is not changed.

    Raises:
        RunConfigError: an unknown key (with the closest valid one) or a section of the wrong shape.
    """
    if config is None:
        return empty_draft()
    if not isinstance(config, Mapping):
        raise RunConfigError(f"A run config must be a mapping of keys, got a {type(config).__name__}.")
    draft = empty_draft()
    seen: dict[str, str] = {}
    for key, value in config.items():
        name = _section_key(key, "", _FILE_ALIASES)
        if name in seen:
            raise RunConfigError(f"The config sets {name!r} twice: as {seen[name]!r} and as {key!r}; keep one.")
        seen[name] = str(key)
        draft[name] = SECTIONS[name].normalise(value, name)
    return draft


def copy_draft(draft: Mapping[str, Any]) -> dict[str, Any]:
    """A draft that can be changed without touching ``draft`` (a config in the YAML schema is normalised first).

    A shallow copy is enough: sections never change a draft value in place, they return a new one.
    """
    return dict(draft) if set(draft) == set(SECTIONS) else normalise_config(draft)


def assign(draft: dict[str, Any], path: Union[str, list[str]], value: Any, where: str, text: bool = False) -> None:
    """Set the dotted key ``path`` of ``draft`` to ``value``, as a flag, ``--set`` or Python override does.

    A whole mapping section merges key by key, a component keeps the options it had when renamed to itself, and
    ``None`` resets a key. ``text=True`` marks a ``--set`` string (typed when the config is resolved).

    Raises:
        RunConfigError: an unknown or unsettable key, named with ``where``.
    """
    parts = path.split(".") if isinstance(path, str) else list(path)
    key = _section_key(parts[0], where, SECTION_ALIASES)
    draft[key] = SECTIONS[key].assign(draft[key], parts[1:], value, where, text)


def split_assignment(assignment: str) -> tuple[list[str], str]:
    """``KEY.PATH=VALUE`` as ``([KEY, PATH...], VALUE)``."""
    key, separator, value = assignment.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not separator or not all(path):
        raise RunConfigError(
            f"--set {assignment!r} must look like KEY=VALUE, e.g. train.learning_rate=1e-4 or "
            "generator.temperature=0.7."
        )
    return path, value
