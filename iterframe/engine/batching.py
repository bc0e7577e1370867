"""``step()`` inputs -> validated, truncated, length-grouped micro-batches.

Every function here is pure: it reads its arguments and returns new objects, so a rejected call changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import torch

__all__ = [
    "IGNORE_INDEX",
    "MicroBatch",
    "TokenizedSample",
    "as_sequences",
    "as_texts",
    "build_micro_batches",
    "count_loss_tokens",
    "pack_samples",
    "packed_targets",
    "pad_samples",
    "samples_from_tensors",
    "samples_from_texts",
    "truncate",
    "without_loss",
]

#: Label value that carries no loss (the convention of ``torch.nn.CrossEntropyLoss`` and transformers).
IGNORE_INDEX = -100


@dataclasses.dataclass
class TokenizedSample:
    """One unpadded training sample: ``input_ids`` and ``labels`` as 1-D ``LongTensor``.

    For causal LMs both have the same length; for encoder-decoders ``labels`` are the decoder targets.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return max(len(self.input_ids), len(self.labels))


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


# --- validation of user inputs ------------------------------------------------------------------------------


def _is_sequence_container(value) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "Column"


def as_texts(value, name: str) -> list[str]:
    """Validate a list of strings (list, tuple or a ``datasets`` column) and return it as a list."""
    if isinstance(value, str):
        raise TypeError(
            f"{name} must be a list of strings, not a single string; wrap it: {name}=[{value[:30]!r}]."
        )
    if not _is_sequence_container(value):
        raise TypeError(f"{name} must be a list of strings, got {type(value).__name__}.")
    texts = list(value)
    if not texts:
        raise ValueError(f"{name} is empty: pass at least one string.")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{index}] must be a string, got {type(text).__name__}: {text!r:.60}.")
    return texts


def _as_1d_long(item, name: str, index: int) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        if item.dim() != 1:
            raise ValueError(
                f"{name}[{index}] must be a 1-D sequence of token ids, got shape {tuple(item.shape)}."
            )
        if item.dtype.is_floating_point or item.dtype.is_complex:
            raise TypeError(f"{name}[{index}] must hold integers, got dtype {item.dtype}.")
        return item.detach().to("cpu", torch.long)
    if isinstance(item, (str, bytes)) or not _is_sequence_container(item):
        raise TypeError(
            f"{name}[{index}] must be a 1-D tensor or a list of ints, got {type(item).__name__}. "
            "To train on text, pass texts=[...] instead."
        )
    values = list(item)
    for position, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.dtype.is_floating_point:
                continue
            raise TypeError(
                f"{name}[{index}][{position}] must be an int, got {type(value).__name__}: {value!r:.40}."
            )
    return torch.tensor(values, dtype=torch.long)


def as_sequences(value, name: str) -> list[torch.Tensor]:
    """Validate per-sample integer sequences and return them as 1-D ``LongTensor`` s.

    Accepts a 2-D tensor (one row per sample) or a list/tuple/``datasets`` column of 1-D tensors or int lists
    (plain lists are converted to tensors).
    """
    if isinstance(value, torch.Tensor):
        if value.dim() != 2:
            raise ValueError(
                f"{name} must be a 2-D tensor [batch, length] or a list of 1-D sequences, got shape "
                f"{tuple(value.shape)}."
            )
        rows = list(value)
    elif isinstance(value, str) or not _is_sequence_container(value):
        raise TypeError(
            f"{name} must be a list of token-id sequences or a 2-D tensor, got {type(value).__name__}."
        )
    else:
        rows = list(value)
    if not rows:
        raise ValueError(f"{name} is empty: pass at least one sequence.")
    return [_as_1d_long(row, name, index) for index, row in enumerate(rows)]


def _check_lengths_match(name_a: str, a: Sequence, name_b: str, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} samples but {name_b} has {len(b)}; pass one entry per sample.")


