"""Component entries of a run config: a name with options, or an object passed in code.

A component section (``generator``, ``reward``, ``sample_tokenizer``, each entry of ``filters`` and ``loggers``)
is written as a bare name, ``{name: NAME, options: {...}}`` or ``{name: NAME, OPTION: VALUE, ...}``; from Python it
may also be a component instance (``iterframe.Reward`` and the like), and a reward may be a plain function. Every
form becomes one :class:`ComponentSpec`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Optional, Union

from iterframe.plugins.components import kind_label
from iterframe.plugins.options import ComponentOptionError, option_infos

__all__ = [
    "CODE_MARKER",
    "ComponentSpec",
    "RunConfigError",
    "component_entry",
    "component_list",
    "renamed",
    "renamed_list",
    "resolved_component",
]

#: Key that marks, in a saved config, a component that was a Python object (it cannot be rebuilt from the file).
CODE_MARKER = "passed_in_code"


class RunConfigError(ValueError):
    """The run configuration is invalid: the message names the key and what to write instead."""


@dataclasses.dataclass
class ComponentSpec:
    """A component of a run: its kind, registry name and options, or the object passed in code.

    Args:
        kind: one of :data:`iterframe.plugins.components.COMPONENT_KINDS`.
        name: the registry name (for an object: its ``name`` or class name); ``None`` until named.
        options: option values (strings from the command line until the config is resolved).
        instance: the component object passed in code, used as it is.
        code_ref: a saved config's note that a Python object stood here (resolving it is an error).
    """

    kind: str
    name: Optional[str]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    instance: Any = None
    code_ref: Optional[str] = None

    def to_config(self) -> Union[str, dict[str, Any]]:
        """The YAML form: the bare name, ``{name, options}``, or for an object what rebuilds it (see
        :func:`_code_component_config`)."""
        if self.instance is not None:
            return _code_component_config(self)
        if self.code_ref is not None:
            return {"name": self.name, CODE_MARKER: self.code_ref}
        return {"name": self.name, "options": dict(self.options)} if self.options else self.name


def _qualified_name(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _importable_reference(function) -> Optional[str]:
    """``"module:qualname"`` when importing that gives back ``function`` itself, else ``None``."""
    module_name, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if not module_name or module_name == "__main__" or "<" in qualname:
        return None
    try:
        target = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return None
    return f"{module_name}:{qualname}" if target is function else None


def _code_component_config(spec: ComponentSpec) -> dict[str, Any]:
    """What a saved config records of an object passed in code: an importable reward function becomes the
    ``python`` reward; an instance of a registered component its name and options; anything else a
    ``passed_in_code`` note, so that running the saved config asks for the object again."""
    from iterframe.loop.stages import FunctionReward
    from iterframe.plugins.registry import UnknownComponentError, get_component_class

    instance = spec.instance
    function = getattr(instance, "function", None)
    if isinstance(instance, FunctionReward):
        reference = _importable_reference(function)
        if reference is not None:
            return {"name": "python", "options": {"function": reference}}
        return {"name": spec.name, CODE_MARKER: _qualified_name(function)}
    try:
        registered = get_component_class(spec.kind, spec.name)
    except UnknownComponentError:
        registered = None
    options = getattr(instance, "options", None)
    if registered is type(instance) and dataclasses.is_dataclass(options):
        values = {info.name: getattr(options, info.name) for info in option_infos(type(options))}
        return {"name": spec.name, "options": values}
    return {"name": spec.name, CODE_MARKER: _qualified_name(type(instance))}


def _from_object(kind: str, value: Any, where: str) -> ComponentSpec:
    """A spec holding a component object (a reward may also be a function ``(samples) -> list[float]``)."""
    from iterframe.loop.stages import FunctionReward
    from iterframe.plugins.registry import KIND_BASES

    base = KIND_BASES[kind]
    if isinstance(value, base):
        return ComponentSpec(kind, getattr(value, "name", "") or type(value).__name__, instance=value)
    if isinstance(value, type) and issubclass(value, base):
        raise RunConfigError(
            f"{where} is the class {value.__name__}; pass an instance ({value.__name__}()) or a registered name."
        )
    if kind == "reward" and callable(value):
        reward = FunctionReward(value)
        return ComponentSpec(kind, reward.name, instance=reward)
    function_note = " or a function (samples) -> list[float]" if kind == "reward" else ""
    raise RunConfigError(
        f"{where} must be a component name or a mapping like {{name: NAME, options: {{...}}}}, or an "
        f"iterframe.{base.__name__} instance{function_note}; got {type(value).__name__} {value!r}."
    )


def component_entry(kind: str, value: Any, where: str) -> ComponentSpec:
    """One component entry in any accepted form as a :class:`ComponentSpec` (options not yet checked)."""
    if isinstance(value, ComponentSpec):
        return dataclasses.replace(value, options=dict(value.options))
    if isinstance(value, str):
        return ComponentSpec(kind, value.strip())
    if isinstance(value, dict):
        entry = dict(value)
        name = entry.pop("name", None)
        options = entry.pop("options", None) or {}
        code_ref = entry.pop(CODE_MARKER, None)
        if not isinstance(options, dict):
            raise RunConfigError(f"{where}.options must be a mapping of option names to values, got {options!r}.")
        if name is not None and not isinstance(name, str):
            raise RunConfigError(f"{where}.name must be a component name (a string), got {name!r}.")
        return ComponentSpec(
            kind, name, {**options, **entry}, code_ref=None if code_ref is None else str(code_ref)
        )
    return _from_object(kind, value, where)


def component_list(kind: str, value: Any, where: str) -> list[ComponentSpec]:
    """A list of component entries; a string is a comma-separated list of names."""
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",") if name.strip()]
    if not isinstance(value, (list, tuple)):
        raise RunConfigError(f"{where} must be a list of components, got {value!r}.")
    return [component_entry(kind, entry, f"{where}[{index}]") for index, entry in enumerate(value)]


def renamed(current: Optional[ComponentSpec], new: ComponentSpec) -> ComponentSpec:
    """``new``, keeping the options ``current`` gave a component of the same name (``new``'s options win)."""
    if new.instance is not None or current is None or current.instance is not None:
        return new
    if current.name in (new.name, None) and new.name is not None:
        return dataclasses.replace(new, options={**current.options, **new.options})
    if new.name is None:
        return dataclasses.replace(current, options={**current.options, **new.options})
    return new


def renamed_list(current: Optional[list[ComponentSpec]], new: list[ComponentSpec]) -> list[ComponentSpec]:
    """``new``, each named entry keeping the options of the first unused ``current`` entry of its name."""
    unused = list(current or [])
    result = []
    for spec in new:
        match = next((old for old in unused if old.instance is None and old.name == spec.name), None)
        if match is not None:
            unused.remove(match)
        result.append(renamed(match, spec) if match is not None else spec)
    return result


#: Rewards that may be written ``NAME:FUNCTION``: ``trl:package.module:function`` is the ``trl`` reward with
#: ``function="package.module:function"`` (``python:``, ``verl:`` and ``openrlhf:`` likewise).
FUNCTION_SHORTHANDS = ("trl", "python", "verl", "openrlhf")


def _expanded_shorthand(spec: ComponentSpec, where: str) -> ComponentSpec:
    """``reward: trl:my_rewards:accuracy`` as ``{name: trl, options: {function: my_rewards:accuracy}}``."""
    prefix, separator, function = spec.name.partition(":")
    if spec.kind != "reward" or not separator or prefix not in FUNCTION_SHORTHANDS:
        return spec
    if not function:
        raise RunConfigError(f"{where}: {spec.name!r} names no function; write {prefix}:package.module:function.")
    given = spec.options.get("function")
    if given is not None and given != function:
        raise RunConfigError(
            f"{where}: {spec.name!r} names the function {function!r}, but its options set function={given!r}; "
            "name it once."
        )
    return ComponentSpec(spec.kind, prefix, {**spec.options, "function": function})


def resolved_component(spec: Optional[ComponentSpec], kind: str, where: str) -> Optional[ComponentSpec]:
    """``spec`` with its name checked against the registry and every option checked and filled with its value
    (defaults included); objects passed in code are taken as they are.

    Raises:
        RunConfigError: a missing, unknown or code-only name, or an option that is unknown or of the wrong type.
    """
    from iterframe.plugins.registry import UnknownComponentError, component_info

    if spec is None or spec.instance is not None:
        return spec
    label = kind_label(kind)
    if spec.code_ref is not None:
        raise RunConfigError(
            f"{where}: the {label} {spec.name!r} was a Python object ({spec.code_ref}) passed to iterframe.run(); "
            f"a config file cannot rebuild it. Pass it again (iterframe.run(CONFIG, {where.split('[')[0]}=...)) "
            f"or name a registered {label}."
        )
    if spec.name is None:
        raise RunConfigError(f"{where}: options were set for the {label} but no {label} is named; name one.")
    spec = _expanded_shorthand(spec, where)
    try:
        options = component_info(kind, spec.name).build(spec.options).options
    except (UnknownComponentError, ComponentOptionError) as error:
        position = f"{where}: " if "[" in where else ""  # which entry of a list
        raise RunConfigError(f"{position}{error}") from None
    values = {info.name: getattr(options, info.name) for info in option_infos(type(options))}
    return ComponentSpec(kind, spec.name, values)
