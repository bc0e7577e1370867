"""The ``hf`` generator on a tiny character-level causal LM: batching, order, padding, stop strings, modes."""

from __future__ import annotations

import types

import pytest
import torch

from iterframe.builtin.generators import cut_at_stop, left_pad
from iterframe.plugins import ComponentOptionError, create_component
from iterframe.plugins.components import Completion, RunContext
from iterframe.testing import build_char_tokenizer, build_tiny_causal_lm

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 +=?:.<>/\n"
CHAT_TEMPLATE = (
    "{% for message in messages %}<{{ message['role'] }}>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
PROMPTS = ["a", "what is 12 + 7?", "abc"]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = build_char_tokenizer(ALPHABET, chat_template=CHAT_TEMPLATE)
    model, tokenizer = build_tiny_causal_lm(tokenizer=tokenizer, hidden_size=32, num_layers=1)
    return model, tokenizer


def make_generator(model_and_tokenizer, tokenizer=None, **options):
    model, default_tokenizer = model_and_tokenizer
    generator = create_component("generator", "hf", {"max_new_tokens": 6, "seed": 0, **options})
    trainer = types.SimpleNamespace(model=model)
    generator.setup(RunContext(trainer=trainer, tokenizer=tokenizer or default_tokenizer, seed=123))
    return generator


@pytest.fixture(params=["decoding loop", "generate"])
def sampling_path(request):
    """The generator options that pick each way of sampling: iterframe's decoding loop or ``model.generate``."""
    return {"use_generate": request.param == "generate"}


@pytest.fixture
def generate_calls(model_and_tokenizer):
    """Records the ``input_ids``/``attention_mask`` of each batch's first forward pass: the prompt pass, the only
    one with an empty cache."""
    model, _ = model_and_tokenizer
    calls = []

    def record(module, args, kwargs):
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        if cache is None or cache.get_seq_length() == 0:
            input_ids = kwargs["input_ids"]
            attention_mask = kwargs.get("attention_mask")  # generate leaves out an all-ones mask
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            calls.append({"input_ids": input_ids.clone(), "attention_mask": mask.clone()})

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    yield calls
    handle.remove()


def test_left_pad_aligns_sequences_on_the_right():
    input_ids, attention_mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_cut_at_stop_cuts_before_the_earliest_stop_string():
    assert cut_at_stop("x = 1\n\nQ: next", ["Q:", "\n\n"]) == ("x = 1", True)
    assert cut_at_stop("no stop here", ["###"]) == ("no stop here", False)
    assert cut_at_stop("text", []) == ("text", False)


def test_returns_k_completions_for_every_prompt(plugin_manager, model_and_tokenizer):
    completions = make_generator(model_and_tokenizer).generate(PROMPTS, num_samples=3)
    assert [len(per_prompt) for per_prompt in completions] == [3, 3, 3]
    for completion in (item for per_prompt in completions for item in per_prompt):
        assert isinstance(completion, Completion)
        assert 1 <= completion.num_tokens <= 6
        assert completion.finish_reason == ("length" if completion.num_tokens == 6 else "stop")


def test_prompt_order_is_kept_although_batches_are_sorted_by_length(plugin_manager, model_and_tokenizer):
    batched = make_generator(model_and_tokenizer, do_sample=False, batch_size=2).generate(PROMPTS, 1)
    one_by_one = [
        make_generator(model_and_tokenizer, do_sample=False).generate([prompt], 1)[0] for prompt in PROMPTS
    ]
    assert [per_prompt[0].text for per_prompt in batched] == [per_prompt[0].text for per_prompt in one_by_one]


def test_batches_are_longest_first_and_left_padded(
    plugin_manager, model_and_tokenizer, generate_calls, sampling_path
):
    _, tokenizer = model_and_tokenizer
    make_generator(model_and_tokenizer, batch_size=2, **sampling_path).generate(PROMPTS, 1)
    encoded = [tokenizer(prompt)["input_ids"] for prompt in PROMPTS]
    first, second = generate_calls
    padding = len(encoded[1]) - len(encoded[2])
    assert first["input_ids"].tolist() == [encoded[1], [tokenizer.pad_token_id] * padding + encoded[2]]
    assert first["attention_mask"].tolist() == [[1] * len(encoded[1]), [0] * padding + [1] * len(encoded[2])]
    assert second["input_ids"].tolist() == [encoded[0]]


def test_stop_strings_cut_the_completion(plugin_manager, model_and_tokenizer, sampling_path):
    baseline = make_generator(model_and_tokenizer, max_new_tokens=12, **sampling_path).generate(PROMPTS, 2)
    # a completion long enough to cut (which one depends on how the torch version draws random numbers)
    i, j = next((i, j) for i, row in enumerate(baseline) for j, c in enumerate(row) if len(c.text) > 3)
    stop = baseline[i][j].text[3]
    stopped = make_generator(model_and_tokenizer, max_new_tokens=12, stop=[stop], **sampling_path).generate(
        PROMPTS, 2
    )
    for before, after in zip(baseline, stopped):
        for full, cut in zip(before, after):
            if not sampling_path["use_generate"]:  # the loop draws each row's numbers whatever the others do
                assert cut.text == full.text.split(stop)[0]
            assert stop not in cut.text
    assert stopped[i][j].finish_reason == "stop"
    assert stopped[i][j].text == baseline[i][j].text[: baseline[i][j].text.index(stop)]


def test_a_completion_cut_at_a_stop_string_records_the_ids_that_spell_its_text(
    plugin_manager, model_and_tokenizer, sampling_path
):
    _, tokenizer = model_and_tokenizer
    baseline = make_generator(model_and_tokenizer, max_new_tokens=12, **sampling_path).generate(PROMPTS, 2)
    i, j = next((i, j) for i, row in enumerate(baseline) for j, c in enumerate(row) if len(c.text) > 3)
    stop = baseline[i][j].text[3]
    stopped = make_generator(model_and_tokenizer, max_new_tokens=12, stop=[stop], **sampling_path).generate(
        PROMPTS, 2
    )
    for completion in (completion for row in stopped for completion in row):
        assert tokenizer.decode(completion.token_ids, skip_special_tokens=True) == completion.text
    assert stopped[i][j].num_tokens == len(stopped[i][j].token_ids) + 1  # the stop string's token was sampled


def test_model_generates_in_eval_inference_mode_and_train_mode_is_restored(
    plugin_manager, model_and_tokenizer, sampling_path
):
    model, _ = model_and_tokenizer
    seen = []
    handle = model.register_forward_pre_hook(
        lambda module, args: seen.append((module.training, torch.is_inference_mode_enabled()))
    )
    try:
        model.train()
        make_generator(model_and_tokenizer, **sampling_path).generate(PROMPTS, 2)
        assert model.training is True
        model.eval()
        make_generator(model_and_tokenizer, **sampling_path).generate(PROMPTS, 1)
        assert model.training is False
    finally:
        handle.remove()
        model.train()
    assert seen and set(seen) == {(False, True)}


def test_train_mode_is_restored_when_generation_fails(plugin_manager, model_and_tokenizer, sampling_path):
    model, _ = model_and_tokenizer

    def fail(module, args):
        raise RuntimeError("out of memory")

    handle = model.register_forward_pre_hook(fail)
    model.train()
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            make_generator(model_and_tokenizer, **sampling_path).generate(PROMPTS, 1)
    finally:
        handle.remove()
    assert model.training is True


def test_chat_prompts_go_through_the_chat_template(
    plugin_manager, model_and_tokenizer, generate_calls, sampling_path
):
    _, tokenizer = model_and_tokenizer
    messages = [{"role": "user", "content": "what is 2+2?"}]
    (completions,) = make_generator(model_and_tokenizer, **sampling_path).generate([messages], 1)
    assert len(completions) == 1
    rendered = "<user>what is 2+2?\n<assistant>"
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == rendered
    (call,) = generate_calls
    assert call["input_ids"].tolist() == [tokenizer(rendered, add_special_tokens=False)["input_ids"]]


def test_chat_prompts_without_a_chat_template_are_an_error(plugin_manager, model_and_tokenizer):
    plain_tokenizer = build_char_tokenizer(ALPHABET)
    generator = make_generator(model_and_tokenizer, tokenizer=plain_tokenizer)
    with pytest.raises(
        ValueError, match="prompt 1 is a list of chat messages but the model.s tokenizer has no chat template"
    ):
        generator.generate(["text", [{"role": "user", "content": "hi"}]], 1)


def test_malformed_chat_messages_are_named(plugin_manager, model_and_tokenizer):
    with pytest.raises(ValueError, match=r"prompt 0: message 0 is \{'text': 'hi'\}; chat messages are dicts"):
        make_generator(model_and_tokenizer).generate([[{"text": "hi"}]], 1)


def test_same_seed_same_samples_and_each_call_draws_new_ones(plugin_manager, model_and_tokenizer, sampling_path):
    first = make_generator(model_and_tokenizer, seed=7, **sampling_path)
    second = make_generator(model_and_tokenizer, seed=7, **sampling_path)
    texts = lambda completions: [[item.text for item in per_prompt] for per_prompt in completions]  # noqa: E731
    first_call = texts(first.generate(PROMPTS, 2))
    assert first_call == texts(second.generate(PROMPTS, 2))
    assert texts(first.generate(PROMPTS, 2)) != first_call


def test_generation_does_not_move_the_global_random_state(plugin_manager, model_and_tokenizer, sampling_path):
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    make_generator(model_and_tokenizer, **sampling_path).generate(PROMPTS, 1)
    assert torch.equal(torch.rand(3), expected)


def test_greedy_with_several_samples_per_prompt_is_an_error(plugin_manager, model_and_tokenizer):
    with pytest.raises(ValueError, match="do_sample=false .* all 4 samples per prompt identical"):
        make_generator(model_and_tokenizer, do_sample=False).generate(PROMPTS, 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": 0}, "temperature must be > 0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"eval_batch_size": 0}, "eval_batch_size must be >= 1"),
    ],
)
def test_invalid_sampling_options_are_rejected(plugin_manager, options, message):
    with pytest.raises(ComponentOptionError, match=message):
        create_component("generator", "hf", options)


def test_setup_without_a_model_is_an_error(plugin_manager):
    generator = create_component("generator", "hf")
    with pytest.raises(ValueError, match="needs the run's model and tokenizer"):
        generator.setup(RunContext(trainer=None, tokenizer=None))


def test_tokenizer_without_pad_token_pads_with_eos(plugin_manager, tiny_nopad_llama_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_nopad_llama_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_nopad_llama_path)
    assert tokenizer.pad_token_id is None
    completions = make_generator((model, tokenizer)).generate(["The quick", "Question: what is 12 + 7?"], 2)
    assert [len(per_prompt) for per_prompt in completions] == [2, 2]
    assert all(1 <= item.num_tokens <= 6 for per_prompt in completions for item in per_prompt)


def test_encoder_decoder_models_generate_completions(plugin_manager, tiny_t5_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_path)
    completions = make_generator((model, tokenizer)).generate(["The quick brown fox", "12 + 7"], 3)
    assert [len(per_prompt) for per_prompt in completions] == [3, 3]
    assert all(1 <= item.num_tokens <= 6 for per_prompt in completions for item in per_prompt)
