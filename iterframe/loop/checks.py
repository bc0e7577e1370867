"""Checks of what goes into the loop and what its components return, with errors that name the culprit.

Each check raises ``TypeError`` or ``ValueError`` saying which component (or argument) is wrong, what it gave and
what is expected; the loop runs the component checks inside :func:`iterframe.plugins.errors.blame`, which adds
the plugin and the iteration.
"""

from __future__ import annotations

from typing import Any

from iterframe.loop.config import PromptRecord
from iterframe.plugins.components import Completion

__all__ = [
    "check_batch",
    "check_completions",
    "check_prompt_lengths",
    "check_prompt_records",
    "component_name",
    "require_component",
]


def component_name(component) -> str:
    """The component's registry name, or its class name when it has none."""
    return getattr(component, "name", "") or type(component).__name__


def require_component(value, interface: type, role: str, kind: str):
    """Return ``value`` if it is an instance of ``interface``; else a ``TypeError`` saying how to build one."""
    if not isinstance(value, interface):
        raise TypeError(
            f"{role} must be an iterframe.{interface.__name__} instance, got {type(value).__name__}. Build one "
            f"with iterframe.plugins.create_component({kind!r}, NAME, options) or subclass {interface.__name__}."
        )
    return value


def check_prompt_records(prompts, name: str) -> list[PromptRecord]:
    """``prompts`` as a list of :class:`PromptRecord` (``prompts`` itself must not be empty)."""
    prompts = list(prompts or [])
    if name == "prompts" and not prompts:
        raise ValueError("prompts is empty: the loop needs at least one PromptRecord to generate from.")
    for index, record in enumerate(prompts):
        if not isinstance(record, PromptRecord):
            raise TypeError(
                f"{name}[{index}] must be an iterframe.loop.PromptRecord, got {type(record).__name__}; "
                "wrap each prompt: PromptRecord(prompt_id=i, prompt=text, reference=answer)."
            )
    return prompts


def check_prompt_lengths(trainer, prompts: list[PromptRecord]) -> None:
    """Refuse prompts that ``max_length`` truncation would cut: at least ``max_length`` tokens for a causal LM
    (no room for a single completion token), more than ``max_length`` for an encoder-decoder."""
    max_length = trainer.args.max_length
    if max_length is None:
        return
    from iterframe.generation.prompt_encoding import encode_prompt

    tokenizer = trainer.processing_class
    room = max_length if trainer.is_encoder_decoder else max_length - 1
    too_long = []
    for record in prompts:
        num_tokens = len(encode_prompt(tokenizer, record.prompt, f"prompt {record.prompt_id}"))
        if num_tokens > room:
            too_long.append(f"prompt_id {record.prompt_id}: {num_tokens} tokens")
    if too_long:
        shown = "; ".join(too_long[:5]) + ("; ..." if len(too_long) > 5 else "")
        raise ValueError(
            f"{len(too_long)} of {len(prompts)} prompts do not fit train.max_length={max_length}, which "
            f"leaves room for prompts of at most {room} tokens ({shown}). Raise max_length (e.g. --set "
            "train.max_length=N), or remove the long prompts from the dataset."
        )


def check_completions(generator, generated, num_prompts: int, num_samples: int) -> None:
    """``generated`` must hold ``num_samples`` :class:`Completion` objects (with text) for each prompt."""
    name = component_name(generator)
    if not isinstance(generated, list) or len(generated) != num_prompts:
        size = len(generated) if isinstance(generated, list) else type(generated).__name__
        raise ValueError(f"Generator {name!r} returned {size} completion lists for {num_prompts} prompts.")
    for index, completions in enumerate(generated):
        if (
            not isinstance(completions, list)
            or len(completions) != num_samples
            or not all(isinstance(item, Completion) for item in completions)
        ):
            got = (
                f"{len(completions)} items ({', '.join(sorted({type(c).__name__ for c in completions}))})"
                if isinstance(completions, list)
                else f"a {type(completions).__name__}"
            )
            raise ValueError(
                f"Generator {name!r} must return {num_samples} Completion objects per prompt; prompt {index} "
                f"got {got}."
            )
        for item in completions:
            if not isinstance(item.text, str):
                raise TypeError(
                    f"Generator {name!r} returned a Completion whose text is {type(item.text).__name__} "
                    f"{item.text!r:.60} for prompt {index}; Completion.text must be a string (may be empty)."
                )


def check_batch(tokenizer, batch: Any, num_samples: int) -> None:
    """A sample tokenizer must return ``input_ids`` (and optional mask and labels) with one row per sample."""
    name = component_name(tokenizer)
    if not isinstance(batch, dict) or "input_ids" not in batch:
        raise ValueError(
            f"Tokenizer {name!r} must return a dict with 'input_ids' (and 'labels'), got {batch!r:.80}."
        )
    for key in ("input_ids", "attention_mask", "labels"):
        if key in batch and batch[key] is not None and len(batch[key]) != num_samples:
            raise ValueError(
                f"Tokenizer {name!r} returned {len(batch[key])} {key} rows for {num_samples} samples."
            )
