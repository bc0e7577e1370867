"""iterframe's decoding loop: the tokens ``generate`` would pick, the distribution ``generate`` samples from, and
the cases it leaves to ``generate``."""

from __future__ import annotations

import gc
import types
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from iterframe.builtin.generators import left_pad
from iterframe.generation import decoding
from iterframe.generation.decoding import DecodingSettings, decode, draw_tokens, unsupported_reason, warp_logits
from iterframe.generation.kv_buffers import PreallocatedKV
from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext

PROMPTS = ["The quick brown fox", "what", "Iterative fine-tuning trains on the model's own best", "0 1 2 3"]
MODEL_PATHS = ["tiny_llama_path", "tiny_qwen2_path"]


def load(path, model_class=AutoModelForCausalLM, **kwargs):
    model = model_class.from_pretrained(path, **kwargs)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


def prompt_batch(tokenizer):
    return left_pad([tokenizer(prompt)["input_ids"] for prompt in PROMPTS], tokenizer.pad_token_id)


def greedy_reference(model, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, **kwargs):
    with torch.inference_mode():
        sequences = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            **kwargs,
        )
    new = sequences[:, input_ids.shape[1] :]
    padding = torch.full((new.shape[0], max_new_tokens - new.shape[1]), pad_token_id, dtype=new.dtype)
    return torch.cat([new, padding], dim=1)  # generate stops early when every row has finished


def greedy_decode(model, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, **settings):
    settings = DecodingSettings(
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        do_sample=False,
        **settings,
    )
    with torch.inference_mode():
        return decode(model, input_ids, attention_mask, 1, settings)


@pytest.mark.parametrize("model_path", MODEL_PATHS)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_greedy_tokens_are_those_generate_picks(request, model_path, attention):
    model, tokenizer = load(request.getfixturevalue(model_path), attn_implementation=attention)
    input_ids, attention_mask = prompt_batch(tokenizer)
    expected = greedy_reference(model, input_ids, attention_mask, 12, -1, tokenizer.pad_token_id)
    ours = greedy_decode(model, input_ids, attention_mask, 12, -1, tokenizer.pad_token_id)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("model_path", MODEL_PATHS)
def test_rows_that_reach_eos_leave_the_batch_and_are_padded_as_generate_pads_them(request, model_path):
    model, tokenizer = load(request.getfixturevalue(model_path))
    input_ids, attention_mask = prompt_batch(tokenizer)
    free_run = greedy_reference(model, input_ids, attention_mask, 12, -1, tokenizer.pad_token_id)
    eos = int(free_run[0, 3])  # the first row ends at its 4th token; others when (if) they pick the same one
    expected = greedy_reference(model, input_ids, attention_mask, 12, eos, tokenizer.pad_token_id)
    rows_seen = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: rows_seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        ours = greedy_decode(model, input_ids, attention_mask, 12, eos, tokenizer.pad_token_id)
    finally:
        handle.remove()
    assert torch.equal(ours, expected)
    assert (expected[0, 4:] == tokenizer.pad_token_id).all()
    assert min(rows_seen) < len(PROMPTS), "a finished row should have left the batch"


def unpadded_batch(tokenizer):
    """The prompts' ids cut to the shortest one's length: a batch without padding."""
    ids = [tokenizer(prompt)["input_ids"] for prompt in PROMPTS]
    return left_pad([row[: min(map(len, ids))] for row in ids], tokenizer.pad_token_id)


@pytest.mark.parametrize("model_path", MODEL_PATHS)
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_batch_without_padding_decodes_without_a_mask_and_as_generate_does(request, model_path, attention):
    model, tokenizer = load(request.getfixturevalue(model_path), attn_implementation=attention)
    masks = {}
    for name, (input_ids, attention_mask) in (
        ("unpadded", unpadded_batch(tokenizer)),
        ("padded", prompt_batch(tokenizer)),
    ):
        free_run = greedy_reference(model, input_ids, attention_mask, 10, -1, tokenizer.pad_token_id)
        eos = int(free_run[0, 3])  # rows leave the batch on the way
        expected = greedy_reference(model, input_ids, attention_mask, 10, eos, tokenizer.pad_token_id)
        seen = []
        handle = model.register_forward_pre_hook(
            lambda module, args, kwargs, seen=seen: seen.append(kwargs["attention_mask"]), with_kwargs=True
        )
        try:
            ours = greedy_decode(model, input_ids, attention_mask, 10, eos, tokenizer.pad_token_id)
        finally:
            handle.remove()
        assert torch.equal(ours, expected), name
        masks[name] = seen[1:]  # the decode steps, after the prompts' pass
    assert masks["unpadded"] and all(mask is None for mask in masks["unpadded"])
    assert masks["padded"] and all(mask is not None for mask in masks["padded"])


