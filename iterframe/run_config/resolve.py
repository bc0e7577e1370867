"""The resolved run config: :func:`resolve_run_config` types a draft in one pass and reports every wrong key.

A configuration is shaped like the YAML file (see ``docs/config.md``)::

    model: path/or/hub-id          model_init_kwargs: {dtype: float32}
    dataset: {path: prompts.jsonl, prompt_column: prompt, reference_column: answer, eval_fraction: 0.25}
    generator: {name: hf, options: {max_new_tokens: 16}}
    reward: answer-match           # a name alone, or {name: ..., options: {...}}
    filters: [threshold, {name: best-of-n, options: {k: 1}}]
    sample_tokenizer: completion-only     loggers: [console]
    loop: {iterations: 3, prompts_per_iteration: 8, samples_per_prompt: 4}
    peft: {method: lora, r: 8, alpha: 16, target_modules: [q_proj, v_proj]}   # optional: train LoRA adapters
    plugins: {iterframe-keyword: {max_perplexity: 500}}   # settings of installed plugins
    train: {learning_rate: 1.0e-4}  # any IterativeSFTConfig field
    output_dir: runs/my-run

Precedence, lowest first: the YAML file (or the embedded demo), flags, ``--set`` overrides, Python overrides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

from iterframe.run_config.checkpoint_settings import loop_checkpoint_settings
from iterframe.run_config.components import ComponentSpec, RunConfigError
from iterframe.run_config.schema import SECTIONS, copy_draft

__all__ = ["RunConfig", "resolve_run_config"]


@dataclasses.dataclass
class RunConfig:
    """Everything a run needs, resolved and type-checked: one field per config key (see ``docs/config.md``).

    Components are :class:`ComponentSpec` objects whose options hold every value (defaults included); they are
    built when the run is prepared. ``sample_tokenizer`` is ``None`` until the prompts are loaded: the default is
    ``chat`` for chat-message prompts and ``completion-only`` for text prompts (see
    :meth:`with_default_sample_tokenizer`).
    """

    model: str
    model_init_kwargs: Optional[dict[str, Any]]
    dataset: Any  # iterframe.loop.datasets.DatasetSettings
    generator: ComponentSpec
    reward: ComponentSpec
    filters: list[ComponentSpec]
    sample_tokenizer: Optional[ComponentSpec]
    loggers: list[ComponentSpec]
    loop: Any  # iterframe.LoopConfig
    train: Any  # iterframe.IterativeSFTConfig
    train_settings: dict[str, Any]  # the ``train:`` section as given (after coercion), saved in config.yaml
    peft: Any  # iterframe.engine.peft_settings.PeftSettings, or None: train the full model
    plugins: dict[str, dict[str, Any]]  # plugin name -> its settings (a typed Config's every field)
    output_dir: str  # absolute

    def with_default_sample_tokenizer(self, prompts_are_chat: bool) -> RunConfig:
        """This config with the default sample tokenizer filled in when none was named."""
        if self.sample_tokenizer is not None:
            return self
        from iterframe.run_config.components import resolved_component

        name = "chat" if prompts_are_chat else "completion-only"
        spec = resolved_component(ComponentSpec("tokenizer", name), "tokenizer", "sample_tokenizer")
        return dataclasses.replace(self, sample_tokenizer=spec)

    def to_config(self) -> dict[str, Any]:
        """The YAML form of this config; :func:`resolve_run_config` of it gives back an equal config."""
        config = {key: section.to_config(self) for key, section in SECTIONS.items()}
        return {key: value for key, value in config.items() if value is not None}


def _problems_message(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"The run config has {len(problems)} problems:\n" + "\n".join(f"  - {problem}" for problem in problems)


def resolve_run_config(config: Mapping[str, Any], existing_output: str = "error") -> RunConfig:
    """Check and type every key of ``config`` (a draft or a config in the YAML schema) and build the
    :class:`RunConfig`, looking up component names and options in the plugin registry.

    Every key is checked in this one pass; a key that needs another (``train`` needs ``loop``'s seed) is checked
    once that one is valid.

    Args:
        config: the configuration (see :mod:`iterframe.run_config.schema`).
        existing_output: what to do with an existing output directory: ``"error"``, ``"resume"`` or
            ``"overwrite"``.

    Raises:
        RunConfigError: naming each missing or invalid key (with the closest valid key for typos).
    """
    draft = copy_draft(config)
    resolved: dict[str, Any] = {"existing_output": existing_output}
    problems, failed, pending = [], set(), list(SECTIONS)
    try:  # the trainer's checkpoint settings are the loop's: train.save_total_limit becomes loop.keep_checkpoints
        draft["loop"] = loop_checkpoint_settings(draft["loop"], draft["train"])
    except ValueError as error:
        problems.append(str(error))
        failed.update(("loop", "train"))
        pending = [key for key in pending if key not in failed]
    while pending:
        waiting = []
        for key in pending:
            try:
                resolved.update(SECTIONS[key].resolve(draft[key], resolved))
            except KeyError as missing:  # it needs a key not resolved yet, or that failed
                needed = missing.args[0] if missing.args else None
                if needed not in SECTIONS:
                    raise
                if needed in failed:
                    failed.add(key)
                else:
                    waiting.append(key)
            except RunConfigError as error:
                problems.append(str(error))
                failed.add(key)
        if waiting == pending:
            raise RuntimeError(f"Config sections {waiting} need each other.")
        pending = waiting
    if problems:
        raise RunConfigError(_problems_message(problems))
    del resolved["existing_output"]
    return RunConfig(**resolved)
