"""Run configuration: a YAML file, command-line flags and ``--set KEY=VALUE`` overrides, resolved into a RunConfig.

A configuration is a plain dict shaped like the YAML file (see ``docs/config.md``)::

    model: path/or/hub-id          model_init_kwargs: {dtype: float32}
    dataset: {path: prompts.jsonl, prompt_column: prompt, reference_column: answer, eval_fraction: 0.25}
    generator: {name: hf, options: {max_new_tokens: 16}}
    reward: answer-match           # a name alone, or {name: ..., options: {...}}
    filters: [threshold, {name: best-of-n, options: {k: 1}}]
    tokenizer: completion-only     loggers: [console]
    loop: {iterations: 3, prompts_per_iteration: 8, samples_per_prompt: 4}
    peft: {method: lora, r: 8, alpha: 16, target_modules: [q_proj, v_proj]}   # optional: train LoRA adapters
    train: {learning_rate: 1.0e-4}  # any IterativeSFTConfig field
    output_dir: runs/my-run

Precedence, lowest first: the YAML file (or the embedded demo), flags, ``--set`` overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from typing import Any, Optional, Union

import yaml

from iterframe.engine.peft_settings import PeftSettings
from iterframe.loop.datasets import DatasetSettings
from iterframe.plugins.options import ComponentOptionError, build_options, coerce_option
from iterframe.run_config.checkpoint_settings import loop_checkpoint_settings
from iterframe.run_config.schedule_horizon import set_schedule_horizon

__all__ = [
    "CONFIG_FILE",
    "ComponentSpec",
    "RunConfig",
    "RunConfigError",
    "apply_flags",
    "apply_overrides",
    "load_config_file",
    "resolve_run_config",
    "save_run_config",
]

CONFIG_FILE = "config.yaml"
#: Sections naming one component, and the component kind they name.
SINGLE_COMPONENT_SECTIONS = {"generator": "generator", "reward": "reward", "tokenizer": "tokenizer"}
#: Sections holding a list of components, and the component kind of each entry.
COMPONENT_LIST_SECTIONS = {"filters": "filter", "loggers": "logger"}
#: Every top-level key of a configuration.
TOP_LEVEL_KEYS = (
    "model",
    "model_init_kwargs",
    "dataset",
    *SINGLE_COMPONENT_SECTIONS,
    *COMPONENT_LIST_SECTIONS,
    "loop",
    "train",
    "peft",
    "output_dir",
)
DEFAULT_GENERATOR = "hf"
DEFAULT_LOGGERS = ("console",)
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
#: The singular spelling accepted in ``--set filter.NAME.KEY=VALUE``.
_SECTION_ALIASES = {"filter": "filters", "logger": "loggers"}


class RunConfigError(ValueError):
    """The run configuration is invalid: the message names the key and what to write instead."""


@dataclasses.dataclass
class ComponentSpec:
    """A component to build: its kind, registry name and options (values may still be CLI strings)."""

    kind: str
    name: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_config(self) -> Union[str, dict[str, Any]]:
        """The YAML form: the bare name, or ``{name, options}`` when options are set."""
        return {"name": self.name, "options": dict(self.options)} if self.options else self.name


@dataclasses.dataclass
class RunConfig:
    """Everything a run needs, resolved and type-checked (components are built later, by name).

    ``tokenizer`` is ``None`` until prompts are loaded: the default is ``chat`` for chat-message prompts and
    ``completion-only`` for text prompts (see :meth:`with_default_tokenizer`).
    """

    model: str
    model_init_kwargs: Optional[dict[str, Any]]
    dataset: DatasetSettings
    generator: ComponentSpec
    reward: ComponentSpec
    filters: list[ComponentSpec]
    tokenizer: Optional[ComponentSpec]
    loggers: list[ComponentSpec]
    loop: Any  # iterframe.loop.LoopConfig
    train: Any  # iterframe.IterativeSFTConfig
    train_settings: dict[str, Any]  # the ``train:`` section as given (after coercion), saved in config.yaml
    peft: Optional[PeftSettings] = None  # None: train the full model

    def with_default_tokenizer(self, prompts_are_chat: bool) -> RunConfig:
        """This config with the default sample tokenizer filled in when none was named."""
        if self.tokenizer is not None:
            return self
        name = "chat" if prompts_are_chat else "completion-only"
        return dataclasses.replace(self, tokenizer=ComponentSpec("tokenizer", name))

    def to_config(self) -> dict[str, Any]:
        """The YAML form of this config; :func:`resolve_run_config` of it gives back an equal config."""
        loop = {
            field.name: getattr(self.loop, field.name)
            for field in dataclasses.fields(self.loop)
            if field.init and field.name not in LOOP_FIELDS_SET_ELSEWHERE and field.name != "quiet"
        }
        dataset = dataclasses.asdict(self.dataset)
        for key in ("path", "eval_dataset"):
            dataset[key] = _absolute_if_local(dataset[key])
        config = {
            "model": _absolute_if_local(self.model),
            "model_init_kwargs": self.model_init_kwargs,
            "dataset": dataset,
            "generator": self.generator.to_config(),
            "reward": self.reward.to_config(),
            "filters": [spec.to_config() for spec in self.filters],
            "tokenizer": self.tokenizer.to_config() if self.tokenizer else None,
            "loggers": [spec.to_config() for spec in self.loggers],
            "loop": loop,
            "train": dict(self.train_settings),
            "peft": self.peft.to_config() if self.peft else None,
            "output_dir": self.loop.output_dir,
        }
        return {key: value for key, value in config.items() if value is not None}


def _absolute_if_local(value: Optional[str]) -> Optional[str]:
    """An existing local path made absolute (so a saved config works from any folder); Hub ids unchanged."""
    return os.path.abspath(value) if value and os.path.exists(value) else value


# --- reading a config file ----------------------------------------------------------------------------------


def _local_path_next_to(value: Any, base_dir: str) -> Any:
    """``value`` made absolute when it is a relative path that exists next to the config file."""
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    candidate = os.path.join(base_dir, value)
    return os.path.abspath(candidate) if os.path.exists(candidate) else value


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML run config (``yaml.safe_load``).

    Relative paths of ``model``, ``dataset.path`` and ``dataset.eval_dataset`` are looked up next to the file
    first, then in the current directory (a value found in neither is taken as a Hub id).

    Raises:
        RunConfigError: the file is missing, is not valid YAML, or is not a mapping.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except OSError as error:
        raise RunConfigError(f"Cannot read config file {path!r}: {error.strerror or error}.") from None
    except yaml.YAMLError as error:
        raise RunConfigError(f"Config file {path!r} is not valid YAML: {error}") from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise RunConfigError(f"Config file {path!r} must hold a mapping of keys, got a {type(config).__name__}.")
    config = _normalised_sections(config)
    base_dir = os.path.dirname(os.path.abspath(path))
    config["model"] = _local_path_next_to(config.get("model"), base_dir)
    for key in ("path", "eval_dataset"):
        if key in config["dataset"]:
            config["dataset"][key] = _local_path_next_to(config["dataset"][key], base_dir)
    return {key: value for key, value in config.items() if value is not None}


# --- normalising sections -----------------------------------------------------------------------------------


def _closest_hint(key: str, valid) -> str:
    close = difflib.get_close_matches(str(key), list(valid), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _component_entry(value: Any, where: str) -> dict[str, Any]:
    """``{"name": ..., "options": {...}}`` from a bare name, ``{name, options}`` or ``{name, **options}``."""
    if isinstance(value, str):
        return {"name": value, "options": {}}
    if isinstance(value, dict):
        entry = dict(value)
        name = entry.pop("name", None)
        options = entry.pop("options", None) or {}
        if not isinstance(options, dict):
            raise RunConfigError(f"{where}.options must be a mapping of option names to values.")
        if name is not None and not isinstance(name, str):
            raise RunConfigError(f"{where}.name must be a component name (a string), got {name!r}.")
        return {"name": name, "options": {**options, **entry}}
    raise RunConfigError(
        f"{where} must be a component name or a mapping like {{name: NAME, options: {{...}}}}, got {value!r}."
    )


def _component_list(value: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    if not isinstance(value, list):
        raise RunConfigError(f"{where} must be a list of components, got {value!r}.")
    return [_component_entry(entry, f"{where}[{index}]") for index, entry in enumerate(value)]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RunConfigError(f"{where} must be a mapping, got {value!r}.")
    return dict(value)


def _normalised_sections(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with unknown keys rejected and every section in its canonical shape."""
    for key in config:
        if key not in TOP_LEVEL_KEYS:
            raise RunConfigError(
                f"Unknown config key {key!r}.{_closest_hint(key, TOP_LEVEL_KEYS)} "
                f"Valid keys: {', '.join(TOP_LEVEL_KEYS)}."
            )
    config = dict(config)
    dataset = config.get("dataset")
    config["dataset"] = {"path": dataset} if isinstance(dataset, str) else _mapping(dataset, "dataset")
    for key in ("loop", "train"):
        config[key] = _mapping(config.get(key), key)
    peft = config.get("peft")
    config["peft"] = {"method": peft} if isinstance(peft, str) else _mapping(peft, "peft")
    model_init_kwargs = config.get("model_init_kwargs")
    config["model_init_kwargs"] = (
        _parse_model_init_kwargs(model_init_kwargs)
        if isinstance(model_init_kwargs, str)
        else _mapping(model_init_kwargs, "model_init_kwargs") or None
    )
    for key in SINGLE_COMPONENT_SECTIONS:
        if config.get(key) is not None:
            config[key] = _component_entry(config[key], key)
    for key in COMPONENT_LIST_SECTIONS:
        if config.get(key) is not None:
            config[key] = _component_list(config[key], key)
    return config