def test_eos_is_held_back_until_min_new_tokens(tiny_llama_path):
    model, tokenizer = load(tiny_llama_path)
    input_ids, attention_mask = prompt_batch(tokenizer)
    eos = int(greedy_reference(model, input_ids, attention_mask, 1, -1, tokenizer.pad_token_id)[0, 0])
    expected = greedy_reference(model, input_ids, attention_mask, 8, eos, tokenizer.pad_token_id, min_new_tokens=5)
    ours = greedy_decode(model, input_ids, attention_mask, 8, eos, tokenizer.pad_token_id, min_new_tokens=5)
    assert torch.equal(ours, expected)
    assert not (ours[:, :5] == eos).any()
    unrestrained = greedy_decode(model, input_ids, attention_mask, 8, eos, tokenizer.pad_token_id)
    assert int(unrestrained[0, 0]) == eos  # without the floor, the first row would have ended at once


def test_samples_do_not_depend_on_the_kv_buffers(tiny_llama_path, monkeypatch):
    model, tokenizer = load(tiny_llama_path)
    input_ids, attention_mask = prompt_batch(tokenizer)
    eos = int(greedy_reference(model, input_ids, attention_mask, 3, -1, tokenizer.pad_token_id)[0, 2])
    settings = DecodingSettings(  # near-greedy, so the first prompt's samples end where its greedy path does
        max_new_tokens=10, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, temperature=0.05
    )

    def sample():
        torch.manual_seed(3)
        with torch.inference_mode():
            return decode(model, input_ids, attention_mask, 3, settings)

    buffered = sample()
    no_buffers = classmethod(lambda cls, cache, capacity, repeats=1: None)
    monkeypatch.setattr(decoding.PreallocatedKV, "attach", no_buffers)
    assert torch.equal(buffered, sample())
    assert (buffered == eos).any(), "some row should have finished early and left the batch"


def test_kv_buffers_are_freed_when_the_decode_ends_without_waiting_for_the_collector(tiny_llama_path, monkeypatch):
    model, tokenizer = load(tiny_llama_path)
    input_ids, attention_mask = prompt_batch(tokenizer)
    attached = []
    original = PreallocatedKV.attach.__func__

    def attach(cls, cache, capacity, repeats=1):
        buffers = original(cls, cache, capacity, repeats)
        attached.append((weakref.ref(buffers.buffers[0][0]), buffers))
        return buffers

    monkeypatch.setattr(PreallocatedKV, "attach", classmethod(attach))
    settings = DecodingSettings(max_new_tokens=4, eos_token_id=-1, pad_token_id=tokenizer.pad_token_id)
    gc.disable()
    try:
        with torch.inference_mode():
            decode(model, input_ids, attention_mask, 2, settings)
        ((buffer, buffers),) = attached
        assert buffer() is None and buffers.buffers == []
    finally:
        gc.enable()


def test_kv_buffers_refuse_to_write_past_their_capacity(tiny_llama_path):
    model, tokenizer = load(tiny_llama_path)
    input_ids, attention_mask = prompt_batch(tokenizer)
    with torch.inference_mode():
        output = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
    cache = getattr(output, "past_key_values", None) or output.cache
    buffers = PreallocatedKV.attach(cache, input_ids.shape[1] + 1)
    layer = cache.layers[0]
    key = layer.keys[:, :, :1].clone()
    buffers.layers[0].update(key, key.clone())
    assert layer.keys.shape[2] == input_ids.shape[1] + 1 and torch.equal(layer.keys[:, :, -1:], key)
    with pytest.raises(RuntimeError, match="hold"):
        buffers.layers[0].update(key, key.clone())


def test_a_prompts_samples_are_consecutive_rows_and_differ(tiny_llama_path):
    model, tokenizer = load(tiny_llama_path)
    input_ids, attention_mask = prompt_batch(tokenizer)
    settings = DecodingSettings(max_new_tokens=8, eos_token_id=-1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.inference_mode():
        samples = decode(model, input_ids, attention_mask, 3, settings)
    assert samples.shape == (3 * len(PROMPTS), 8)
    assert len({tuple(row) for row in samples.tolist()}) > len(PROMPTS)
    # the first token of a sample is drawn from its own prompt's next-token distribution
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -1]
    for row, token in enumerate(samples[:, 0].tolist()):
        assert logits[row // 3].softmax(-1)[token] > 0


def hf_warped(logits, temperature, top_k, top_p):
    processors = LogitsProcessorList()
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    return processors(None, logits.clone())


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 5, 1.0), (1.0, 0, 0.9), (1.3, 20, 0.5), (0.5, 1, 0.1), (1.0, 0, 1e-9)],
)
def test_warping_matches_generates_warpers(temperature, top_k, top_p):
    logits = torch.randn(16, 200, generator=torch.Generator().manual_seed(0)) * 3
    settings = DecodingSettings(1, 0, 0, temperature=temperature, top_k=top_k, top_p=top_p)
    ours, theirs = warp_logits(logits, settings), hf_warped(logits, temperature, top_k, top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    torch.testing.assert_close(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)])
    assert (~torch.isinf(ours)).sum(-1).min() >= 1


