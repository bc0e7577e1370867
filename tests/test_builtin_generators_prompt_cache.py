"""On its ``generate()`` path the ``hf`` generator encodes each prompt once for its K samples, and samples exactly
what ``generate`` samples from K copies of each prompt."""

from __future__ import annotations

import types

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from iterframe.builtin.generators import left_pad
from iterframe.generation import prompt_cache
from iterframe.generation.prompt_cache import shared_prompt_cache
from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext

PROMPTS = ["The quick brown fox", "what", "Iterative fine-tuning trains on the model's own best", "0 1 2 3"]


def load(path, model_class=AutoModelForCausalLM):
    model = model_class.from_pretrained(path)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


def generate(model, tokenizer, num_samples, **options):
    options = {"max_new_tokens": 10, "seed": 7, "use_generate": True, **options}
    generator = create_component("generator", "hf", options)
    generator.setup(RunContext(trainer=types.SimpleNamespace(model=model), tokenizer=tokenizer, seed=0))
    return generator.generate(PROMPTS, num_samples)


def without_shared_cache(monkeypatch):
    monkeypatch.setattr(prompt_cache, "shared_prompt_cache", lambda *args, **kwargs: None)


@pytest.mark.parametrize("model_path", ["tiny_llama_path", "tiny_qwen2_path"])
@pytest.mark.parametrize(
    "options",
    [{}, {"temperature": 0.7, "top_k": 20, "top_p": 0.9, "batch_size": 3}, {"stop": ["e"], "batch_size": 2}],
)
def test_samples_are_those_of_a_separate_pass_per_copy(plugin_manager, request, monkeypatch, model_path, options):
    model, tokenizer = load(request.getfixturevalue(model_path))
    shared = generate(model, tokenizer, 3, **options)
    without_shared_cache(monkeypatch)
    separate = generate(model, tokenizer, 3, **options)
    assert [[(c.text, c.num_tokens, c.finish_reason) for c in per_prompt] for per_prompt in shared] == [
        [(c.text, c.num_tokens, c.finish_reason) for c in per_prompt] for per_prompt in separate
    ]
    assert len({c.text for per_prompt in shared for c in per_prompt}) > 3, "samples should differ"


@pytest.mark.parametrize("model_path", ["tiny_llama_path", "tiny_qwen2_path"])
def test_generate_computes_the_same_logits_from_the_shared_cache(request, model_path):
    model, tokenizer = load(request.getfixturevalue(model_path))
    input_ids, attention_mask = left_pad([tokenizer(prompt)["input_ids"] for prompt in PROMPTS], 0)

    def step_logits(cache=None):
        torch.manual_seed(0)
        with torch.inference_mode():
            extra = {} if cache is None else {cache[0]: cache[1]}
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=4,
                do_sample=True,
                num_return_sequences=3,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id,
                **extra,
            )
        return torch.stack(output.logits)

    with torch.inference_mode():
        cache = shared_prompt_cache(model, input_ids, attention_mask, 3)
    torch.testing.assert_close(step_logits(cache), step_logits(), rtol=1e-5, atol=1e-5)


def test_each_prompt_is_encoded_once_for_its_samples(plugin_manager, tiny_llama_path):
    model, tokenizer = load(tiny_llama_path)
    shapes = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        generate(model, tokenizer, 4, max_new_tokens=5, batch_size=len(PROMPTS))
    finally:
        handle.remove()
    width = max(len(tokenizer(prompt)["input_ids"]) for prompt in PROMPTS)
    assert shapes[0] == (len(PROMPTS), width - 1)  # every prompt token but the last, once per prompt
    assert set(shapes[1:]) == {(4 * len(PROMPTS), 1)}  # then one token per sample and step


def test_the_cache_holds_every_prompt_token_but_the_last_for_each_sample(tiny_llama_path):
    model, tokenizer = load(tiny_llama_path)
    input_ids, attention_mask = left_pad([tokenizer(prompt)["input_ids"] for prompt in PROMPTS], 0)
    with torch.inference_mode():
        argument, cache = shared_prompt_cache(model, input_ids, attention_mask, 3)
    assert argument in ("cache", "past_key_values")
    assert cache.get_seq_length() == input_ids.shape[1] - 1
    keys = cache.layers[0].keys
    assert keys.shape[0] == 3 * len(PROMPTS)
    assert torch.equal(keys[0], keys[2]) and not torch.equal(keys[0], keys[3])  # rows repeat per prompt


def test_nothing_is_shared_for_one_sample_or_one_token_prompts(tiny_llama_path):
    model, tokenizer = load(tiny_llama_path)
    input_ids, attention_mask = left_pad([tokenizer(prompt)["input_ids"] for prompt in PROMPTS], 0)
    assert shared_prompt_cache(model, input_ids, attention_mask, 1) is None
    assert shared_prompt_cache(model, input_ids[:, -1:], attention_mask[:, -1:], 4) is None


def test_encoder_decoders_and_fixed_cache_implementations_are_left_to_generate(tiny_t5_path, tiny_llama_path):
    t5, t5_tokenizer = load(tiny_t5_path, AutoModelForSeq2SeqLM)
    input_ids, attention_mask = left_pad([t5_tokenizer(prompt)["input_ids"] for prompt in PROMPTS], 0)
    assert shared_prompt_cache(t5, input_ids, attention_mask, 4) is None
    llama, _ = load(tiny_llama_path)
    llama.generation_config.cache_implementation = "static"
    assert shared_prompt_cache(llama, input_ids, attention_mask, 4) is None


def test_encoder_decoder_samples_still_come_back_per_prompt(plugin_manager, tiny_t5_path):
    model, tokenizer = load(tiny_t5_path, AutoModelForSeq2SeqLM)
    completions = generate(model, tokenizer, 2)
    assert [len(per_prompt) for per_prompt in completions] == [2] * len(PROMPTS)
