"""A lean sampling loop for decoder-only transformers models, used by the ``hf`` generator instead of
``model.generate`` where it gives the same distribution.

Each prompt is encoded once and its KV cache repeated for its K samples; every step draws the next token of
every row by inverse-CDF sampling over the warped distribution (temperature, then top-k, then top-p, as
``generate`` applies them); rows leave the batch as soon as they finish (eos or a stop string). The attention
mask of a step is built directly as the 4D additive mask the attention kernels take, instead of being rebuilt
by the model at every step, and the KV cache is written in place (:mod:`.kv_buffers`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Optional, Union

import torch

from iterframe.engine.model_support import native_decoder_reason
from iterframe.generation.kv_buffers import PreallocatedKV
from iterframe.generation.lockstep import all_processes_finished
from iterframe.generation.prompt_cache import cache_argument

__all__ = ["DecodingSettings", "decode", "draw_tokens", "stop_string_check", "unsupported_reason", "warp_logits"]

#: Generation-config fields the loop honours or that do not change what is sampled.
_HONOURED_GENERATION_FIELDS = {
    "_from_model_config",
    "bos_token_id",
    "decoder_start_token_id",
    "do_sample",
    "eos_token_id",
    "max_length",
    "max_new_tokens",
    "min_new_tokens",
    "output_attentions",
    "output_hidden_states",
    "output_logits",
    "output_scores",
    "pad_token_id",
    "return_dict_in_generate",
    "temperature",
    "top_k",
    "top_p",
    "transformers_version",
    "use_cache",
}
#: Layer kinds (``config.layer_types``) the loop drives; hybrids (chunked attention as in Llama-4, linear
#: attention, convolutions, state-space layers) keep state the loop does not manage.
_SERVED_LAYER_TYPES = {"full_attention", "sliding_attention"}
#: Values of other fields that change nothing (saved generation configs often spell them out).
_NEUTRAL_VALUES = {
    "diversity_penalty": 0.0,
    "encoder_no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "length_penalty": 1.0,
    "min_length": 0,
    "no_repeat_ngram_size": 0,
    "num_beam_groups": 1,
    "num_beams": 1,
    "num_return_sequences": 1,
    "repetition_penalty": 1.0,
    "typical_p": 1.0,
}


@dataclasses.dataclass(frozen=True)
class DecodingSettings:
    """What to sample: ``max_new_tokens`` per row, ended by any of the ids in ``eos_token_id`` (one id or
    several; every one suppressed before ``min_new_tokens``), greedily or from the distribution warped by
    ``temperature``, ``top_k`` (0: off) and ``top_p`` (1.0: off)."""

    max_new_tokens: int
    eos_token_id: Union[int, Sequence[int]]
    pad_token_id: int
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_new_tokens: int = 0

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Every id that ends a row."""
        eos = self.eos_token_id
        return (eos,) if isinstance(eos, int) else tuple(eos)


def decoding_model(model):
    """The transformers model whose forward the loop calls: ``model`` itself, or the base model (with its
    adapter layers in place) of a PEFT model whose adapters live in the weights, such as LoRA."""
    if hasattr(model, "get_base_model") and hasattr(model, "active_peft_config"):
        if getattr(model.active_peft_config, "is_prompt_learning", False):
            return model
        return model.get_base_model()
    return model


def unsupported_reason(model, max_total_length: int) -> Optional[str]:
    """Why the loop cannot stand in for ``model.generate`` on ``model`` (``None`` when it can): it drives
    transformers' own decoder-only implementations with the sdpa or eager attention kernel, a dynamic cache and
    a generation config asking for nothing beyond temperature, top-k, top-p and min_new_tokens."""
    model = decoding_model(model)
    reason = native_decoder_reason(model, "the loop")
    if reason is not None:
        return reason
    other_layers = sorted(set(getattr(model.config, "layer_types", None) or []) - _SERVED_LAYER_TYPES)
    if other_layers:
        return (
            f"the model has {', '.join(other_layers)} layers (the loop drives full and sliding-window attention)"
        )
    if getattr(model.config, "attention_chunk_size", None):
        return "the model uses chunked attention"
    window = getattr(model.config, "sliding_window", None)
    if window and max_total_length > window:
        return f"prompt + completion ({max_total_length} tokens) may exceed the sliding window ({window})"
    if cache_argument(model, inspect.signature(model.forward).parameters) is None:
        return "the model cannot continue from a prefilled cache"
    generation_config = getattr(model, "generation_config", None)
    fields = generation_config.to_diff_dict() if generation_config is not None else {}
    extra = sorted(
        name
        for name, value in fields.items()
        if name not in _HONOURED_GENERATION_FIELDS
        and value not in (None, False)
        and (name not in _NEUTRAL_VALUES or value != _NEUTRAL_VALUES[name])
    )
    if extra:
        return f"the model's generation config sets {', '.join(extra)}"
    return None