def test_samples_follow_the_softmax_and_never_pick_masked_tokens():
    probabilities = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    logits = probabilities.log().expand(40_000, -1)
    tokens = draw_tokens(logits, torch.rand(40_000, generator=torch.Generator().manual_seed(0)))
    frequencies = torch.bincount(tokens, minlength=5).double() / len(tokens)
    torch.testing.assert_close(frequencies, probabilities.double(), atol=0.01, rtol=0)
    assert frequencies[4] == 0
    edges = draw_tokens(logits[:2], torch.tensor([0.0, 1.0 - 1e-12], dtype=torch.float64))
    assert edges.tolist() == [0, 3]  # the ends of [0, 1) map to the first and the last possible token


def test_greedy_draw_is_the_argmax():
    logits = torch.randn(8, 50)
    assert torch.equal(draw_tokens(logits), logits.argmax(-1))


def test_lora_models_decode_through_their_base_model_with_the_adapters(tiny_llama_path):
    peft = pytest.importorskip("peft")
    model, tokenizer = load(tiny_llama_path)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    lora = peft.get_peft_model(model, config)
    lora.eval()
    assert unsupported_reason(lora, 64) is None
    input_ids, attention_mask = prompt_batch(tokenizer)
    expected = greedy_reference(lora, input_ids, attention_mask, 6, -1, tokenizer.pad_token_id)
    ours = greedy_decode(lora, input_ids, attention_mask, 6, -1, tokenizer.pad_token_id)
    assert torch.equal(ours, expected)
    with lora.disable_adapter():
        without = greedy_reference(lora, input_ids, attention_mask, 6, -1, tokenizer.pad_token_id)
    assert not torch.equal(ours, without), "the adapters should change what is decoded"


def test_what_is_left_to_generate_is_named(tiny_llama_path, tiny_t5_path):
    t5, _ = load(tiny_t5_path, AutoModelForSeq2SeqLM)
    assert "encoder-decoder" in unsupported_reason(t5, 16)
    llama, _ = load(tiny_llama_path)
    assert unsupported_reason(llama, 16) is None
    llama.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in unsupported_reason(llama, 16)
    llama.generation_config.repetition_penalty = 1.0  # neutral, as many saved generation configs have it
    assert unsupported_reason(llama, 16) is None
    llama.config.sliding_window = 8
    assert "sliding window" in unsupported_reason(llama, 16)
    assert unsupported_reason(llama, 8) is None
    llama.config.sliding_window = None
    llama.generation_config.cache_implementation = "static"
    assert "prefilled cache" in unsupported_reason(llama, 16)


def test_the_generator_falls_back_to_generate_and_says_why(plugin_manager, tiny_llama_path, caplog):
    model, tokenizer = load(tiny_llama_path)
    model.generation_config.repetition_penalty = 1.3
    calls = []
    original = model.generate
    model.generate = lambda *args, **kwargs: calls.append(kwargs) or original(*args, **kwargs)
    generator = create_component("generator", "hf", {"max_new_tokens": 4, "seed": 0})
    generator.setup(RunContext(trainer=types.SimpleNamespace(model=model), tokenizer=tokenizer, seed=0))
    with caplog.at_level("INFO", logger="iterframe.builtin.generators"):
        completions = generator.generate(PROMPTS, 2)
    assert calls and [len(per_prompt) for per_prompt in completions] == [2] * len(PROMPTS)
    assert "generate(): the model's generation config sets repetition_penalty" in caplog.text


@pytest.mark.parametrize("use_generate", [False, True])
def test_the_generator_uses_the_loop_unless_told_otherwise(plugin_manager, tiny_llama_path, use_generate):
    model, tokenizer = load(tiny_llama_path)
    calls = []
    original = model.generate
    model.generate = lambda *args, **kwargs: calls.append(kwargs) or original(*args, **kwargs)
    options = {"max_new_tokens": 4, "seed": 0, "use_generate": use_generate}
    generator = create_component("generator", "hf", options)
    generator.setup(RunContext(trainer=types.SimpleNamespace(model=model), tokenizer=tokenizer, seed=0))
    generator.generate(PROMPTS, 2)
    assert bool(calls) == use_generate


