"""Validated samples -> length-grouped micro-batches, padded or packed (padding-free).

Every function here is pure: it reads its arguments and returns new objects, so a rejected call changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional, Union

import torch

from iterframe.engine.step_inputs import IGNORE_INDEX, TokenizedSample, samples_from_tensors

__all__ = [
    "IGNORE_INDEX",
    "MicroBatch",
    "build_micro_batches",
    "collate_features",
    "count_loss_tokens",
    "pack_samples",
    "packed_targets",
    "pad_samples",
    "without_loss",
]


@dataclasses.dataclass
class MicroBatch:
    """A padded micro-batch ready for the model, with the number of label tokens that carry loss."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    num_loss_tokens: int
    num_input_tokens: int
    sample_indices: list[int]
    #: Padding-free micro-batches only: positions restarting at 0 per sample, and each sample's (start, end).
    position_ids: Optional[torch.Tensor] = None
    segments: Optional[list[tuple[int, int]]] = None

    def to(self, device) -> MicroBatch:
        return dataclasses.replace(
            self,
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            labels=self.labels.to(device),
            position_ids=None if self.position_ids is None else self.position_ids.to(device),
        )


# --- padding, packing, grouping ---------------------------------------------------------------------------


def count_loss_tokens(labels: torch.Tensor, is_encoder_decoder: bool) -> int:
    """Tokens that carry loss: for causal LMs the labels after the one-token shift, else all non-ignored ones."""
    if not is_encoder_decoder:
        labels = labels[..., 1:]
    return int((labels != IGNORE_INDEX).sum())


def _pad_stack(sequences: list[torch.Tensor], value: int, length: int) -> torch.Tensor:
    out = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=value)
    return torch.nn.functional.pad(out, (0, length - out.shape[1]), value=value) if out.shape[1] < length else out


def _round_up(length: int, multiple: Optional[int]) -> int:
    if not multiple:
        return length
    return -(-length // multiple) * multiple


def pad_samples(
    samples: list[TokenizedSample],
    pad_token_id: int,
    *,
    is_encoder_decoder: bool,
    pad_to_multiple_of: Optional[int] = None,
    sample_indices: Optional[list[int]] = None,
) -> MicroBatch:
    """Right-pad samples to the longest one; padding gets attention 0 and label -100."""
    input_length = _round_up(max(len(s.input_ids) for s in samples), pad_to_multiple_of)
    input_ids = _pad_stack([s.input_ids for s in samples], pad_token_id, input_length)
    lengths = torch.tensor([len(s.input_ids) for s in samples])
    attention_mask = (torch.arange(input_length) < lengths[:, None]).long()
    label_length = _round_up(max(len(s.labels) for s in samples), pad_to_multiple_of)
    labels = _pad_stack(
        [s.labels for s in samples], IGNORE_INDEX, label_length if is_encoder_decoder else input_length
    )
    return MicroBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        num_loss_tokens=count_loss_tokens(labels, is_encoder_decoder),
        num_input_tokens=int(attention_mask.sum()),
        sample_indices=list(sample_indices) if sample_indices is not None else list(range(len(samples))),
    )


def pack_samples(samples: list[TokenizedSample], sample_indices: Optional[list[int]] = None) -> MicroBatch:
    """Lay causal-LM samples end to end in one row (no padding), positions restarting at 0 for each sample.
    ``segments`` holds each sample's ``(start, end)`` in the row; no target crosses from one into the next
    (see :func:`packed_targets`)."""
    input_ids = torch.cat([sample.input_ids for sample in samples])[None]
    labels = torch.cat([sample.labels for sample in samples])[None]
    lengths = torch.tensor([len(sample.input_ids) for sample in samples])
    ends = lengths.cumsum(0)
    starts = ends - lengths
    position_ids = (torch.arange(input_ids.shape[1]) - torch.repeat_interleave(starts, lengths))[None]
    first_positions = torch.zeros(input_ids.shape[1], dtype=torch.bool)
    first_positions[starts] = True  # a sample's first label is no target (causal shift)
    return MicroBatch(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        labels=labels,
        num_loss_tokens=int(((labels[0] != IGNORE_INDEX) & ~first_positions).sum()),
        num_input_tokens=input_ids.shape[1],
        sample_indices=list(sample_indices) if sample_indices is not None else list(range(len(samples))),
        position_ids=position_ids,
        segments=list(zip(starts.tolist(), ends.tolist())),
    )


def packed_targets(batch: MicroBatch) -> torch.Tensor:
    """The next-token targets [tokens] of a packed micro-batch: each position's next label within its own
    sample, and -100 at each sample's last position."""
    targets = torch.nn.functional.pad(batch.labels[0, 1:], (0, 1), value=IGNORE_INDEX)
    targets[[end - 1 for _, end in batch.segments]] = IGNORE_INDEX
    return targets


def without_loss(batch: MicroBatch) -> MicroBatch:
    """A copy of ``batch`` whose labels carry no loss and that holds no sample (padding for DDP ranks)."""
    return dataclasses.replace(
        batch,
        labels=torch.full_like(batch.labels, IGNORE_INDEX),
        num_loss_tokens=0,
        num_input_tokens=0,
        sample_indices=[],
    )


def build_micro_batches(
    samples: list[TokenizedSample],
    batch_size: int,
    pad_token_id: int,
    *,
    is_encoder_decoder: bool,
    pad_to_multiple_of: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    packed: Union[bool, Callable[[list[TokenizedSample]], bool]] = False,
    group_by_length: bool = False,
) -> list[MicroBatch]:
    """Put samples into micro-batches of ``batch_size``, each padded to its own longest (or, with ``packed``,
    laid end to end without padding: :func:`pack_samples`). ``packed`` may also be a function of a
    micro-batch's samples that says whether that micro-batch is packed.

    Every sample lands in exactly one micro-batch. The samples go into micro-batches in an order drawn with
    ``generator`` (the given order without one). With ``group_by_length`` samples of similar length share a
    micro-batch instead, and the micro-batches' order is shuffled with ``generator`` so that optimizer updates
    do not follow sequence length.
    """
    if group_by_length:
        order = sorted(range(len(samples)), key=lambda index: len(samples[index]), reverse=True)
    elif generator is not None:
        order = torch.randperm(len(samples), generator=generator).tolist()
    else:
        order = list(range(len(samples)))
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if group_by_length and generator is not None and len(chunks) > 1:
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]
    micro_batches = []
    for chunk in chunks:
        chunk_samples = [samples[i] for i in chunk]
        if packed(chunk_samples) if callable(packed) else packed:
            micro_batches.append(pack_samples(chunk_samples, chunk))
        else:
            micro_batches.append(
                pad_samples(
                    chunk_samples,
                    pad_token_id,
                    is_encoder_decoder=is_encoder_decoder,
                    pad_to_multiple_of=pad_to_multiple_of,
                    sample_indices=chunk,
                )
            )
    return micro_batches


def collate_features(features: list[dict[str, Any]], pad_token_id: int, *, is_encoder_decoder: bool):
    """A ``data_collator`` for evaluation datasets of ``input_ids`` [+ ``attention_mask``] [+ ``labels``]."""
    samples = samples_from_tensors(
        [f["input_ids"] for f in features],
        [f["attention_mask"] for f in features] if all("attention_mask" in f for f in features) else None,
        [f["labels"] for f in features] if all("labels" in f for f in features) else None,
        is_encoder_decoder=is_encoder_decoder,
        vocab_size=None,
    )
    batch = pad_samples(samples, pad_token_id, is_encoder_decoder=is_encoder_decoder)
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels}