def _parse_model_init_kwargs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise RunConfigError(f"model_init_kwargs is not valid JSON ({error.msg}): {text!r}.") from None
    if not isinstance(value, dict):
        raise RunConfigError(
            f'model_init_kwargs must be a JSON object like \'{{"dtype": "float32"}}\', got {text!r}.'
        )
    return value


# --- flags --------------------------------------------------------------------------------------------------


def _renamed(entry: Optional[dict[str, Any]], name: str) -> dict[str, Any]:
    """The component ``name``, keeping ``entry``'s options when ``entry`` already named the same component."""
    if entry is not None and entry.get("name") in (name, None):
        return {"name": name, "options": dict(entry["options"])}
    return {"name": name, "options": {}}


def _renamed_list(entries: Optional[list[dict[str, Any]]], names: list[str]) -> list[dict[str, Any]]:
    """Components ``names``, each keeping the options of the first unused entry of the same name."""
    unused = list(entries or [])
    renamed = []
    for name in names:
        match = next((entry for entry in unused if entry["name"] == name), None)
        if match is not None:
            unused.remove(match)
        renamed.append(_renamed(match, name))
    return renamed


def apply_flags(config: dict[str, Any], **flags: Any) -> dict[str, Any]:
    """Return ``config`` with command-line flags applied (``None`` or an empty tuple means "not given").

    Component flags (``generator``, ``reward``, ``tokenizer``, ``filters``, ``loggers``) replace the configured
    components; a component named again keeps the options the config gave it.
    """
    config = _normalised_sections(config)
    simple = {"model": "model", "output_dir": "output_dir"}
    dataset_keys = [field.name for field in dataclasses.fields(DatasetSettings)]
    loop_keys = ("iterations", "prompts_per_iteration", "samples_per_prompt", "seed", "quiet")
    for flag, value in flags.items():
        if value is None or value == () or (flag == "quiet" and value is False):
            continue
        if flag in simple:
            config[simple[flag]] = value
        elif flag == "model_init_kwargs":
            config["model_init_kwargs"] = _parse_model_init_kwargs(value) if isinstance(value, str) else value
        elif flag == "dataset":
            config["dataset"]["path"] = value
        elif flag == "peft":
            config["peft"]["method"] = value
        elif flag in dataset_keys:
            config["dataset"][flag] = value
        elif flag in loop_keys:
            config["loop"][flag] = value
        elif flag in SINGLE_COMPONENT_SECTIONS:
            config[flag] = _renamed(config.get(flag), value)
        elif flag in COMPONENT_LIST_SECTIONS:
            config[flag] = _renamed_list(config.get(flag), list(value))
        else:
            raise TypeError(f"apply_flags() got an unknown flag {flag!r}.")
    return config


