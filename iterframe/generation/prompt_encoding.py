"""Prompts as the model sees them: plain text as is, chat messages through the tokenizer's chat template."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from iterframe.plugins.components import Prompt

__all__ = ["NO_CHAT_TEMPLATE_ADVICE", "check_messages", "encode_prompt", "is_chat", "render_prompt"]

#: What to do when chat prompts meet a tokenizer without a chat template (every option named exists).
NO_CHAT_TEMPLATE_ADVICE = (
    "use a model whose tokenizer has one (chat and instruct models ship a `chat_template` in their "
    "tokenizer_config.json), or give text prompts: point --prompt-column (dataset.prompt_column) at a column of "
    "strings"
)


def is_chat(prompt: Prompt) -> bool:
    """Whether ``prompt`` is a list of chat messages rather than text."""
    return isinstance(prompt, (list, tuple))


def check_messages(messages, where: str) -> list[dict[str, str]]:
    """Return ``messages`` if each is a ``{"role": ..., "content": ...}`` dict, else raise naming ``where``."""
    for index, message in enumerate(messages):
        if not (isinstance(message, dict) and "role" in message and "content" in message):
            raise ValueError(
                f"{where}: message {index} is {message!r}; chat messages are dicts with 'role' and 'content'."
            )
    return list(messages)


def render_prompt(tokenizer, prompt: Prompt, where: str = "prompt") -> str:
    """The prompt's text: text prompts unchanged, chat prompts rendered with the chat template (with the
    generation prompt, so the model continues as the assistant)."""
    if isinstance(prompt, str):
        return prompt
    if not is_chat(prompt):
        raise TypeError(f"{where} is a {type(prompt).__name__}; a prompt is text or a list of chat messages.")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{where} is a list of chat messages but the model's tokenizer has no chat template; "
            f"{NO_CHAT_TEMPLATE_ADVICE}."
        )
    messages = check_messages(prompt, where)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, prompt: Prompt, where: str = "prompt") -> list[int]:
    """Token ids of the prompt: special tokens (bos) added to text prompts, but never a second bos in front of one
    the text already starts with; a chat template adds its own."""
    text = render_prompt(tokenizer, prompt, where)
    ids = list(tokenizer(text, add_special_tokens=not is_chat(prompt))["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    return ids[1:] if bos is not None and ids[:2] == [bos, bos] else ids
