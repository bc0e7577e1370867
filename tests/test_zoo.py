"""The model zoo: tiny random-weight models of five real chat families (Qwen2.5-Instruct, Qwen3, Phi-3-mini,
SmolLM2-Instruct, TinyLlama-Chat) with their real tokenizers, chat templates and generation configs. Every
family: generation stops at every eos id of ``generation_config.json``, prompts render with the model's own chat
template, the decoding loop matches ``generate()``, packed training matches padded training, and a kept sample
trains on exactly the token ids that were sampled."""

from __future__ import annotations

import json
import os
import types

import pytest
import torch
from conftest import ZOO_FAMILIES
from transformers import AutoModelForCausalLM, AutoTokenizer

from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.engine import packing
from iterframe.generation.token_ids import tokenizer_fingerprint
from iterframe.loop.config import PromptRecord
from iterframe.loop.stages import samples_from_completions
from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext

PATHS = {"decoding loop": {"use_generate": False}, "generate": {"use_generate": True}}
CHAT = [{"role": "user", "content": "What is 12 + 7?"}]


@pytest.fixture(scope="module")
def zoo(zoo_models):
    """Family -> (model in eval mode, tokenizer), loaded once per module."""
    loaded = {}

    def get(family):
        if family not in loaded:
            path = zoo_models[family]
            loaded[family] = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
        return loaded[family]

    return get


def generation_config_eos_ids(path) -> list[int]:
    """The eos ids as ``generation_config.json`` spells them (read from the file, not through transformers)."""
    with open(os.path.join(path, "generation_config.json"), encoding="utf-8") as handle:
        eos = json.load(handle)["eos_token_id"]
    return [eos] if isinstance(eos, int) else list(eos)


def make_generator(model, tokenizer, **options):
    generator = create_component("generator", "hf", {"max_new_tokens": 6, "seed": 0, **options})
    generator.setup(RunContext(trainer=types.SimpleNamespace(model=model), tokenizer=tokenizer, seed=0))
    return generator


class boosted_logits:
    """While active, adds ``boosts[token]`` to the logits of ``token`` at every position the model outputs."""

    def __init__(self, model, boosts: dict[int, float]):
        self.model = model
        self.bias = torch.zeros(model.get_output_embeddings().out_features)
        for token, boost in boosts.items():
            self.bias[token] = boost

    def __enter__(self):
        hook = lambda module, args, output: output + self.bias  # noqa: E731
        self.handle = self.model.get_output_embeddings().register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", ZOO_FAMILIES)
def test_generation_stops_at_every_eos_id_of_the_generation_config(plugin_manager, zoo, zoo_models, family, path):
    model, tokenizer = zoo(family)
    generator = make_generator(model, tokenizer, **PATHS[path])
    for eos_id in generation_config_eos_ids(zoo_models[family]):
        with boosted_logits(model, {eos_id: 1e4}):
            ((completion,),) = generator.generate([CHAT], 1)
        assert completion.finish_reason == "stop", f"eos id {eos_id} did not end the completion"
        assert completion.num_tokens == 1
        assert completion.text == ""


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", ZOO_FAMILIES)
def test_min_new_tokens_holds_back_every_eos_id(plugin_manager, zoo, zoo_models, family, path):
    model, tokenizer = zoo(family)
    eos_ids = generation_config_eos_ids(zoo_models[family])
    boosts = {eos_id: 1e4 + 10 * rank for rank, eos_id in enumerate(eos_ids)}  # the last one likeliest
    generator = make_generator(model, tokenizer, **PATHS[path])
    model.generation_config.min_new_tokens = 3
    try:
        with boosted_logits(model, boosts):
            ((completion,),) = generator.generate([CHAT], 1)
    finally:
        model.generation_config.min_new_tokens = None
    assert not set(completion.token_ids[:3]) & set(eos_ids), completion.token_ids
    assert completion.token_ids[3:] == [eos_ids[-1]]
    assert (completion.num_tokens, completion.finish_reason) == (4, "stop")


