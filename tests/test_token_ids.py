"""Which ids end a completion, and the fingerprint that names a tokenizer and chat template."""

from __future__ import annotations

import types

from iterframe.generation.token_ids import eos_token_ids, ids_spelling, tokenizer_fingerprint
from iterframe.testing import build_char_tokenizer

ALPHABET = "abc"


def model_with_eos(eos):
    return types.SimpleNamespace(generation_config=types.SimpleNamespace(eos_token_id=eos))


def test_eos_ids_are_the_generation_configs_then_the_tokenizers_without_repeats():
    tokenizer = build_char_tokenizer(ALPHABET)
    eos = tokenizer.eos_token_id
    assert eos_token_ids(model_with_eos([7, eos, 9]), tokenizer) == (7, eos, 9)
    assert eos_token_ids(model_with_eos(7), tokenizer) == (7, eos)
    assert eos_token_ids(model_with_eos(None), tokenizer) == (eos,)
    assert eos_token_ids(types.SimpleNamespace(), tokenizer) == (eos,)  # no generation config at all


def test_the_fingerprint_changes_with_the_vocabulary_and_the_chat_template_only():
    first, same = build_char_tokenizer(ALPHABET), build_char_tokenizer(ALPHABET)
    assert tokenizer_fingerprint(first) == tokenizer_fingerprint(same)
    assert len(tokenizer_fingerprint(first)) == 64
    assert tokenizer_fingerprint(build_char_tokenizer(ALPHABET + "d")) != tokenizer_fingerprint(first)
    templated = build_char_tokenizer(ALPHABET, chat_template="{{ messages[0]['content'] }}")
    assert tokenizer_fingerprint(templated) != tokenizer_fingerprint(first)
    first.add_tokens(["abc"])  # a grown vocabulary is read again, not taken from the cache
    assert tokenizer_fingerprint(first) != tokenizer_fingerprint(same)
    assert tokenizer_fingerprint(object()) is None


def test_the_ids_of_a_text_cut_before_a_stop_string_are_the_sampled_ones_that_spell_it(zoo_tokenizer):
    tokenizer = zoo_tokenizer("qwen2.5-instruct")
    sampled = tokenizer("x = 5; y = 6", add_special_tokens=False)["input_ids"]
    kept = ids_spelling(tokenizer, sampled, "x =")  # cut before the stop string " 5"
    assert kept == sampled[: len(kept)] and tokenizer.decode(kept) == "x ="
    assert ids_spelling(tokenizer, sampled, "x = 5; y = 6") == sampled
    spanning = tokenizer("The answer is 4.\n\nQuestion:", add_special_tokens=False)["input_ids"]
    assert ids_spelling(tokenizer, spanning, "The answer is 4.\n") is None  # one token spells ".\n\n"
