"""Built-in sample tokenizers: kept samples -> ``input_ids``/``attention_mask``/``labels`` for ``step()``.

``completion-only`` trains on the completion (prompt labels are -100), ``full-text`` on every token, ``chat`` on
the assistant turn of the chat-templated conversation.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod

from iterframe.generation.prompt_encoding import check_messages, encode_prompt, is_chat, render_prompt
from iterframe.plugins.components import RunContext, Sample, SampleTokenizer
from iterframe.plugins.hookspecs import hookimpl

__all__ = ["ChatTokenizer", "CompletionOnlyTokenizer", "EosOptions", "FullTextTokenizer", "IGNORE_INDEX"]

#: Label of tokens that carry no loss.
IGNORE_INDEX = -100


@dataclasses.dataclass
class EosOptions:
    """Options of the tokenizers that append eos to the completion."""

    add_eos: bool = dataclasses.field(default=True, metadata={"help": "Append eos so the model learns to stop."})


class _PromptCompletionTokenizer(SampleTokenizer):
    """Shared machinery: one ``(input_ids, labels)`` pair per sample, an all-ones attention mask."""

    def setup(self, context: RunContext) -> None:
        if context.tokenizer is None:
            raise ValueError(f"The {self.name!r} tokenizer needs the run's tokenizer (context.tokenizer).")
        self.tokenizer = context.tokenizer
        self.is_encoder_decoder = bool(
            getattr(getattr(context.model, "config", None), "is_encoder_decoder", False)
        )

    def tokenize(self, samples: list[Sample]) -> dict[str, list[list[int]]]:
        pairs = [self._encode(sample) for sample in samples]
        return {
            "input_ids": [input_ids for input_ids, _ in pairs],
            "attention_mask": [[1] * len(input_ids) for input_ids, _ in pairs],
            "labels": [labels for _, labels in pairs],
        }

    @abstractmethod
    def _encode(self, sample: Sample) -> tuple[list[int], list[int]]:
        """``(input_ids, labels)`` of one sample."""

    def _completion_ids(self, completion: str, add_eos: bool) -> list[int]:
        ids = list(self.tokenizer(completion, add_special_tokens=False)["input_ids"])
        if add_eos:
            if self.tokenizer.eos_token_id is None:
                raise ValueError(f"The {self.name!r} tokenizer appends eos, but the tokenizer has no eos token.")
            ids.append(self.tokenizer.eos_token_id)
        return ids


class CompletionOnlyTokenizer(_PromptCompletionTokenizer):
    """prompt + completion + eos, with loss on the completion and eos only."""

    name = "completion-only"
    description = "Train on the completion only: prompt tokens get label -100, eos is appended."

    Options = EosOptions

    def _encode(self, sample: Sample) -> tuple[list[int], list[int]]:
        prompt_ids = encode_prompt(self.tokenizer, sample.prompt, f"prompt {sample.prompt_id}")
        completion_ids = self._completion_ids(sample.completion, self.options.add_eos)
        if self.is_encoder_decoder:
            return prompt_ids, completion_ids
        return prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids


class FullTextTokenizer(_PromptCompletionTokenizer):
    """prompt + completion + eos, with loss on every token."""

    name = "full-text"
    description = "Train on prompt and completion alike (eos appended)."

    Options = EosOptions

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        if self.is_encoder_decoder:
            raise ValueError(
                "The 'full-text' tokenizer is for causal LMs; an encoder-decoder's prompt is its input, not a "
                "target. Use the 'completion-only' tokenizer."
            )

    def _encode(self, sample: Sample) -> tuple[list[int], list[int]]:
        prompt_ids = encode_prompt(self.tokenizer, sample.prompt, f"prompt {sample.prompt_id}")
        input_ids = prompt_ids + self._completion_ids(sample.completion, self.options.add_eos)
        return input_ids, list(input_ids)


class ChatTokenizer(_PromptCompletionTokenizer):
    """The conversation (prompt messages + the completion as the assistant's reply) through the chat template,
    with loss on the assistant's turn only (including the template's end-of-turn tokens)."""

    name = "chat"
    description = "Chat template over prompt + assistant reply; loss on the assistant turn only."

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                "The 'chat' tokenizer needs a tokenizer with a chat template; set tokenizer.chat_template or use "
                "the 'completion-only' tokenizer."
            )
        if self.is_encoder_decoder:
            raise ValueError("The 'chat' tokenizer is for causal LMs; use 'completion-only' for encoder-decoders.")

    def _encode(self, sample: Sample) -> tuple[list[int], list[int]]:
        where = f"prompt {sample.prompt_id}"
        messages = (
            check_messages(sample.prompt, where)
            if is_chat(sample.prompt)
            else [{"role": "user", "content": sample.prompt}]
        )
        prompt_text = render_prompt(self.tokenizer, messages, where)
        conversation = messages + [{"role": "assistant", "content": sample.completion}]
        full_text = self.tokenizer.apply_chat_template(conversation, tokenize=False)
        if not full_text.startswith(prompt_text):
            raise ValueError(
                f"{where}: the chat template renders the conversation with a different start than the prompt with "
                "its generation prompt, so the assistant turn cannot be located; use a template where the prompt "
                "is a prefix of the conversation."
            )
        prompt_ids = list(self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
        reply_ids = list(self.tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"])
        return prompt_ids + reply_ids, [IGNORE_INDEX] * len(prompt_ids) + reply_ids


@hookimpl
def register_tokenizers(register):
    register(CompletionOnlyTokenizer)
    register(FullTextTokenizer)
    register(ChatTokenizer)