@pytest.mark.parametrize("family", ZOO_FAMILIES)
def test_chat_prompts_render_with_the_models_own_template_and_one_bos_at_most(plugin_manager, zoo, family):
    model, tokenizer = zoo(family)
    expected = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)
    expected = list(expected["input_ids"] if hasattr(expected, "keys") else expected)
    ((completion,),) = make_generator(model, tokenizer, max_new_tokens=2).generate([CHAT], 1)
    assert completion.prompt_token_ids == expected
    bos = tokenizer.bos_token_id
    assert completion.prompt_token_ids[:2] != [bos, bos]
    assert CHAT[0]["content"] in tokenizer.decode(completion.prompt_token_ids)


def test_a_text_prompt_that_starts_with_bos_gets_no_second_one(zoo):
    from iterframe.generation.prompt_encoding import encode_prompt

    _, tokenizer = zoo("tinyllama-chat")  # its tokenizer adds <s> to text
    bos = tokenizer.bos_token_id
    assert encode_prompt(tokenizer, "Once upon a time")[:2] == [bos, tokenizer("Once")["input_ids"][1]]
    assert tokenizer("<s>Once upon a time")["input_ids"][:2] == [bos, bos], "the tokenizer alone doubles it"
    ids = encode_prompt(tokenizer, "<s>Once upon a time")
    assert ids[0] == bos != ids[1]


@pytest.mark.parametrize("family", ZOO_FAMILIES)
def test_the_greedy_decoding_loop_picks_the_tokens_generate_picks(plugin_manager, zoo, family, monkeypatch):
    model, tokenizer = zoo(family)
    # Qwen2.5's generation config asks for repetition_penalty 1.1, which only generate() applies (the generator
    # falls back to it); without it the loop serves the model.
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.0)
    prompts = [CHAT, [{"role": "user", "content": "Name three colours, please."}], "Once upon a time"]
    calls = []
    monkeypatch.setattr(
        model, "generate", lambda *a, _original=model.generate, **k: calls.append(1) or _original(*a, **k)
    )

    def token_ids(use_generate):
        generator = make_generator(model, tokenizer, max_new_tokens=8, do_sample=False, use_generate=use_generate)
        return [(c.token_ids, c.finish_reason) for (c,) in generator.generate(prompts, 1)]

    looped = token_ids(False)
    assert not calls, "the decoding loop should serve this model"
    assert looped == token_ids(True) and calls


@pytest.mark.parametrize("family", ZOO_FAMILIES)
def test_packed_and_padded_micro_batches_give_the_same_loss_and_gradients(zoo_models, family, tmp_path):
    path = zoo_models[family]

    def trainer(padding_free):
        args = IterativeSFTConfig(
            output_dir=str(tmp_path), report_to="none", save_strategy="no", padding_free=padding_free, seed=0
        )
        return IterativeSFTTrainer(path, args=args)

    padded = trainer(False)
    reason = packing.unsupported_reason(padded.model)
    if reason is not None:  # the engine trains this family padded; requiring packing says why
        with pytest.raises(ValueError, match=f"padding_free=True, but {reason}"):
            trainer(True)
        return
    texts = ["What is 12 + 7?", "The quick brown fox jumps over the lazy dog.", "Hi"]
    results = []
    for model_trainer in (padded, trainer(True)):
        model_trainer.optimizer = model_trainer.accelerator.prepare(
            torch.optim.SGD(model_trainer.model.parameters(), lr=1.0)
        )
        model_trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(model_trainer.optimizer, lambda _: 1.0)
        before = {name: p.detach().clone() for name, p in model_trainer.model.named_parameters()}
        stats = model_trainer.step(texts=texts)
        step = {name: before[name] - p.detach() for name, p in model_trainer.model.named_parameters()}
        results.append((stats, step))
    (padded_stats, padded_step), (packed_stats, packed_step) = results
    assert packed_stats["padding_fraction"] == 0.0 < padded_stats["padding_fraction"]
    assert packed_stats["loss"] == pytest.approx(padded_stats["loss"], rel=1e-5)
    for name in padded_step:
        torch.testing.assert_close(packed_step[name], padded_step[name], atol=1e-6, rtol=1e-4, msg=name)