def warp_logits(logits: torch.Tensor, settings: DecodingSettings) -> torch.Tensor:
    """``logits`` [rows, vocab] scaled by the temperature, then with every token outside the top-k and outside
    the top-p nucleus (the smallest set of likeliest tokens whose probability exceeds ``top_p``) set to -inf."""
    if settings.temperature != 1.0:
        logits = logits / settings.temperature
    if 0 < settings.top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, settings.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if settings.top_p < 1.0:
        ascending, order = torch.sort(logits, dim=-1)
        outside = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - settings.top_p
        outside[..., -1] = False  # the likeliest token always stays
        logits = logits.masked_fill(outside.scatter(-1, order, outside), float("-inf"))
    return logits


def draw_tokens(logits: torch.Tensor, uniform: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One token per row of ``logits`` [rows, vocab]: the argmax when ``uniform`` is ``None``, else the sample of
    ``softmax(logits)`` found by inverting its cumulative distribution (in float64, so no token's share is lost
    to rounding) at the row's number in ``uniform`` [rows], drawn uniformly from [0, 1)."""
    if uniform is None:
        return logits.argmax(dim=-1)
    cumulative = logits.softmax(dim=-1, dtype=torch.float64).cumsum(dim=-1)
    targets = uniform.to(torch.float64)[:, None] * cumulative[:, -1:]
    tokens = torch.searchsorted(cumulative, targets, right=True).squeeze(-1)
    return tokens.clamp_(max=logits.shape[-1] - 1)


def _additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The [rows, 1, 1, keys] mask of one decoding step: 0 where a row attends, the dtype's minimum elsewhere."""
    blocked = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    return blocked.masked_fill_(~keep, torch.finfo(dtype).min)[:, None, None, :]


def stop_string_check(tokenizer, stop: Sequence[str]) -> Optional[Callable[[list[int]], bool]]:
    """``stopped(tokens)``: whether generated tokens contain one of the ``stop`` strings (``None`` when there are
    none). Only their tail is decoded, grown until it spells ``len(longest stop string) + 8`` characters (tokens
    that spell a part of a character, as byte-fallback pieces do, or none, as special tokens do, need more)."""
    markers = [marker for marker in stop if marker]
    if not markers:
        return None
    characters = max(map(len, markers)) + 8

    def stopped(tokens: list[int]) -> bool:
        window = characters
        while True:
            tail = tokenizer.decode(tokens[-window:], skip_special_tokens=True)
            if any(marker in tail for marker in markers):
                return True
            if window >= len(tokens) or len(tail.lstrip("\ufffd")) >= characters:
                return False
            window *= 2

    return stopped


def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_samples: int,
    settings: DecodingSettings,
    stopped: Optional[Callable[[list[int]], bool]] = None,
    lockstep: bool = False,
) -> Optional[torch.Tensor]:
    """Sample ``num_samples`` continuations of each left-padded prompt: a [prompts x num_samples,
    max_new_tokens] tensor (a prompt's samples in consecutive rows), each row padded with ``pad_token_id`` after
    its eos, or after the token for which ``stopped(generated tokens)`` first held. ``None`` when the model's
    forward does not hand back a dynamic cache (call ``generate`` instead). Call under ``torch.inference_mode``.

    With ``lockstep`` (every process calls ``decode`` together on a sharded model, see :mod:`.lockstep`), a process
    whose rows are all finished keeps running forward passes, their output unused, until every process is."""
    from transformers import DynamicCache

    model = decoding_model(model)
    parameters = inspect.signature(model.forward).parameters
    argument = cache_argument(model, parameters)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    output = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True, **extra
    )
    cache = getattr(output, argument, None)
    if not isinstance(cache, DynamicCache):
        return None
    buffers = PreallocatedKV.attach(cache, input_ids.shape[1] + settings.max_new_tokens, num_samples)
    if buffers is None and num_samples > 1:
        cache.batch_repeat_interleave(num_samples)
    rows = _Rows(
        keep=attention_mask.bool().repeat_interleave(num_samples, dim=0),
        next_position=position_ids[:, -1].repeat_interleave(num_samples, dim=0) + 1,
    )
    try:
        logits = output.logits[:, -1, :].float().repeat_interleave(num_samples, dim=0)
        return _sample_steps(model, argument, cache, buffers, logits, rows, settings, stopped, lockstep)
    finally:
        if buffers is not None:
            buffers.release()