def _check_token_range(name: str, sequences: list[torch.Tensor], vocab_size: Optional[int], allow_ignore: bool):
    for index, sequence in enumerate(sequences):
        if sequence.numel() == 0:
            continue
        valid = sequence >= 0
        if allow_ignore:
            valid |= sequence == IGNORE_INDEX
        if vocab_size is not None:
            valid &= sequence < vocab_size
        if not bool(valid.all()):
            bad = int(sequence[~valid][0])
            limit = f"[0, {vocab_size})" if vocab_size is not None else "non-negative"
            extra = f" or {IGNORE_INDEX}" if allow_ignore else ""
            raise ValueError(f"{name}[{index}] holds id {bad}, outside the model's vocabulary {limit}{extra}.")


def samples_from_tensors(
    input_ids,
    attention_mask=None,
    labels=None,
    *,
    is_encoder_decoder: bool,
    vocab_size: Optional[int],
) -> list[TokenizedSample]:
    """Validate tensor-mode inputs and return unpadded samples.

    Positions where ``attention_mask`` is 0 are padding: they are removed (so padding never carries loss and
    truncation acts on real tokens). Without ``labels``, a causal LM's labels are its input ids.
    """
    ids = as_sequences(input_ids, "input_ids")
    masks = as_sequences(attention_mask, "attention_mask") if attention_mask is not None else None
    targets = as_sequences(labels, "labels") if labels is not None else None
    if masks is not None:
        _check_lengths_match("input_ids", ids, "attention_mask", masks)
    if targets is not None:
        _check_lengths_match("input_ids", ids, "labels", targets)
    _check_token_range("input_ids", ids, vocab_size, allow_ignore=False)
    if targets is not None:
        _check_token_range("labels", targets, vocab_size, allow_ignore=True)
    if is_encoder_decoder and targets is None:
        raise ValueError(
            "An encoder-decoder model needs targets: pass labels=[...] (decoder token ids) or texts with "
            "texts_labels."
        )

    samples = []
    for index, sample_ids in enumerate(ids):
        keep = torch.ones_like(sample_ids, dtype=torch.bool)
        if masks is not None:
            mask = masks[index]
            if len(mask) != len(sample_ids):
                raise ValueError(
                    f"attention_mask[{index}] has {len(mask)} positions but input_ids[{index}] has "
                    f"{len(sample_ids)}; they must align token by token."
                )
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError(f"attention_mask[{index}] must hold only 0 and 1.")
            keep = mask.bool()
        if is_encoder_decoder:
            sample_labels = targets[index]
        else:
            if targets is not None and len(targets[index]) != len(sample_ids):
                raise ValueError(
                    f"labels[{index}] has {len(targets[index])} positions but input_ids[{index}] has "
                    f"{len(sample_ids)}; a causal LM's labels align with its input ids (use -100 for no loss)."
                )
            sample_labels = (targets[index] if targets is not None else sample_ids)[keep]
        sample_ids = sample_ids[keep]
        if sample_ids.numel() == 0:
            raise ValueError(f"input_ids[{index}] has no real tokens (empty, or attention_mask is all 0).")
        samples.append(TokenizedSample(sample_ids, sample_labels.clone()))
    return samples