@pytest.mark.parametrize("model_path", MODEL_PATHS)
def test_greedy_completions_match_between_the_loop_and_generate(plugin_manager, request, model_path):
    model, tokenizer = load(request.getfixturevalue(model_path))

    def completions(use_generate):
        options = {"max_new_tokens": 10, "do_sample": False, "batch_size": 3, "use_generate": use_generate}
        generator = create_component("generator", "hf", options)
        generator.setup(RunContext(trainer=types.SimpleNamespace(model=model), tokenizer=tokenizer, seed=0))
        return [(c.text, c.num_tokens, c.finish_reason) for (c,) in generator.generate(PROMPTS, 1)]

    assert completions(False) == completions(True)


@pytest.fixture(scope="module")
def tiny_llama4():
    """A Llama-4 text model (chunked attention in 3 of 4 layers, a mixture of experts) and a tokenizer."""
    from transformers import Llama4ForCausalLM, Llama4TextConfig

    from iterframe.testing import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer()
    config = Llama4TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        intermediate_size_mlp=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_local_experts=2,
        num_experts_per_tok=1,
        attention_chunk_size=8,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return Llama4ForCausalLM(config).eval(), tokenizer


def greedy_completions(model, tokenizer, **options):
    generator = create_component("generator", "hf", {"max_new_tokens": 12, "do_sample": False, **options})
    generator.setup(RunContext(trainer=types.SimpleNamespace(model=model), tokenizer=tokenizer, seed=0))
    return [(c.token_ids, c.finish_reason) for (c,) in generator.generate(PROMPTS, 1)]


def test_llama4_chunked_attention_is_left_to_generate(plugin_manager, tiny_llama4, caplog):
    model, tokenizer = tiny_llama4
    assert "chunked_attention layers" in unsupported_reason(model, 16)
    with caplog.at_level("INFO", logger="iterframe.builtin.generators"):
        completions = greedy_completions(model, tokenizer)
    assert "generate(): the model has chunked_attention layers" in caplog.text
    assert completions == greedy_completions(model, tokenizer, use_generate=True)


def test_a_model_the_loop_fails_on_falls_back_to_generate_with_a_warning(
    plugin_manager, tiny_llama_path, caplog, monkeypatch
):
    model, tokenizer = load(tiny_llama_path)
    expected = greedy_completions(model, tokenizer, use_generate=True)
    calls = []

    def cannot_serve(*args, **kwargs):  # stands for a model whose layers the loop's checks did not foresee
        calls.append(1)
        raise RuntimeError("The size of tensor a (8) must match the size of tensor b (32)")

    monkeypatch.setattr(decoding, "decode", cannot_serve)  # the generator imports it when it decodes
    with caplog.at_level("WARNING", logger="iterframe.builtin.generators"):
        generator = create_component(
            "generator", "hf", {"max_new_tokens": 12, "do_sample": False, "batch_size": 2}
        )
        generator.setup(RunContext(trainer=types.SimpleNamespace(model=model), tokenizer=tokenizer, seed=0))
        completions = [(c.token_ids, c.finish_reason) for (c,) in generator.generate(PROMPTS, 1)]
    assert completions == expected
    assert "decoding loop failed on LlamaForCausalLM (RuntimeError: The size of tensor a" in caplog.text
    assert len(calls) == 1, "after the first failure every batch goes straight to generate()"


def test_errors_of_a_model_the_loop_has_served_are_not_hidden(plugin_manager, tiny_llama_path, monkeypatch):
    model, tokenizer = load(tiny_llama_path)
    generator = create_component("generator", "hf", {"max_new_tokens": 4, "seed": 0})
    generator.setup(RunContext(trainer=types.SimpleNamespace(model=model), tokenizer=tokenizer, seed=0))
    generator.generate(PROMPTS, 1)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the loop")

    monkeypatch.setattr(decoding, "decode", broken)
    with pytest.raises(RuntimeError, match="a bug in the loop"):
        generator.generate(PROMPTS, 1)


def test_a_stop_string_spelled_by_more_tokens_than_the_tail_window_is_found(zoo_tokenizer):
    tokenizer = zoo_tokenizer("tinyllama-chat")  # byte fallback: each of these characters is four byte tokens
    stop = "𝔘𝔫𝔦𝔱"
    tokens = tokenizer("Hello there " + stop, add_special_tokens=False)["input_ids"]
    assert len(tokenizer(stop, add_special_tokens=False)["input_ids"]) > len(stop) + 8
    check = decoding.stop_string_check(tokenizer, [stop])
    assert check(tokens)
    assert not check(tokens[:-1])
    assert decoding.stop_string_check(tokenizer, ["", "never"]) is not None
    assert decoding.stop_string_check(tokenizer, [""]) is None