# --- --set KEY=VALUE ----------------------------------------------------------------------------------------


def _split_assignment(assignment: str) -> tuple[list[str], str]:
    key, separator, value = assignment.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not separator or not all(path):
        raise RunConfigError(
            f"--set {assignment!r} must look like KEY=VALUE, e.g. train.learning_rate=1e-4 or "
            "generator.temperature=0.7."
        )
    return path, value


def _list_entry(entries: list[dict[str, Any]], selector: Optional[str], section: str, assignment: str) -> dict:
    names = [entry["name"] for entry in entries]
    if selector is None:
        if len(entries) == 1:
            return entries[0]
        raise RunConfigError(
            f"--set {assignment!r}: the run has {len(entries)} {section} ({', '.join(names) or 'none'}); "
            f"name one, as in {section[:-1]}.NAME.OPTION=VALUE or {section[:-1]}.INDEX.OPTION=VALUE."
        )
    if selector.isdigit() and int(selector) < len(entries):
        return entries[int(selector)]
    for entry in entries:
        if entry["name"] == selector:
            return entry
    raise RunConfigError(
        f"--set {assignment!r}: no {section[:-1]} {selector!r} in this run.{_closest_hint(selector, names)} "
        f"Configured {section}: {', '.join(names) or 'none'} (add one with --{section[:-1]} NAME)."
    )


