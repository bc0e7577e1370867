"""Preparing a run without writing anything: the config from its layers, then every input checked and built.

Layers, lowest precedence first: the base (a config file or dict; the embedded demo when no layer names a model or
a dataset; a resumed run's saved ``config.yaml``), flags, ``--set`` assignments, Python overrides.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

from iterframe.run_config import (
    CONFIG_FILE,
    RunConfig,
    RunConfigError,
    apply_flags,
    apply_overrides,
    apply_python_overrides,
    load_config_file,
    normalise_config,
    resolve_run_config,
)

__all__ = ["PreparedRun", "build_component", "build_run_config", "check_functions_import", "prepare_run"]

#: The logger that prints a line per iteration; ``quiet`` leaves it out, ``verbose`` makes it print tables.
CONSOLE_LOGGER = "console"
#: Column names that usually hold reference answers, likeliest first.
REFERENCE_COLUMN_NAMES = ("answer", "answers", "solution", "reference", "target", "ground_truth", "label", "gold")

ConfigSource = Union[None, str, os.PathLike, Mapping[str, Any]]


@dataclasses.dataclass
class PreparedRun:
    """A validated run: its config, prompts and built components (the trainer comes last, when it runs).

    Args:
        config: the resolved config, every component option filled in.
        prompts: the training prompts; ``eval_prompts`` the held-out ones (``None``: no eval).
        components: ``generator``, ``reward``, ``sample_tokenizer``: one each; ``filters``, ``loggers``: lists.
        source: where the base config came from: a file path, ``"dict"``, ``"demo"``, or a saved config's path.
    """

    config: RunConfig
    prompts: list
    eval_prompts: Optional[list]
    components: dict[str, Any]
    source: str = "dict"


def _layers(base: dict, config, flags, assignments, overrides) -> dict:
    draft = apply_python_overrides(base, {key: value for key, value in config.items() if value not in (None, {})})
    draft = apply_flags(draft, **flags)
    draft = apply_overrides(draft, list(assignments))
    return apply_python_overrides(draft, overrides)


def _names_model_or_dataset(draft: Mapping[str, Any]) -> bool:
    return bool(draft["model"] or draft["dataset"].get("path"))


def build_run_config(
    config: ConfigSource = None,
    *,
    flags: Optional[Mapping[str, Any]] = None,
    assignments: Sequence[str] = (),
    existing_output: str = "error",
    trust_config_code: bool = False,
    **overrides: Any,
) -> tuple[RunConfig, str]:
    """The resolved config of a run and where its base came from (see :class:`PreparedRun`). A resumed run's saved
    config may name code to import (a ``python`` or ``trl`` reward's function) only with ``trust_config_code`` or
    when the command line names it too (see :mod:`iterframe.api.config_code`).

    Raises:
        RunConfigError: a config file that does not read, any key that is wrong (all of them named), or code
            named by the saved config without ``trust_config_code``.
    """
    flags = dict(flags or {})
    if isinstance(config, (str, os.PathLike)):
        source, layer = os.fspath(config), load_config_file(os.fspath(config))
    else:
        source, layer = "dict", normalise_config(config)
    user = _layers(normalise_config(None), layer, flags, assignments, overrides)
    base, resumed_from = normalise_config(None), None
    if not _names_model_or_dataset(user):
        saved = os.path.join(user["output_dir"] or "", CONFIG_FILE)
        if existing_output == "resume" and user["output_dir"] and os.path.isfile(saved):
            source, base, resumed_from = saved, load_config_file(saved), saved
        else:
            from iterframe.demo import demo_run_spec

            source, base = "demo", normalise_config(demo_run_spec())
            if existing_output == "error" and not user["output_dir"]:
                base["output_dir"] = _unused_demo_output_dir(base["output_dir"])
    run_config = resolve_run_config(_layers(base, layer, flags, assignments, overrides), existing_output)
    if resumed_from is not None:
        from iterframe.api.config_code import check_config_code

        check_config_code(_component_specs(run_config), _component_specs(user), resumed_from, trust_config_code)
    return run_config, source


def _unused_demo_output_dir(output_dir: str) -> str:
    """The demo's default folder, or, when it holds a run, the first of ``DIR-2``, ``DIR-3``, ... that holds
    none: running the demo again starts a new run beside the last one (``--resume``/``--overwrite`` still act on
    the default folder)."""
    from iterframe.loop.run_state import RUN_ARTIFACTS

    def holds_a_run(path: str) -> bool:
        return any(os.path.lexists(os.path.join(path, name)) for name in RUN_ARTIFACTS)

    number, candidate = 1, output_dir
    while holds_a_run(candidate) or os.path.isfile(candidate):
        number += 1
        candidate = f"{output_dir}-{number}"
    return candidate


def _component_specs(config) -> list:
    """The component specs of a resolved :class:`RunConfig`, or of a draft (a dict; unset kinds are ``None``)."""
    get = config.get if isinstance(config, Mapping) else lambda key: getattr(config, key)
    singles = [get("generator"), get("reward"), get("sample_tokenizer")]
    return [spec for spec in singles + list(get("filters") or []) + list(get("loggers") or []) if spec is not None]


def _likely_reference_column(columns: list[str]) -> Optional[str]:
    by_name = {column.lower(): column for column in columns}
    for name in REFERENCE_COLUMN_NAMES:
        if name in by_name:
            return by_name[name]
    return next((column for column in columns if "answer" in column.lower() or "solution" in column.lower()), None)


def check_reward_needs(reward, run_config: RunConfig, prompts: list, eval_prompts: Optional[list]) -> None:
    """Refuse a reward that needs reference answers (``needs_reference``) when prompts have none, suggesting the
    dataset's likeliest reference column; before any model is loaded."""
    if not getattr(reward, "needs_reference", False):
        return
    dataset = run_config.dataset
    label = f"The reward {reward.name!r} compares each completion with a reference answer"
    for records, what in ((prompts, "training prompts"), (eval_prompts or [], "eval prompts")):
        missing = [record for record in records if record.reference is None]
        if not missing:
            continue
        column = dataset.reference_column or "reference"
        if len(missing) == len(records) and not any(column in record.extra for record in records):
            columns = [dataset.prompt_column, *records[0].extra]
            likely = _likely_reference_column(columns[1:])
            hint = f" The column {likely!r} looks like it: --reference-column {likely}." if likely else ""
            raise RunConfigError(
                f"{label}, but the {what} have no reference column {column!r} (their columns: "
                f"{', '.join(columns)}). Pass --reference-column NAME (or set dataset.reference_column).{hint}"
            )
        ids = ", ".join(str(record.prompt_id) for record in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise RunConfigError(
            f"{label}, but {len(missing)} of {len(records)} {what} have no value in the reference column "
            f"{column!r} (prompt_id {ids}). Fill them in or drop those rows."
        )


def build_component(spec):
    """The component of ``spec``: the object passed in code, or the registered one built with its options."""
    from iterframe.plugins.registry import create_component

    return spec.instance if spec.instance is not None else create_component(spec.kind, spec.name, spec.options)


def _console_table(spec):
    """``spec`` with the console logger's table format (verbose runs); other loggers as they are."""
    if spec.name != CONSOLE_LOGGER or spec.instance is not None:
        return spec
    return dataclasses.replace(spec, options={**spec.options, "format": "table"})


def check_functions_import(components: Sequence[Any]) -> None:
    """Import the function each function reward (``python``, ``trl``, ``verl``, ``openrlhf``) names, before any
    model loads, so a name that does not import costs seconds, not a model load.

    Raises:
        ValueError: one line naming the function, why it did not import and the ``file.py:function`` form.
    """
    for component in components:
        if callable(getattr(component, "loaded_function", None)):
            component.loaded_function()


def _check_sample_tokenizer_prompts(sample_tokenizer, prompts) -> None:
    """The ``chat`` sample tokenizer takes chat prompts only: text prompts are refused before anything runs."""
    from iterframe.builtin.tokenizers import ChatTokenizer

    if isinstance(sample_tokenizer, ChatTokenizer):
        sample_tokenizer.check_prompts(
            [record.prompt for record in prompts], [record.prompt_id for record in prompts]
        )


def prepare_run(run_config: RunConfig, source: str = "dict") -> PreparedRun:
    """Validate everything a run needs without writing anything: installed plugins, the output directory, the
    dataset, the components and what the reward needs from the dataset, and that the model can be there.

    Raises:
        ValueError: a bad output directory, dataset, component, reward input or model (the message says which).
        PluginLoadError: an installed plugin failed to import.
    """
    from iterframe.api.model_check import check_model_reference
    from iterframe.api.output_dir import check_output_dir
    from iterframe.loop.datasets import load_prompt_sets
    from iterframe.plugins.manager import check_plugin_load_errors

    check_plugin_load_errors()
    check_output_dir(run_config.loop.output_dir, run_config.loop.existing_output)
    prompts, eval_prompts = load_prompt_sets(run_config.dataset, seed=run_config.loop.seed)
    chat = any(not isinstance(record.prompt, str) for record in prompts)
    run_config = run_config.with_default_sample_tokenizer(chat)
    quiet, verbose = run_config.loop.quiet, run_config.loop.verbose
    components = {
        "generator": build_component(run_config.generator),
        "reward": build_component(run_config.reward),
        "filters": [build_component(spec) for spec in run_config.filters],
        "sample_tokenizer": build_component(run_config.sample_tokenizer),
        # quiet leaves the console table out of this run (the saved config keeps the logger for later runs)
        "loggers": [
            build_component(_console_table(spec) if verbose else spec)
            for spec in run_config.loggers
            if not (quiet and spec.name == CONSOLE_LOGGER)
        ],
    }
    check_functions_import([components["reward"]])
    check_reward_needs(components["reward"], run_config, prompts, eval_prompts)
    _check_sample_tokenizer_prompts(components["sample_tokenizer"], prompts)
    if run_config.loop.train_from:  # the recorded set is there and long enough, before any model loads
        from iterframe.loop.sample_sets import TrainingSet

        TrainingSet(run_config.loop.train_from, tokenizer_hash=None).check_covers(run_config.loop.iterations)
    if source == "demo":  # built on first use, silently in quiet runs
        from iterframe.demo import demo_model_path

        demo_model_path(quiet=run_config.loop.quiet)
    check_model_reference(run_config.model, run_config.model_init_kwargs)
    return PreparedRun(run_config, prompts, eval_prompts, components, source)
