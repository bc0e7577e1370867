"""``step()`` inputs -> validated, unpadded, truncated samples.

Every function here is pure: it reads its arguments and returns new objects, so a rejected call changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional

import torch

__all__ = [
    "IGNORE_INDEX",
    "TokenizedSample",
    "as_sequences",
    "as_texts",
    "samples_from_tensors",
    "samples_from_texts",
    "truncate",
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
    converted = _int_lists_as_tensors(rows)
    if converted is not None:
        return converted
    return [_as_1d_long(row, name, index) for index, row in enumerate(rows)]


def _int_lists_as_tensors(rows: list) -> Optional[list[torch.Tensor]]:
    """Rows that are all lists or tuples of plain ``int`` s, as 1-D ``LongTensor`` s made in one conversion;
    ``None`` for any other rows, which :func:`_as_1d_long` then validates one by one (naming what is wrong)."""
    if not all(type(row) in (list, tuple) for row in rows):
        return None
    values = [value for row in rows for value in row]
    if not all(type(value) is int for value in values):  # not isinstance: bool is an int subclass
        return None
    return list(torch.tensor(values, dtype=torch.long).split([len(row) for row in rows]))


def _check_lengths_match(name_a: str, a: Sequence, name_b: str, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} samples but {name_b} has {len(b)}; pass one entry per sample.")


def _valid_ids(values: torch.Tensor, vocab_size: Optional[int], allow_ignore: bool) -> torch.Tensor:
    valid = values >= 0
    if allow_ignore:
        valid |= values == IGNORE_INDEX
    if vocab_size is not None:
        valid &= values < vocab_size
    return valid


def _check_token_range(name: str, sequences: list[torch.Tensor], vocab_size: Optional[int], allow_ignore: bool):
    if bool(_valid_ids(torch.cat(sequences), vocab_size, allow_ignore).all()):
        return  # one check over every sample; the loop below finds the first bad one
    for index, sequence in enumerate(sequences):
        if sequence.numel() == 0:
            continue
        valid = _valid_ids(sequence, vocab_size, allow_ignore)
        if not bool(valid.all()):
            bad = int(sequence[~valid][0])
            limit = f"[0, {vocab_size})" if vocab_size is not None else "non-negative"
            extra = f" or {IGNORE_INDEX}" if allow_ignore else ""
            raise ValueError(f"{name}[{index}] holds id {bad}, outside the model's vocabulary {limit}{extra}.")


def _all_real(masks: list[torch.Tensor], ids: list[torch.Tensor]) -> bool:
    """Whether every mask aligns with its sample's ids and holds only 1."""
    if any(len(mask) != len(sample_ids) for mask, sample_ids in zip(masks, ids)):
        return False
    return bool(torch.cat(masks).eq(1).all())


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

    # all positions real (the common case): no sample needs its padding removed, nor its mask checked alone
    masks_all_real = masks is not None and _all_real(masks, ids)
    samples = []
    for index, sample_ids in enumerate(ids):
        keep = None
        if masks is not None and not masks_all_real:
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
            sample_labels = targets[index] if targets is not None else sample_ids
            sample_labels = sample_labels if keep is None else sample_labels[keep]
        sample_ids = sample_ids if keep is None else sample_ids[keep]
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


# --- truncation --------------------------------------------------------------------------


def truncate(samples: list[TokenizedSample], max_length: Optional[int], mode: str) -> list[TokenizedSample]:
    """Cut every sequence to ``max_length`` tokens: ``keep_end`` keeps the last, ``keep_start`` the first."""
    if max_length is None:
        return samples

    def cut(tensor: torch.Tensor) -> torch.Tensor:
        if len(tensor) <= max_length:
            return tensor
        return tensor[-max_length:] if mode == "keep_end" else tensor[:max_length]

    return [TokenizedSample(cut(sample.input_ids), cut(sample.labels)) for sample in samples]
