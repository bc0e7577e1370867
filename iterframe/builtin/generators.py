"""Built-in generator ``hf``: sampling with ``model.generate`` from the live model being trained."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Optional

import torch

from ..components import Completion, Generator, Prompt, RunContext
from ..hookspecs import hookimpl
from .prompts import encode_prompt

__all__ = ["HFGenerator", "check_num_samples", "cut_at_stop", "left_pad", "shared_prompt_cache"]


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists into ``(input_ids, attention_mask)``, padding on the left so every row ends where its
    continuation starts."""
    width = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            input_ids[row, width - len(sequence) :] = torch.tensor(sequence, dtype=torch.long)
            attention_mask[row, width - len(sequence) :] = 1
    return input_ids, attention_mask


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; returns ``(text, whether a stop string was found)``."""
    positions = [text.find(marker) for marker in stop if marker and marker in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


def check_num_samples(generator_name: str, num_samples: int, do_sample: bool) -> None:
    """Raise ``ValueError`` unless ``num_samples`` is >= 1, and 1 when decoding greedily (K copies of one
    greedy completion are no samples)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    if not do_sample and num_samples > 1:
        raise ValueError(
            f"The {generator_name} generator has do_sample=false (greedy), which would make all {num_samples} "
            "samples per prompt identical; set do_sample=true or ask for 1 sample per prompt."
        )


def _cache_argument(model, parameters) -> Optional[str]:
    """The name under which ``model`` takes and returns its KV cache (``cache`` in transformers 5,
    ``past_key_values`` before), or ``None`` when it cannot continue from a prefilled cache the way ``generate``
    would have filled it (encoder-decoders, forwards without ``position_ids`` such as wrapped models, a fixed
    cache implementation, beam search)."""
    generation_config = getattr(model, "generation_config", None)
    if (
        getattr(model.config, "is_encoder_decoder", False)
        or getattr(generation_config, "cache_implementation", None)
        or (getattr(generation_config, "num_beams", 1) or 1) > 1
        or "position_ids" not in parameters
    ):
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def shared_prompt_cache(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_samples: int):
    """``(argument name, cache)``: the KV cache of every left-padded prompt but its last token, computed once and
    repeated for the prompt's ``num_samples`` samples; ``None`` when there is nothing to share or the model cannot
    continue from it.

    ``generate(num_return_sequences=K)`` copies each prompt K times before its first forward pass. Given this
    cache it runs only the prompts' last tokens, at the same positions and with the same attention, so the logits,
    and hence the samples drawn with a given seed, are those it would have produced, for one prompt pass, not K.
    """
    from transformers import DynamicCache

    if num_samples < 2 or input_ids.shape[1] < 2:
        return None
    parameters = inspect.signature(model.forward).parameters
    argument = _cache_argument(model, parameters)
    if argument is None:
        return None
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # generate's positions for left-padded rows
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
    inputs = {name: tensor[:, :-1] for name, tensor in inputs.items()}
    if "logits_to_keep" in parameters:
        inputs["logits_to_keep"] = 1
    cache = getattr(model(**inputs, use_cache=True), argument, None)
    if not isinstance(cache, DynamicCache):
        return None
    cache.batch_repeat_interleave(num_samples)
    return argument, cache


