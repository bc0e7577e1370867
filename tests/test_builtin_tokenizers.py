"""Built-in sample tokenizers on a character-level tokenizer (one token per character, bos prepended), and on a
model-zoo tokenizer where real BPE matters."""

from __future__ import annotations

import types

import pytest

from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext, Sample
from iterframe.testing import build_char_tokenizer

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 +=?:.<>/\n"
CHAT_TEMPLATE = (
    "{% for message in messages %}<{{ message['role'] }}>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
CAUSAL_LM = types.SimpleNamespace(config=types.SimpleNamespace(is_encoder_decoder=False))
SEQ2SEQ_LM = types.SimpleNamespace(config=types.SimpleNamespace(is_encoder_decoder=True))


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer(ALPHABET, chat_template=CHAT_TEMPLATE)


def ids(tokenizer, text):
    return [tokenizer.convert_tokens_to_ids(char) for char in text]


def make_tokenizer(name, tokenizer, model=CAUSAL_LM, **options):
    component = create_component("tokenizer", name, options)
    component.setup(RunContext(trainer=types.SimpleNamespace(model=model), tokenizer=tokenizer))
    return component


def sample(prompt, completion, prompt_id=0):
    return Sample(iteration=0, prompt_id=prompt_id, prompt=prompt, completion=completion, reward=1.0, kept=True)


def test_completion_only_masks_the_prompt_and_appends_eos(plugin_manager, tokenizer):
    batch = make_tokenizer("completion-only", tokenizer).tokenize([sample("12+7=", "19"), sample("a", "bcd")])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert batch["input_ids"] == [[bos, *ids(tokenizer, "12+7=19"), eos], [bos, *ids(tokenizer, "abcd"), eos]]
    assert batch["labels"] == [
        [-100] * 6 + [*ids(tokenizer, "19"), eos],
        [-100] * 2 + [*ids(tokenizer, "bcd"), eos],
    ]
    assert batch["attention_mask"] == [[1] * 9, [1] * 6]


def test_completion_only_without_eos(plugin_manager, tokenizer):
    batch = make_tokenizer("completion-only", tokenizer, add_eos=False).tokenize([sample("ab", "cd")])
    assert batch["input_ids"] == [[tokenizer.bos_token_id, *ids(tokenizer, "abcd")]]
    assert batch["labels"] == [[-100, -100, -100, *ids(tokenizer, "cd")]]


def test_completion_only_renders_chat_prompts_with_the_template(plugin_manager, tokenizer):
    messages = [{"role": "user", "content": "hi"}]
    batch = make_tokenizer("completion-only", tokenizer).tokenize([sample(messages, "yo")])
    prompt = ids(tokenizer, "<user>hi\n<assistant>")  # the template brings its own start; no bos added
    assert batch["input_ids"] == [[*prompt, *ids(tokenizer, "yo"), tokenizer.eos_token_id]]
    assert batch["labels"] == [[-100] * len(prompt) + [*ids(tokenizer, "yo"), tokenizer.eos_token_id]]


def test_completion_only_for_encoder_decoders_makes_the_completion_the_target(plugin_manager, tokenizer):
    batch = make_tokenizer("completion-only", tokenizer, model=SEQ2SEQ_LM).tokenize([sample("ab", "cd")])
    assert batch["input_ids"] == [[tokenizer.bos_token_id, *ids(tokenizer, "ab")]]
    assert batch["labels"] == [[*ids(tokenizer, "cd"), tokenizer.eos_token_id]]
    assert batch["attention_mask"] == [[1, 1, 1]]


def test_full_text_trains_on_every_token(plugin_manager, tokenizer):
    batch = make_tokenizer("full-text", tokenizer).tokenize([sample("ab", "cd")])
    expected = [tokenizer.bos_token_id, *ids(tokenizer, "abcd"), tokenizer.eos_token_id]
    assert batch["input_ids"] == [expected]
    assert batch["labels"] == [expected]


def test_full_text_refuses_encoder_decoders(plugin_manager, tokenizer):
    with pytest.raises(ValueError, match="'full-text' tokenizer is for causal LMs.*Use the 'completion-only'"):
        make_tokenizer("full-text", tokenizer, model=SEQ2SEQ_LM)


def test_chat_trains_on_the_assistant_turn_only(plugin_manager, tokenizer):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    batch = make_tokenizer("chat", tokenizer).tokenize([sample(messages, "yo")])
    prompt = ids(tokenizer, "<system>be brief\n<user>hi\n<assistant>")
    reply = ids(tokenizer, "yo\n")  # the template's end of turn is part of the reply
    assert batch["input_ids"] == [prompt + reply]
    assert batch["labels"] == [[-100] * len(prompt) + reply]


def test_chat_refuses_text_prompts_the_generator_sampled_without_the_template(plugin_manager, tokenizer):
    chat = make_tokenizer("chat", tokenizer)
    with pytest.raises(ValueError, match="prompt 5 is text.*completion-only.*chat messages"):
        chat.tokenize([sample([{"role": "user", "content": "hi"}], "yo"), sample("hi", "yo", prompt_id=5)])
    with pytest.raises(ValueError, match="prompt 5 is text.*completion-only.*chat messages"):
        chat.check_prompts([[{"role": "user", "content": "hi"}], "hi"], prompt_ids=[0, 5])
    chat.check_prompts([[{"role": "user", "content": "hi"}]], prompt_ids=[0])


def test_chat_needs_a_chat_template(plugin_manager):
    with pytest.raises(ValueError, match="'chat' sample tokenizer needs a chat template"):
        make_tokenizer("chat", build_char_tokenizer(ALPHABET))


def test_chat_template_whose_prompt_is_not_a_prefix_is_an_error(plugin_manager):
    odd_template = (
        "{% for message in messages %}{{ message['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}>{% endif %}"
    )
    odd = build_char_tokenizer(ALPHABET, chat_template=odd_template)
    with pytest.raises(
        ValueError, match="prompt 3: the chat template renders the conversation with a different start"
    ):
        make_tokenizer("chat", odd).tokenize([sample([{"role": "user", "content": "hi"}], "yo", prompt_id=3)])


def test_tokenizer_output_trains_with_step(plugin_manager, tiny_llama_path, tmp_path):
    from iterframe import IterativeSFTConfig, IterativeSFTTrainer

    args = IterativeSFTConfig(output_dir=str(tmp_path), report_to=[], per_device_train_batch_size=2)
    trainer = IterativeSFTTrainer(tiny_llama_path, args=args)
    component = create_component("tokenizer", "completion-only")
    component.setup(RunContext(trainer=trainer, tokenizer=trainer.processing_class))
    batch = component.tokenize([sample("Question: what is 12 + 7? Answer:", " 19"), sample("The quick", " fox")])
    stats = trainer.step(**batch)
    completion_tokens = sum(sum(label != -100 for label in labels) for labels in batch["labels"])
    assert stats["num_tokens"] == completion_tokens
    assert stats["num_samples"] == 2


# --- samples with the token ids the generator sampled ----------------------------------------------------------


def sampled(tokenizer, prompt, completion, token_ids, prompt_token_ids=None, prompt_id=0):
    """A sample whose generator recorded its ids (``prompt_token_ids`` default: the prompt's own encoding)."""
    if prompt_token_ids is None:
        from iterframe.generation.prompt_encoding import encode_prompt

        prompt_token_ids = encode_prompt(tokenizer, prompt)
    item = sample(prompt, completion, prompt_id)
    item.prompt_token_ids, item.completion_token_ids = list(prompt_token_ids), list(token_ids)
    return item


def test_completion_only_trains_on_the_sampled_ids_not_on_the_text_encoded_again(plugin_manager, tokenizer):
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    token_ids = [ids(tokenizer, "a")[0], pad, ids(tokenizer, "b")[0]]  # spells "ab", but is not how "ab" encodes
    prompt_ids = [tokenizer.bos_token_id, *ids(tokenizer, "q")]
    batch = make_tokenizer("completion-only", tokenizer).tokenize([sampled(tokenizer, "q", "ab", token_ids)])
    assert batch["input_ids"] == [prompt_ids + token_ids + [eos]]
    assert batch["labels"] == [[-100] * 2 + token_ids + [eos]]
    ended = make_tokenizer("completion-only", tokenizer).tokenize(
        [sampled(tokenizer, "q", "ab", [*token_ids, eos])]
    )
    assert ended["input_ids"] == [prompt_ids + token_ids + [eos]], "a sampled eos is not appended twice"


def test_full_text_trains_on_the_prompt_ids_the_generator_encoded(plugin_manager, tokenizer):
    rendered = ids(tokenizer, "qq")  # e.g. a generator that rendered the prompt without bos
    token_ids = ids(tokenizer, "xy")
    batch = make_tokenizer("full-text", tokenizer, add_eos=False).tokenize(
        [sampled(tokenizer, "qq", "xy", token_ids, prompt_token_ids=rendered)]
    )
    assert batch["input_ids"] == batch["labels"] == [rendered + token_ids]


def test_sampled_ids_that_spell_more_than_the_completion_are_not_trained(plugin_manager, tokenizer, caplog):
    token_ids = ids(tokenizer, "ab::")  # e.g. a plugin trimmed the completion to its answer
    with caplog.at_level("WARNING", logger="iterframe.builtin.tokenizers"):
        batch = make_tokenizer("completion-only", tokenizer).tokenize([sampled(tokenizer, "q", "ab", token_ids)])
    assert batch["input_ids"] == [[tokenizer.bos_token_id, *ids(tokenizer, "qab"), tokenizer.eos_token_id]]
    assert "no longer match their sampled token ids" in caplog.text


def test_an_edited_completion_is_encoded_from_its_text_and_said_once(plugin_manager, tokenizer, caplog):
    eos = tokenizer.eos_token_id
    edited = [
        sampled(tokenizer, "q", "xyz", [*ids(tokenizer, "ab"), eos], prompt_id=4),
        sampled(tokenizer, "q", "no", []),
    ]
    with caplog.at_level("WARNING", logger="iterframe.builtin.tokenizers"):
        batch = make_tokenizer("completion-only", tokenizer).tokenize(edited)
    assert batch["input_ids"][0] == [tokenizer.bos_token_id, *ids(tokenizer, "qxyz"), eos]
    assert batch["input_ids"][1] == [tokenizer.bos_token_id, *ids(tokenizer, "qno"), eos]
    assert caplog.text.count("no longer match their sampled token ids") == 1 and "prompt 4" in caplog.text


def test_chat_trains_on_the_sampled_reply_closed_by_the_templates_end_of_turn(plugin_manager, tokenizer):
    messages = [{"role": "user", "content": "hi"}]
    prompt_ids = ids(tokenizer, "<user>hi\n<assistant>")
    token_ids = [ids(tokenizer, "y")[0], tokenizer.pad_token_id, ids(tokenizer, "o")[0]]
    batch = make_tokenizer("chat", tokenizer).tokenize([sampled(tokenizer, messages, "yo", token_ids, prompt_ids)])
    reply = token_ids + ids(tokenizer, "\n")  # the template's end of turn closes a reply that ended at no eos
    assert batch["input_ids"] == [prompt_ids + reply]
    assert batch["labels"] == [[-100] * len(prompt_ids) + reply]
    ended = [*token_ids, tokenizer.eos_token_id]
    batch = make_tokenizer("chat", tokenizer).tokenize([sampled(tokenizer, messages, "yo", ended, prompt_ids)])
    assert batch["input_ids"] == [prompt_ids + ended]


# --- completions cut at max_new_tokens -------------------------------------------------------------------------


def truncated(item):
    item.info["finish_reason"] = "length"
    return item


def test_a_completion_cut_at_max_new_tokens_is_trained_without_eos(plugin_manager, tokenizer):
    bos, q = tokenizer.bos_token_id, ids(tokenizer, "q")
    for name in ("completion-only", "full-text"):
        from_text = make_tokenizer(name, tokenizer).tokenize([truncated(sample("q", "ab"))])
        assert from_text["input_ids"] == [[bos, *q, *ids(tokenizer, "ab")]], name
        from_ids = make_tokenizer(name, tokenizer).tokenize(
            [truncated(sampled(tokenizer, "q", "ab", ids(tokenizer, "ab")))]
        )
        assert from_ids["input_ids"] == [[bos, *q, *ids(tokenizer, "ab")]], name
    finished = make_tokenizer("completion-only", tokenizer).tokenize([sample("q", "ab")])
    assert finished["input_ids"] == [[bos, *q, *ids(tokenizer, "ab"), tokenizer.eos_token_id]]


def test_a_chat_reply_cut_at_max_new_tokens_is_not_closed_by_the_end_of_turn(plugin_manager, tokenizer):
    messages = [{"role": "user", "content": "hi"}]
    prompt_ids = ids(tokenizer, "<user>hi\n<assistant>")
    from_text = make_tokenizer("chat", tokenizer).tokenize([truncated(sample(messages, "yo"))])
    assert from_text["input_ids"] == [prompt_ids + ids(tokenizer, "yo")]
    assert from_text["labels"] == [[-100] * len(prompt_ids) + ids(tokenizer, "yo")]
    reply = ids(tokenizer, "yo")
    from_ids = make_tokenizer("chat", tokenizer).tokenize(
        [truncated(sampled(tokenizer, messages, "yo", reply, prompt_ids))]
    )
    assert from_ids["input_ids"] == [prompt_ids + reply]


def test_a_completion_trimmed_by_a_plugin_trains_on_the_trim_with_a_real_tokenizer(plugin_manager, zoo_tokenizer):
    tokenizer = zoo_tokenizer("qwen2.5-instruct")
    untrimmed = "The answer is 42. Then I kept talking about something else"
    token_ids = tokenizer(untrimmed, add_special_tokens=False)["input_ids"]
    item = sampled(tokenizer, "Q: 6*7? A:", "The answer is 42.", token_ids)
    batch = make_tokenizer("completion-only", tokenizer).tokenize([item])
    prompt_ids = tokenizer("Q: 6*7? A:")["input_ids"]
    trained = batch["input_ids"][0][len(prompt_ids) :]
    assert tokenizer.decode(trained, skip_special_tokens=True) == "The answer is 42."
    assert trained[-1] == tokenizer.eos_token_id


# --- samples longer than max_length ----------------------------------------------------------------------------


def fitting_tokenizer(name, tokenizer, max_length, model=CAUSAL_LM):
    component = create_component("tokenizer", name)
    trainer = types.SimpleNamespace(model=model, args=types.SimpleNamespace(max_length=max_length))
    component.setup(RunContext(trainer=trainer, tokenizer=tokenizer))
    return component


def test_a_sample_longer_than_max_length_loses_the_end_of_its_completion_never_its_prompt(
    plugin_manager, tokenizer
):
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    prompt = [bos, *ids(tokenizer, "abcd")]
    batch = fitting_tokenizer("completion-only", tokenizer, 7).tokenize(
        [sample("abcd", "xyz"), sample("abcd", "x")]
    )
    assert batch["input_ids"] == [prompt + ids(tokenizer, "xy"), prompt + ids(tokenizer, "x") + [eos]]
    assert batch["labels"][0] == [-100] * 5 + ids(tokenizer, "xy")
    full = fitting_tokenizer("full-text", tokenizer, 6).tokenize([sample("abcd", "xyz")])
    assert full["input_ids"] == [prompt + ids(tokenizer, "x")]
    messages = [{"role": "user", "content": "hi"}]
    chat_prompt = ids(tokenizer, "<user>hi\n<assistant>")
    chat = fitting_tokenizer("chat", tokenizer, len(chat_prompt) + 2).tokenize([sample(messages, "yo!")])
    assert chat["input_ids"] == [chat_prompt + ids(tokenizer, "yo")]
    seq2seq = fitting_tokenizer("completion-only", tokenizer, 5, model=SEQ2SEQ_LM).tokenize(
        [sample("abcd", "xyzwv")]
    )
    assert seq2seq["input_ids"] == [prompt] and seq2seq["labels"] == [ids(tokenizer, "xyzwv")]


def test_keep_end_truncation_never_cuts_the_prompt_of_a_loop_sample(plugin_manager, tiny_llama_path, tmp_path):
    from iterframe import IterativeSFTConfig, IterativeSFTTrainer

    args = IterativeSFTConfig(output_dir=str(tmp_path), report_to=[], max_length=40, truncation_mode="keep_end")
    trainer = IterativeSFTTrainer(tiny_llama_path, args=args)
    component = create_component("tokenizer", "completion-only")
    component.setup(RunContext(trainer=trainer, tokenizer=trainer.processing_class))
    prompt, completion = "Question: what is 12 + 7?", " It is nineteen, since twelve and seven make nineteen."
    batch = component.tokenize([sample(prompt, completion)])
    (trained,) = trainer._prepare_samples(batch["input_ids"], batch["attention_mask"], batch["labels"], None, None)
    prompt_ids = trainer.processing_class(prompt)["input_ids"]
    assert len(prompt_ids) < 40 and len(trained.input_ids) == 40
    assert trained.input_ids.tolist()[: len(prompt_ids)] == prompt_ids


def test_a_prompt_that_leaves_no_room_for_its_completion_is_an_error_not_a_cut(plugin_manager, tokenizer):
    with pytest.raises(ValueError, match="prompt 2: 5 tokens.*max_length=5"):
        fitting_tokenizer("completion-only", tokenizer, 5).tokenize([sample("abcd", "xyz", prompt_id=2)])