def sampled_records(model, tokenizer):
    """Two chat prompts' completions sampled by the hf generator, as the loop's samples."""
    records = [PromptRecord(0, CHAT), PromptRecord(1, [{"role": "user", "content": "Say something nice."}])]
    generator = make_generator(model, tokenizer, max_new_tokens=8)
    completions = generator.generate([record.prompt for record in records], 3)
    return samples_from_completions(records, completions, "hf", 0)


@pytest.mark.parametrize("family", ZOO_FAMILIES)
@pytest.mark.parametrize("sample_tokenizer", ["completion-only", "chat"])
def test_kept_samples_train_on_exactly_the_sampled_token_ids(
    plugin_manager, zoo, zoo_models, family, sample_tokenizer
):
    model, tokenizer = zoo(family)
    samples = sampled_records(model, tokenizer)
    component = create_component("tokenizer", sample_tokenizer)
    component.setup(RunContext(trainer=types.SimpleNamespace(model=model), tokenizer=tokenizer))
    batch = component.tokenize(samples)
    eos_ids = set(generation_config_eos_ids(zoo_models[family]))
    re_encoded_differently = 0
    for sample, input_ids, labels in zip(samples, batch["input_ids"], batch["labels"]):
        sampled = sample.prompt_token_ids + sample.completion_token_ids
        assert input_ids[: len(sampled)] == sampled
        closing = input_ids[len(sampled) :]  # nothing after a sampled eos or a cut; else the eos or end of turn
        ended = sample.completion_token_ids[-1] in eos_ids or sample.info["finish_reason"] == "length"
        assert (closing == []) == ended
        assert labels[len(sample.prompt_token_ids) :] == input_ids[len(sample.prompt_token_ids) :]
        assert set(labels[: len(sample.prompt_token_ids)]) == {-100}
        text_ids = tokenizer(sample.completion, add_special_tokens=False)["input_ids"]
        re_encoded_differently += text_ids != sample.completion_token_ids
    assert re_encoded_differently, "decode -> encode should change some sampled ids, or this test proves nothing"
    assert samples[0].info["tokenizer_hash"] == tokenizer_fingerprint(tokenizer)


def test_the_loop_trains_on_the_ids_samples_parquet_records(plugin_manager, zoo_models, tmp_path):
    from iterframe.loop import IterativeLoop, LoopConfig
    from iterframe.loop.artifacts import read_samples, samples_path

    args = IterativeSFTConfig(output_dir=str(tmp_path / "trainer"), report_to="none", save_strategy="no")
    trainer = IterativeSFTTrainer(zoo_models["smollm2-instruct"], args=args)
    trained = []
    original_step = trainer.step
    trainer.step = lambda **batch: trained.extend(batch["input_ids"]) or original_step(**batch)
    prompts = [PromptRecord(0, CHAT), PromptRecord(1, "Once upon a time")]
    generator = create_component("generator", "hf", {"max_new_tokens": 6, "seed": 0})
    loop = IterativeLoop(
        trainer,
        prompts,
        generator,
        lambda prompts, completions, references: [1.0] * len(prompts),
        [],
        create_component("tokenizer", "completion-only"),
        config=LoopConfig(str(tmp_path / "run"), iterations=1, prompts_per_iteration=2, samples_per_prompt=2),
    )
    loop.run()
    rows = read_samples(samples_path(tmp_path / "run", 0))
    eos = trainer.processing_class.eos_token_id
    expected = [
        row["prompt_token_ids"]
        + row["completion_token_ids"]
        + ([] if row["completion_token_ids"][-1] == eos or row["finish_reason"] == "length" else [eos])
        for row in rows
    ]
    assert sorted(map(list, trained)) == sorted(expected)
    assert {row["tokenizer_hash"] for row in rows} == {tokenizer_fingerprint(trainer.processing_class)}
