"""Which token ids end a completion, which ids spell a completion's text, and which tokenizer a sample's token ids
belong to."""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Iterable
from typing import Any, Optional

__all__ = ["eos_token_ids", "ids_spelling", "tokenizer_fingerprint"]


def _as_ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(item) for item in value if item is not None]


def eos_token_ids(model, tokenizer) -> tuple[int, ...]:
    """Every id that ends a completion: the eos ids of the model's generation config (``generation_config.json``
    often lists several, such as an end-of-turn token the tokenizer does not call eos), then the tokenizer's eos.
    ``generate()`` stops at the former; the sample tokenizers append the latter, so the model learns to emit it."""
    generation_config = getattr(model, "generation_config", None)
    ids: Iterable[int] = [
        *_as_ids(getattr(generation_config, "eos_token_id", None)),
        *_as_ids(getattr(tokenizer, "eos_token_id", None)),
    ]
    return tuple(dict.fromkeys(ids))


def ids_spelling(tokenizer, token_ids: list[int], text: str) -> Optional[list[int]]:
    """The longest prefix of ``token_ids`` that decodes (without special tokens) to exactly ``text``, or ``None``
    when none does: the ids of a completion cut before a stop string, without the stop string's tokens (``None``
    when one token spells both sides of the cut)."""
    for end in range(len(token_ids), -1, -1):
        decoded = tokenizer.decode(token_ids[:end], skip_special_tokens=True)
        if decoded == text:
            return list(token_ids[:end])
        if len(decoded) < len(text):
            return None
    return None


#: tokenizer -> (its size, the digest of its definition): serialising a 150k vocabulary takes a while.
_DEFINITION_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _definition_digest(tokenizer) -> str:
    """SHA-256 of the tokenizer's full definition (vocabulary, merges, normalisation, added tokens)."""
    cached = _DEFINITION_DIGESTS.get(tokenizer)
    if cached is not None and cached[0] == len(tokenizer):
        return cached[1]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        text = backend.to_str()
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    _DEFINITION_DIGESTS[tokenizer] = (len(tokenizer), digest)
    return digest


def tokenizer_fingerprint(tokenizer) -> Optional[str]:
    """A SHA-256 (hex) of what turns text into token ids and chat messages into text: the tokenizer's
    definition, its special tokens and its chat template. Two tokenizers with the same fingerprint give the same
    ids for the same prompt and completion. ``None`` for an object that is not a Hugging Face tokenizer."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    if not hasattr(tokenizer, "get_vocab"):
        return None
    digest = hashlib.sha256()
    for part in (
        _definition_digest(tokenizer),
        json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str),
        json.dumps(getattr(tokenizer, "chat_template", None), sort_keys=True, default=str),
    ):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()