def samples_from_texts(tokenizer, texts, texts_labels=None, *, is_encoder_decoder: bool) -> list[TokenizedSample]:
    """Validate and tokenize text-mode inputs.

    For encoder-decoders ``texts_labels`` are tokenized as decoder targets. For causal LMs they may only repeat
    ``texts`` (the whole text is the target); anything else raises, since a causal LM has no separate target.
    """
    texts = as_texts(texts, "texts")
    targets = as_texts(texts_labels, "texts_labels") if texts_labels is not None else None
    if targets is not None:
        _check_lengths_match("texts", texts, "texts_labels", targets)
    if is_encoder_decoder:
        if targets is None:
            raise ValueError("An encoder-decoder model needs targets: pass texts_labels=[...] with texts.")
        inputs = tokenizer(texts, add_special_tokens=True)["input_ids"]
        label_ids = tokenizer(text_target=targets, add_special_tokens=True)["input_ids"]
        return [
            TokenizedSample(torch.tensor(ids, dtype=torch.long), torch.tensor(lab, dtype=torch.long))
            for ids, lab in zip(inputs, label_ids)
        ]
    if targets is not None:
        for index, (text, target) in enumerate(zip(texts, targets)):
            if text != target:
                raise ValueError(
                    f"texts_labels[{index}] differs from texts[{index}]. A causal LM is trained on its own text, "
                    "so texts_labels can only repeat texts. To train only on a completion, tokenize prompt + "
                    "completion yourself and pass input_ids with labels set to -100 on the prompt tokens "
                    "(or use the 'completion-only' tokenizer component)."
                )
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    samples = []
    for index, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"texts[{index}] tokenizes to no tokens; pass non-empty text.")
        tensor = torch.tensor(ids, dtype=torch.long)
        samples.append(TokenizedSample(tensor, tensor.clone()))
    return samples


# --- truncation, padding, grouping --------------------------------------------------------------------------


def truncate(samples: list[TokenizedSample], max_length: Optional[int], mode: str) -> list[TokenizedSample]:
    """Cut every sequence to ``max_length`` tokens: ``keep_end`` keeps the last, ``keep_start`` the first."""
    if max_length is None:
        return samples

    def cut(tensor: torch.Tensor) -> torch.Tensor:
        if len(tensor) <= max_length:
            return tensor
        return tensor[-max_length:] if mode == "keep_end" else tensor[:max_length]

    return [TokenizedSample(cut(sample.input_ids), cut(sample.labels)) for sample in samples]


def count_loss_tokens(labels: torch.Tensor, is_encoder_decoder: bool) -> int:
    """Tokens that carry loss: for causal LMs the labels after the one-token shift, else all non-ignored ones."""
    if not is_encoder_decoder:
        labels = labels[..., 1:]
    return int((labels != IGNORE_INDEX).sum())


def _pad_stack(sequences: list[torch.Tensor], value: int, length: int) -> torch.Tensor:
    out = torch.full((len(sequences), length), value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence
    return out


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
    attention_mask = _pad_stack([torch.ones_like(s.input_ids) for s in samples], 0, input_length)
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
    position_ids = torch.cat([torch.arange(len(sample.input_ids)) for sample in samples])[None]
    ends = torch.tensor([len(sample.input_ids) for sample in samples]).cumsum(0).tolist()
    return MicroBatch(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        labels=torch.cat([sample.labels for sample in samples])[None],
        num_loss_tokens=sum(count_loss_tokens(sample.labels[None], False) for sample in samples),
        num_input_tokens=input_ids.shape[1],
        sample_indices=list(sample_indices) if sample_indices is not None else list(range(len(samples))),
        position_ids=position_ids,
        segments=list(zip([0, *ends[:-1]], ends)),
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
    packed: bool = False,
) -> list[MicroBatch]:
    """Group samples of similar length into micro-batches of ``batch_size``, each padded to its own longest
    (or, with ``packed``, laid end to end without padding: :func:`pack_samples`).

    Every sample lands in exactly one micro-batch. The micro-batches' order is shuffled with ``generator``
    (when given) so that optimizer updates do not follow sequence length.
    """
    order = sorted(range(len(samples)), key=lambda index: len(samples[index]), reverse=True)
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if generator is not None and len(chunks) > 1:
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]
    if packed:
        return [pack_samples([samples[i] for i in chunk], chunk) for chunk in chunks]
    return [
        pad_samples(
            [samples[i] for i in chunk],
            pad_token_id,
            is_encoder_decoder=is_encoder_decoder,
            pad_to_multiple_of=pad_to_multiple_of,
            sample_indices=chunk,
        )
        for chunk in chunks
    ]


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
