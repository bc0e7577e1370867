"""Built-in generator ``hf``: sampling from the live model being trained, with iterframe's decoding loop or
transformers' ``model.generate``."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

from iterframe.generation.prompt_encoding import encode_prompt
from iterframe.generation.token_ids import eos_token_ids, ids_spelling, tokenizer_fingerprint
from iterframe.plugins.components import Completion, Generator, Prompt, RunContext
from iterframe.plugins.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from iterframe.generation.decoding import DecodingSettings

# torch and the decoding machinery are imported where they are used, so listing the plugins stays light
__all__ = ["HFGenerator", "check_num_samples", "cut_at_stop", "left_pad"]

logger = logging.getLogger(__name__)

#: Prompts per call of the greedy eval by default: one completion each, so a call holds no more sequences than a
#: sampling call of 8 prompts x 8 samples. On 2 CPU cores, 64 prompts of 32 new tokens took 0.86 s at 64 a call,
#: 2.8 s at 8 a call (an 8-layer, 256-wide Llama; a 135M chat model: 33.5 s against 269 s for 60 prompts).
DEFAULT_EVAL_BATCH_SIZE = 64


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token lists into ``(input_ids, attention_mask)``, padding on the left so every row ends where its
    continuation starts."""
    import torch

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


class HFGenerator(Generator):
    """Samples K completions per prompt from the live model (batched, length-sorted, left-padded): with
    iterframe's decoding loop (:mod:`iterframe.generation.decoding`) where the model allows it, else, or when
    ``use_generate`` is set, with ``model.generate``."""

    name = "hf"
    description = "Sample K completions per prompt from the live model (transformers models, any device)."

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
        eval_batch_size: Optional[int] = dataclasses.field(
            default=None,
            metadata={
                "help": "Prompts per generate() call of the greedy eval, one completion each (none: "
                f"{DEFAULT_EVAL_BATCH_SIZE}, or batch_size when larger: no more sequences than a sampling call "
                "of 8 prompts x 8 samples; on CPU 8x faster than 8 prompts a call)."
            },
        )
        seed: Optional[int] = dataclasses.field(
            default=None, metadata={"help": "Sampling seed (default: the run's seed); each call uses the next."}
        )
        use_generate: bool = dataclasses.field(
            default=False,
            metadata={
                "help": "Always sample with transformers' generate() (slower). By default iterframe's decoding "
                "loop samples from the same distribution wherever the model allows it."
            },
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
            for name in ("batch_size", "eval_batch_size"):
                value = getattr(self, name)
                if value is not None and value < 1:
                    raise ValueError(f"{name} must be >= 1, got {value}.")

    @property
    def prompts_per_call(self) -> int:
        return self.options.batch_size

    def eval_copy(self) -> HFGenerator:
        """A copy that decodes greedily (``do_sample=False``), ``eval_batch_size`` prompts a call."""
        options = self.options
        eval_batch_size = options.eval_batch_size or max(DEFAULT_EVAL_BATCH_SIZE, options.batch_size)
        return self.with_options(dataclasses.replace(options, do_sample=False, batch_size=eval_batch_size))

    def setup(self, context: RunContext) -> None:
        if context.model is None or context.tokenizer is None:
            raise ValueError(
                "The hf generator needs the run's model and tokenizer (context.trainer, context.tokenizer)."
            )
        self.model = context.model
        self.tokenizer = context.tokenizer
        self.seed = self.options.seed if self.options.seed is not None else context.seed
        self.eos_token_ids = eos_token_ids(self.model, self.tokenizer)
        self.tokenizer_hash = tokenizer_fingerprint(self.tokenizer)
        accelerator = getattr(context.trainer, "accelerator", None)
        self.process_index = getattr(accelerator, "process_index", 0)
        self.calls = 0
        self._reported_fallback = False
        self._loop_served = self._loop_failed = False

    def state_dict(self) -> dict:
        """The number of batches sampled so far: a resumed run continues the seed sequence where it stopped."""
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state["calls"])

    def _call_seed(self) -> int:
        """The seed of the next batch: ``seed + calls`` on the first process; on process ``r > 0`` a 32-bit hash
        of ``(seed, r, calls)`` (torch's CPU generator keeps 32 bits of a seed), so every process samples from
        its own stream."""
        if self.process_index == 0:
            return self.seed + self.calls
        digest = hashlib.sha256(f"{self.seed}:{self.process_index}:{self.calls}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def generate(self, prompts: list[Prompt], num_samples: int) -> list[list[Completion]]:
        from iterframe.generation.lockstep import most_across_processes, needs_lockstep

        check_num_samples(self.name, num_samples, self.options.do_sample)
        encoded = [
            encode_prompt(self.tokenizer, prompt, f"prompt {index}") for index, prompt in enumerate(prompts)
        ]
        longest_first = sorted(range(len(prompts)), key=lambda index: -len(encoded[index]))
        completions: list[Optional[list[Completion]]] = [None] * len(prompts)
        batches = [
            longest_first[start : start + self.options.batch_size]
            for start in range(0, len(longest_first), self.options.batch_size)
        ]
        lockstep = needs_lockstep(self.model)
        # sharded weights: every process samples as many batches (the extra ones' output unused)
        num_batches = most_across_processes(len(batches), self.model.device) if lockstep else len(batches)
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in batches:
                generated = self._generate_batch([encoded[index] for index in batch], num_samples, lockstep)
                for position, index in enumerate(batch):
                    completions[index] = generated[position * num_samples : (position + 1) * num_samples]
            for _ in range(num_batches - len(batches)):
                self._generate_batch([encoded[0] if encoded else [self._pad_id()]], num_samples, lockstep)
        finally:
            self.model.train(was_training)
        return completions

    def _pad_id(self) -> int:
        pad_id = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad_id is None else pad_id

    def _generate_batch(self, encoded: list[list[int]], num_samples: int, lockstep: bool) -> list[Completion]:
        import torch

        input_ids, attention_mask = left_pad(encoded, self._pad_id())
        device = self.model.device
        devices = [device.index or 0] if device.type == "cuda" else []
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(self._call_seed())
            self.calls += 1
            new_tokens = None
            if self._use_decoding_loop(input_ids.shape[1]):
                new_tokens = self._decode(input_ids, attention_mask, num_samples, lockstep)
            if new_tokens is None:
                new_tokens = self._call_generate(input_ids, attention_mask, num_samples, lockstep)
        return [
            self._completion(row.tolist(), encoded[position // num_samples])
            for position, row in enumerate(new_tokens.cpu())
        ]

    def _decode(self, input_ids, attention_mask, num_samples: int, lockstep: bool) -> Optional[torch.Tensor]:
        """The decoding loop's new tokens; ``None`` (sample with ``generate()``) when the loop fails on a model
        it has not served yet: a model whose layers it cannot drive, which its checks did not foresee, falls
        back with a warning instead of ending the run. Once the loop has served the model, errors propagate."""
        import torch

        from iterframe.generation.decoding import decode

        try:
            settings, stop_check = self._settings(), self._stop_check()
            new_tokens = decode(
                self.model, input_ids, attention_mask, num_samples, settings, stop_check, lockstep=lockstep
            )
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            if self._loop_served or isinstance(error, torch.cuda.OutOfMemoryError):
                raise
            logger.warning(
                "The hf generator's decoding loop failed on %s (%s: %s); it samples with transformers' "
                "generate() from now on.",
                type(self.model).__name__,
                type(error).__name__,
                error,
            )
            self._loop_failed = True
            return None
        self._loop_served = True
        return new_tokens

    def _use_decoding_loop(self, prompt_width: int) -> bool:
        """Whether iterframe's decoding loop samples this batch; the first time it cannot, says why."""
        from iterframe.generation.decoding import unsupported_reason

        if self.options.use_generate or self._loop_failed:
            return False
        reason = unsupported_reason(self.model, prompt_width + self.options.max_new_tokens)
        if reason is None and not self.eos_token_ids:
            reason = "neither the tokenizer nor the generation config names an eos token"
        if reason is not None and not self._reported_fallback:
            logger.info("The hf generator samples with transformers' generate(): %s.", reason)
            self._reported_fallback = True
        return reason is None

    def _settings(self) -> DecodingSettings:
        from iterframe.generation.decoding import DecodingSettings

        options = self.options
        return DecodingSettings(
            max_new_tokens=options.max_new_tokens,
            min_new_tokens=getattr(self.model.generation_config, "min_new_tokens", None) or 0,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self._pad_id(),
            do_sample=options.do_sample,
            temperature=options.temperature,
            top_k=options.top_k,
            top_p=options.top_p,
        )

    def _stop_check(self) -> Optional[Callable[[list[int]], bool]]:
        """Whether generated tokens hold a stop string (``decoding.stop_string_check``)."""
        from iterframe.generation.decoding import stop_string_check

        return stop_string_check(self.tokenizer, self.options.stop)

    def _call_generate(self, input_ids, attention_mask, num_samples: int, lockstep: bool) -> torch.Tensor:
        """The new tokens of ``model.generate``, from the prompts' shared KV cache where the model allows it."""
        from iterframe.generation.prompt_cache import shared_prompt_cache

        options = self.options
        kwargs = dict(
            synced_gpus=lockstep,
            max_new_tokens=options.max_new_tokens,
            do_sample=options.do_sample,
            num_return_sequences=num_samples,
            pad_token_id=self._pad_id(),
            eos_token_id=list(self.eos_token_ids) or None,
        )
        if options.do_sample:
            kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
        if options.stop:
            kwargs.update(stop_strings=list(options.stop), tokenizer=self.tokenizer)
        shared = shared_prompt_cache(self.model, input_ids, attention_mask, num_samples)
        if shared is not None:
            kwargs[shared[0]] = shared[1]
        sequences = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        is_encoder_decoder = bool(getattr(self.model.config, "is_encoder_decoder", False))
        return sequences[:, 1:] if is_encoder_decoder else sequences[:, input_ids.shape[1] :]

    def _completion(self, tokens: list[int], prompt_ids: list[int]) -> Completion:
        """The completion of one row of new tokens: up to its first eos id, else up to the padding after the
        token that completed a stop string; a text cut before a stop string keeps the ids that spell it."""
        eos_at = next((position for position, token in enumerate(tokens) if token in self.eos_token_ids), None)
        if eos_at is not None:
            length, stopped = eos_at + 1, True
        else:
            length, pad_id = len(tokens), self._pad_id()
            while length and tokens[length - 1] == pad_id:
                length -= 1
            stopped = length < len(tokens)
        text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True)
        text, hit_stop = cut_at_stop(text, self.options.stop)
        return Completion(
            text=text,
            num_tokens=length,
            finish_reason="stop" if stopped or hit_stop else "length",
            token_ids=ids_spelling(self.tokenizer, tokens[:length], text) if hit_stop else tokens[:length],
            prompt_token_ids=list(prompt_ids),
            tokenizer_hash=self.tokenizer_hash,
        )


@hookimpl
def register_generators(register):
    register(HFGenerator)