class HFGenerator(Generator):
    """Samples K completions per prompt with ``model.generate`` (batched, length-sorted, left-padded)."""

    name = "hf"
    description = "Sample K completions per prompt from the live model with transformers' generate()."

    @dataclasses.dataclass
    class Options:
        max_new_tokens: int = dataclasses.field(default=64, metadata={"help": "Most tokens per completion."})
        temperature: float = dataclasses.field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
        top_p: float = dataclasses.field(default=1.0, metadata={"help": "Nucleus sampling mass (1.0: off)."})
        top_k: int = dataclasses.field(
            default=0, metadata={"help": "Sample from the k likeliest tokens (0: off)."}
        )
        do_sample: bool = dataclasses.field(
            default=True, metadata={"help": "Sample (true) or decode greedily (false, one sample per prompt)."}
        )
        stop: list[str] = dataclasses.field(
            default_factory=list,
            metadata={"help": "Stop strings: generation stops at them and the completion is cut before them."},
        )
        batch_size: int = dataclasses.field(default=8, metadata={"help": "Prompts per generate() call."})
        seed: Optional[int] = dataclasses.field(
            default=None, metadata={"help": "Sampling seed (default: the run's seed); each call uses the next."}
        )

        def __post_init__(self):
            if self.max_new_tokens < 1:
                raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
            if self.temperature <= 0:
                raise ValueError(
                    f"temperature must be > 0, got {self.temperature}; use do_sample=false for greedy."
                )
            if not 0 < self.top_p <= 1:
                raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
            if self.top_k < 0:
                raise ValueError(f"top_k must be >= 0 (0 turns it off), got {self.top_k}.")
            if self.batch_size < 1:
                raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")

    def setup(self, context: RunContext) -> None:
        if context.model is None or context.tokenizer is None:
            raise ValueError(
                "The hf generator needs the run's model and tokenizer (context.trainer, context.tokenizer)."
            )
        self.model = context.model
        self.tokenizer = context.tokenizer
        self.seed = self.options.seed if self.options.seed is not None else context.seed
        self.calls = 0

    def generate(self, prompts: list[Prompt], num_samples: int) -> list[list[Completion]]:
        check_num_samples(self.name, num_samples, self.options.do_sample)
        encoded = [
            encode_prompt(self.tokenizer, prompt, f"prompt {index}") for index, prompt in enumerate(prompts)
        ]
        longest_first = sorted(range(len(prompts)), key=lambda index: -len(encoded[index]))
        completions: list[Optional[list[Completion]]] = [None] * len(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(longest_first), self.options.batch_size):
                batch = longest_first[start : start + self.options.batch_size]
                generated = self._generate_batch([encoded[index] for index in batch], num_samples)
                for position, index in enumerate(batch):
                    completions[index] = generated[position * num_samples : (position + 1) * num_samples]
        finally:
            self.model.train(was_training)
        return completions

    def _pad_id(self) -> int:
        pad_id = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad_id is None else pad_id

    def _generate_batch(self, encoded: list[list[int]], num_samples: int) -> list[Completion]:
        options = self.options
        input_ids, attention_mask = left_pad(encoded, self._pad_id())
        device = self.model.device
        kwargs = dict(
            max_new_tokens=options.max_new_tokens,
            do_sample=options.do_sample,
            num_return_sequences=num_samples,
            pad_token_id=self._pad_id(),
            eos_token_id=self.tokenizer.eos_token_id,
        )
        if options.do_sample:
            kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
        if options.stop:
            kwargs.update(stop_strings=list(options.stop), tokenizer=self.tokenizer)
        devices = [device.index or 0] if device.type == "cuda" else []
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(self.seed + self.calls)
            self.calls += 1
            shared = shared_prompt_cache(self.model, input_ids, attention_mask, num_samples)
            if shared is not None:
                kwargs[shared[0]] = shared[1]
            sequences = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        is_encoder_decoder = bool(getattr(self.model.config, "is_encoder_decoder", False))
        new_tokens = sequences[:, 1:] if is_encoder_decoder else sequences[:, input_ids.shape[1] :]
        return [self._completion(row.tolist()) for row in new_tokens.cpu()]

    def _completion(self, tokens: list[int]) -> Completion:
        eos_id, pad_id = self.tokenizer.eos_token_id, self._pad_id()
        if eos_id in tokens:
            length, stopped = tokens.index(eos_id) + 1, True
        else:
            length = len(tokens)
            while length and tokens[length - 1] == pad_id:
                length -= 1
            stopped = length < len(tokens)
        text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True)
        text, hit_stop = cut_at_stop(text, self.options.stop)
        return Completion(text=text, num_tokens=length, finish_reason="stop" if stopped or hit_stop else "length")


@hookimpl
def register_generators(register):
    register(HFGenerator)
