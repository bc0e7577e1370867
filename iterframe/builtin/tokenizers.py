"""Built-in sample tokenizers: kept samples -> ``input_ids``/``attention_mask``/``labels`` for ``step()``.

``completion-only`` trains on the completion (prompt labels are -100), ``full-text`` on every token, ``chat`` on
the assistant turn of the chat-templated conversation. A completion the generator cut at ``max_new_tokens``
(``finish_reason == "length"``) is trained as it is, without eos or end of turn: it did not end. A sample longer
than the trainer's ``max_length`` loses the end of its completion, never its prompt.

A sample whose generator recorded its token ids (``Sample.completion_token_ids``, ``Sample.prompt_token_ids``)
trains on exactly those ids: encoding the completion's text again can give other ids (BPE merges across the
prompt/completion boundary, normalisation), which the model never sampled. Samples without ids, or whose ids do
not decode to exactly their ``completion`` (a plugin edited it), are encoded from their text.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import abstractmethod
from typing import Optional

from iterframe.generation.prompt_encoding import (
    NO_CHAT_TEMPLATE_ADVICE,
    check_messages,
    encode_prompt,
    is_chat,
    render_prompt,
)
from iterframe.generation.token_ids import eos_token_ids
from iterframe.plugins.components import RunContext, Sample, SampleTokenizer
from iterframe.plugins.hookspecs import hookimpl

__all__ = ["ChatTokenizer", "CompletionOnlyTokenizer", "EosOptions", "FullTextTokenizer", "IGNORE_INDEX"]

#: Label of tokens that carry no loss.
IGNORE_INDEX = -100

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class EosOptions:
    """Options of the tokenizers that append eos to the completion."""

    add_eos: bool = dataclasses.field(
        default=True,
        metadata={"help": "Append eos so the model learns to stop (never to a completion cut at max_new_tokens)."},
    )


def was_cut_at_max_new_tokens(sample: Sample) -> bool:
    """Whether the generator stopped the completion at ``max_new_tokens`` rather than at an end it sampled."""
    return sample.info.get("finish_reason") == "length"


class _PromptCompletionTokenizer(SampleTokenizer):
    """Shared machinery: one ``(input_ids, labels)`` pair per sample, an all-ones attention mask."""

    def setup(self, context: RunContext) -> None:
        if context.tokenizer is None:
            raise ValueError(f"The {self.name!r} tokenizer needs the run's tokenizer (context.tokenizer).")
        self.tokenizer = context.tokenizer
        self.is_encoder_decoder = bool(
            getattr(getattr(context.model, "config", None), "is_encoder_decoder", False)
        )
        self.eos_token_ids = eos_token_ids(context.model, self.tokenizer)
        self.max_length = getattr(getattr(context.trainer, "args", None), "max_length", None)
        self._reported_edited = False

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

    def _sampled_ids(self, sample: Sample) -> Optional[list[int]]:
        """The completion's sampled ids, when it has them and they decode to exactly ``sample.completion`` (ids
        that spell more, e.g. of a completion a plugin trimmed, would train what was trimmed away)."""
        ids = sample.completion_token_ids
        if ids is None:
            return None
        if self.tokenizer.decode(ids, skip_special_tokens=True) == sample.completion:
            return list(ids)
        if not self._reported_edited:
            logger.warning(
                "The %r tokenizer encodes the text of completions that no longer match their sampled token ids "
                "(first: prompt %s, iteration %s); a plugin that edits Sample.completion should set "
                "Sample.completion_token_ids to None.",
                self.name,
                sample.prompt_id,
                sample.iteration,
            )
            self._reported_edited = True
        return None

    def _fit(self, sample: Sample, prompt_ids: list[int], completion_ids: list[int]) -> list[int]:
        """``completion_ids`` cut so that the sample fits ``max_length`` (an encoder-decoder's target alone): the
        trainer's truncation would otherwise cut the start of the prompt (``keep_end``). A prompt that leaves no
        room for a completion token is an error."""
        if self.max_length is None:
            return completion_ids
        if self.is_encoder_decoder:
            return completion_ids[: self.max_length]
        room = self.max_length - len(prompt_ids)
        if room < 1:
            raise ValueError(
                f"The {self.name!r} tokenizer: prompt {sample.prompt_id}: {len(prompt_ids)} tokens leave no room "
                f"for the completion in train.max_length={self.max_length}; raise max_length or shorten the "
                "prompt."
            )
        return completion_ids[:room]

    def _prompt_ids(self, sample: Sample, sampled: Optional[list[int]]) -> list[int]:
        """The prompt's ids as the generator encoded them, when the completion trains on its sampled ids."""
        if sampled is not None and sample.prompt_token_ids is not None:
            return list(sample.prompt_token_ids)
        return encode_prompt(self.tokenizer, sample.prompt, f"prompt {sample.prompt_id}")

    def _completion_ids(self, sample: Sample, sampled: Optional[list[int]], add_eos: bool) -> list[int]:
        """The sampled ids (else the encoded text), with the tokenizer's eos appended when ``add_eos``, the
        completion was not cut at ``max_new_tokens`` and its ids do not already end at an eos id."""
        if sampled is not None:
            ids = list(sampled)
        else:
            ids = list(self.tokenizer(sample.completion, add_special_tokens=False)["input_ids"])
        ended = sampled is not None and ids and ids[-1] in self.eos_token_ids
        if add_eos and not ended and not was_cut_at_max_new_tokens(sample):
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
        sampled = self._sampled_ids(sample)
        prompt_ids = self._prompt_ids(sample, sampled)
        completion_ids = self._fit(sample, prompt_ids, self._completion_ids(sample, sampled, self.options.add_eos))
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
        sampled = self._sampled_ids(sample)
        prompt_ids = self._prompt_ids(sample, sampled)
        input_ids = prompt_ids + self._fit(
            sample, prompt_ids, self._completion_ids(sample, sampled, self.options.add_eos)
        )
        return input_ids, list(input_ids)


class ChatTokenizer(_PromptCompletionTokenizer):
    """The conversation (prompt messages + the completion as the assistant's reply) through the chat template,
    with loss on the assistant's turn only (including the template's end-of-turn tokens). Chat prompts only: a
    text prompt is refused, since the generator samples from it without the template."""

    name = "chat"
    description = "Chat template over prompt + assistant reply; loss on the assistant turn only."

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                "The 'chat' sample tokenizer needs a chat template, and the model's tokenizer has none. With text "
                "prompts, use --sample-tokenizer completion-only (sample_tokenizer: completion-only); with chat "
                f"prompts, {NO_CHAT_TEMPLATE_ADVICE}."
            )
        if self.is_encoder_decoder:
            raise ValueError("The 'chat' tokenizer is for causal LMs; use 'completion-only' for encoder-decoders.")

    def check_prompts(self, prompts: list, prompt_ids: list[int]) -> None:
        """Refuse text prompts: the generator samples from a text prompt as it is, without the chat template, so
        training its reply inside a rendered conversation would train a context the model never sampled from."""
        for prompt, prompt_id in zip(prompts, prompt_ids):
            if not is_chat(prompt):
                raise ValueError(
                    f"prompt {prompt_id} is text, and the 'chat' sample tokenizer trains a chat conversation: the "
                    "generator samples from a text prompt as it is, without the chat template, so the reply would "
                    "be trained after a context the model never saw. Use --sample-tokenizer completion-only "
                    "(sample_tokenizer: completion-only, the default for text prompts), or give the prompts as "
                    'chat messages (a list of {"role": ..., "content": ...}).'
                )

    def _encode(self, sample: Sample) -> tuple[list[int], list[int]]:
        where = f"prompt {sample.prompt_id}"
        self.check_prompts([sample.prompt], [sample.prompt_id])
        messages = check_messages(sample.prompt, where)
        prompt_text = render_prompt(self.tokenizer, messages, where)
        sampled = self._sampled_ids(sample)
        if sampled is not None:
            if sample.prompt_token_ids is not None:
                prompt_ids = list(sample.prompt_token_ids)
            else:
                prompt_ids = list(self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
            if not (sampled and sampled[-1] in self.eos_token_ids) and not was_cut_at_max_new_tokens(sample):
                sampled = sampled + self._end_of_turn_ids(messages)
            sampled = self._fit(sample, prompt_ids, sampled)
            return prompt_ids + sampled, [IGNORE_INDEX] * len(prompt_ids) + sampled
        conversation = messages + [{"role": "assistant", "content": sample.completion}]
        full_text = self.tokenizer.apply_chat_template(
            conversation, tokenize=False, continue_final_message=was_cut_at_max_new_tokens(sample)
        )
        if not full_text.startswith(prompt_text):
            raise ValueError(
                f"{where}: the chat template renders the conversation with a different start than the prompt with "
                "its generation prompt, so the assistant turn cannot be located; use a template where the prompt "
                "is a prefix of the conversation."
            )
        prompt_ids = list(self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
        reply_ids = list(self.tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"])
        reply_ids = self._fit(sample, prompt_ids, reply_ids)
        return prompt_ids + reply_ids, [IGNORE_INDEX] * len(prompt_ids) + reply_ids

    def _end_of_turn_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """What the template writes after an assistant reply (``<|im_end|>\\n``, ``</s>``, ...), as ids: closes a
        sampled reply that did not end at an eos id. The tokenizer's eos when the reply cannot be located."""
        conversation = messages + [{"role": "assistant", "content": _REPLY_MARKER}]
        text = self.tokenizer.apply_chat_template(conversation, tokenize=False)
        if _REPLY_MARKER not in text:
            return [] if self.tokenizer.eos_token_id is None else [self.tokenizer.eos_token_id]
        suffix = text[text.rindex(_REPLY_MARKER) + len(_REPLY_MARKER) :]
        return list(self.tokenizer(suffix, add_special_tokens=False)["input_ids"])


#: Stands for an assistant reply, to find where a chat template's reply ends.
_REPLY_MARKER = "ITERFRAMEREPLYMARKER"


@hookimpl
def register_tokenizers(register):
    register(CompletionOnlyTokenizer)
    register(FullTextTokenizer)
    register(ChatTokenizer)