def _apply_override(config: dict[str, Any], assignment: str) -> None:
    path, value = _split_assignment(assignment)
    head = _SECTION_ALIASES.get(path[0], path[0])
    if head not in TOP_LEVEL_KEYS:
        valid = [*TOP_LEVEL_KEYS, *_SECTION_ALIASES]
        raise RunConfigError(
            f"--set {assignment!r}: unknown key {path[0]!r}.{_closest_hint(path[0], valid)} "
            f"Valid first parts: {', '.join(valid)}."
        )
    rest = path[1:]
    if head in ("model", "output_dir") and not rest:
        config[head] = value
    elif head == "dataset" and not rest:
        config["dataset"]["path"] = value
    elif head == "peft" and not rest:
        config["peft"]["method"] = value
    elif head == "model_init_kwargs" and len(rest) == 1:
        config["model_init_kwargs"] = {**(config.get("model_init_kwargs") or {}), rest[0]: yaml.safe_load(value)}
    elif head in ("dataset", "loop", "train", "peft") and len(rest) == 1:
        config[head][rest[0]] = value
    elif head in SINGLE_COMPONENT_SECTIONS and len(rest) <= 1:
        if not rest:
            config[head] = _renamed(config.get(head), value)
        else:
            entry = config.setdefault(head, {"name": None, "options": {}})
            entry["options"][rest[0]] = value
    elif head in COMPONENT_LIST_SECTIONS and len(rest) <= 2:
        if not rest:
            config[head] = _renamed_list(config.get(head), [name.strip() for name in value.split(",") if name])
        else:
            selector = rest[0] if len(rest) == 2 else None
            entry = _list_entry(config.get(head) or [], selector, head, assignment)
            entry["options"][rest[-1]] = value
    else:
        raise RunConfigError(
            f"--set {assignment!r}: {'.'.join(path)!r} is not a settable key. Use e.g. model=PATH, "
            "train.learning_rate=1e-4, loop.iterations=3, dataset.prompt_column=question, "
            "generator.temperature=0.7, reward=answer-match, filter.top-fraction.fraction=0.25."
        )