@dataclasses.dataclass
class _Rows:
    """The rows still decoding: which prompt positions each attends to, where its next token goes and which
    output row it fills."""

    keep: torch.Tensor
    next_position: torch.Tensor
    output_rows: Optional[torch.Tensor] = None

    def __post_init__(self):
        if self.output_rows is None:
            self.output_rows = torch.arange(self.keep.shape[0], device=self.keep.device)
        self.padded = not bool(self.keep.all())

    def select(self, alive: torch.Tensor) -> None:
        self.keep, self.next_position = self.keep[alive], self.next_position[alive]
        self.output_rows = self.output_rows[alive]
        self.padded = self.padded and not bool(self.keep.all())

    def step_mask(self, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """The attention mask of a decoding step: none where no row has padding, so that the model builds its
        own (none at all under SDPA, whose grouped-query kernel then reads the cache without repeating it)."""
        return _additive_mask(self.keep, dtype) if self.padded else None

    def advance(self) -> torch.Tensor:
        """Extend every row by the token it just drew; its attention mask for the step."""
        self.keep = torch.cat([self.keep, self.keep.new_ones((self.keep.shape[0], 1))], dim=-1)
        position = self.next_position[:, None]
        self.next_position = self.next_position + 1
        return position


def _sample_steps(
    model, argument, cache, buffers, logits, rows: _Rows, settings, stopped, lockstep=False
) -> torch.Tensor:
    """Draw ``max_new_tokens`` tokens per row from ``logits`` on, one forward pass per step (in lockstep: until
    every process is finished, this one's last rows running on, unrecorded, once they are)."""
    generated = torch.full(
        (logits.shape[0], settings.max_new_tokens), settings.pad_token_id, dtype=torch.long, device=logits.device
    )
    mask_dtype = next(model.parameters()).dtype
    eos_ids = torch.tensor(settings.eos_token_ids, dtype=torch.long, device=logits.device)
    all_done_here = False
    for step in range(settings.max_new_tokens):
        if step < settings.min_new_tokens:
            logits[:, eos_ids[eos_ids >= 0]] = float("-inf")
        # every row draws its number each step, finished or not, so a row's sample never depends on others'
        uniform = torch.rand(generated.shape[0], device=logits.device) if settings.do_sample else None
        tokens = draw_tokens(warp_logits(logits, settings), None if uniform is None else uniform[rows.output_rows])
        if not all_done_here:
            generated[rows.output_rows, step] = tokens
            finished = torch.isin(tokens, eos_ids)
            if stopped is not None:
                so_far = generated[rows.output_rows, : step + 1].tolist()  # one transfer for all rows
                finished |= torch.tensor([stopped(row) for row in so_far], device=finished.device)
            all_done_here = bool(finished.all())
        if step + 1 == settings.max_new_tokens:
            break
        if all_processes_finished(all_done_here, logits.device) if lockstep else all_done_here:
            break
        if not all_done_here and bool(finished.any()):
            alive = (~finished).nonzero().squeeze(-1)
            buffers.select_rows(alive) if buffers is not None else cache.batch_select_indices(alive)
            rows.select(alive)
            tokens = tokens[alive]
        position = rows.advance()
        output = model(
            input_ids=tokens[:, None],
            attention_mask=rows.step_mask(mask_dtype),
            position_ids=position,
            use_cache=True,
            **{argument: cache},
        )
        cache = getattr(output, argument)
        logits = output.logits[:, -1, :].float()
    return generated