def apply_overrides(config: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Return ``config`` with ``--set KEY=VALUE`` assignments applied in order (values stay strings; they are
    coerced to each field's type when the config is resolved)."""
    config = _normalised_sections(config)  # a copy: the caller's dict is left as it was
    for assignment in assignments:
        _apply_override(config, assignment)
    return config


# --- resolving ----------------------------------------------------------------------------------------------


def _component_spec(kind: str, entry: Optional[dict[str, Any]], default: Optional[str]) -> Optional[ComponentSpec]:
    if entry is None:
        return None if default is None else ComponentSpec(kind, default)
    name = entry["name"] or default
    if name is None:
        raise RunConfigError(f"Options were set for the {kind} but no {kind} is named; pass --{kind} NAME.")
    return ComponentSpec(kind, name, dict(entry["options"]))


def _numeric_annotation(annotation) -> bool:
    """Whether ``annotation`` is ``bool``, ``int`` or ``float``, possibly ``Optional``."""
    members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) not in (Union, types.UnionType):
        members = [annotation]
    return len(members) == 1 and members[0] in (bool, int, float)


def _training_arguments(settings: dict[str, Any], output_dir: str, seed: int, model_init_kwargs):
    from iterframe.engine.config import IterativeSFTConfig

    hints = typing.get_type_hints(IterativeSFTConfig)
    valid = [field.name for field in dataclasses.fields(IterativeSFTConfig) if field.init]
    coerced = {}
    for key, value in settings.items():
        name = str(key).replace("-", "_")
        if name in TRAIN_FIELDS_SET_ELSEWHERE:
            raise RunConfigError(
                f"train.{name} cannot be set in the train section; use {TRAIN_FIELDS_SET_ELSEWHERE[name]}."
            )
        if name not in valid:
            raise RunConfigError(
                f"train.{key} is not an IterativeSFTConfig field.{_closest_hint(name, valid)} The train section "
                "takes the fields of iterframe.IterativeSFTConfig (transformers.TrainingArguments and more)."
            )
        if _numeric_annotation(hints.get(name)):
            try:
                value = coerce_option(value, hints[name], "train", name)
            except ComponentOptionError as error:
                raise RunConfigError(str(error)) from None
        coerced[name] = value
    arguments = {"seed": seed, **coerced, "output_dir": output_dir, "model_init_kwargs": model_init_kwargs}
    try:
        return IterativeSFTConfig(**arguments), coerced
    except (ValueError, TypeError) as error:
        raise RunConfigError(f"Invalid train settings: {error}") from None


def _loop_config(settings: dict[str, Any], output_dir: str, existing_output: str):
    from iterframe.loop.iterative_loop import LoopConfig

    for key in settings:
        name = str(key).replace("-", "_")
        if name in LOOP_FIELDS_SET_ELSEWHERE:
            raise RunConfigError(
                f"loop.{name} cannot be set in the loop section; use {LOOP_FIELDS_SET_ELSEWHERE[name]}."
            )
    values = {**settings, "output_dir": output_dir, "existing_output": existing_output}
    try:
        return build_options(LoopConfig, values, "loop section")
    except ComponentOptionError as error:
        raise RunConfigError(str(error)) from None


def _dataset_settings(settings: dict[str, Any]) -> DatasetSettings:
    try:
        return build_options(DatasetSettings, settings, "dataset section")
    except ComponentOptionError as error:
        raise RunConfigError(str(error)) from None


def _peft_settings(settings: dict[str, Any]) -> Optional[PeftSettings]:
    """The ``peft:`` section as :class:`PeftSettings`; ``None`` when the section is empty (full fine-tuning)."""
    if not settings:
        return None
    if settings.get("method") is None:
        raise RunConfigError(
            f"peft options ({', '.join(map(str, settings))}) were set but no adapter method: pass --peft lora "
            "or set `peft: {method: lora, ...}` in the config file."
        )
    try:
        return build_options(PeftSettings, settings, "peft section")
    except ComponentOptionError as error:
        raise RunConfigError(str(error)) from None


def resolve_run_config(config: dict[str, Any], existing_output: str = "error") -> RunConfig:
    """Check and type every part of ``config`` and build the :class:`RunConfig`.

    Args:
        config: a configuration dict (from :func:`load_config_file`, :func:`apply_flags`, ...).
        existing_output: what to do with an existing output directory: ``"error"``, ``"resume"`` or
            ``"overwrite"``.

    Raises:
        RunConfigError: naming the first missing or invalid key (with the closest valid key for typos).
    """
    config = _normalised_sections(config)
    for key, flag in (("model", "--model PATH_OR_ID"), ("output_dir", "--output-dir DIR")):
        if not isinstance(config.get(key), str) or not config[key]:
            raise RunConfigError(f"No {key} given: pass {flag} or set `{key}:` in the config file.")
    reward = _component_spec("reward", config.get("reward"), None)
    if reward is None:
        raise RunConfigError(
            "No reward given: pass --reward NAME (e.g. answer-match, or python with "
            "--set reward.function=module:function) or set `reward:` in the config file."
        )
    output_dir = os.path.abspath(config["output_dir"])
    try:
        loop_section = loop_checkpoint_settings(config["loop"], config["train"])
    except ValueError as error:
        raise RunConfigError(str(error)) from None
    loop = _loop_config(loop_section, output_dir, existing_output)
    train, train_settings = _training_arguments(
        config["train"], output_dir, loop.seed, config["model_init_kwargs"]
    )
    set_schedule_horizon(loop, train)
    train.save_strategy = type(train.save_strategy)("no")  # the loop writes the checkpoints (checkpoint_settings)
    loggers = config.get("loggers")
    return RunConfig(
        model=config["model"],
        model_init_kwargs=config["model_init_kwargs"],
        dataset=_dataset_settings(config["dataset"]),
        generator=_component_spec("generator", config.get("generator"), DEFAULT_GENERATOR),
        reward=reward,
        filters=[_component_spec("filter", entry, None) for entry in config.get("filters") or []],
        tokenizer=_component_spec("tokenizer", config.get("tokenizer"), None),
        loggers=[_component_spec("logger", entry, None) for entry in loggers]
        if loggers is not None
        else [ComponentSpec("logger", name) for name in DEFAULT_LOGGERS],
        loop=loop,
        train=train,
        train_settings=train_settings,
        peft=_peft_settings(config["peft"]),
    )


def save_run_config(run_config: RunConfig, path: str) -> None:
    """Write the resolved config as YAML (atomically), so ``iterframe run PATH`` repeats the run."""
    from iterframe.loop.artifacts import atomic_write_bytes

    text = yaml.safe_dump(run_config.to_config(), sort_keys=False, allow_unicode=True)
    atomic_write_bytes(path, text.encode("utf-8"))
