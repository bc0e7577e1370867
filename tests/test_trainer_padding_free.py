"""Padding-free micro-batches: the same losses and gradients as padded ones, no sample attending to another,
and padded micro-batches wherever the model cannot train on packed rows."""

from __future__ import annotations

import pytest
import torch

from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.engine import packing, packing_support, step_inputs
from iterframe.testing import build_tiny_causal_lm, train_bpe_tokenizer

TEXTS = ["a b", "the quick brown fox jumps over the lazy dog", "hello world again", "x", "twelve plus seven"]


@pytest.fixture(scope="module")
def gqa_qwen2_path(tmp_path_factory):
    """A Qwen2-style model with grouped-query attention (4 query heads share 2 key/value heads)."""
    path = str(tmp_path_factory.mktemp("models") / "gqa-qwen2")
    build_tiny_causal_lm(path, train_bpe_tokenizer(), architecture="qwen2", num_key_value_heads=2)
    return path


def make_trainer(tmp_path, model_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=8,
        max_grad_norm=0.0,
        seed=0,
    )
    settings.update(overrides)
    return IterativeSFTTrainer(model_path, args=IterativeSFTConfig(**settings))


def loss_and_gradient(tmp_path, model_path, padding_free, **step_inputs):
    """The loss of one step() and the gradient of its update (plain SGD with lr 1, so the weight change)."""
    trainer = make_trainer(tmp_path, model_path, padding_free=padding_free)
    assert trainer.padding_free is padding_free
    trainer.optimizer = trainer.accelerator.prepare(torch.optim.SGD(trainer.model.parameters(), lr=1.0))
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    stats = trainer.step(**step_inputs)
    gradient = {name: before[name] - param.detach() for name, param in trainer.model.named_parameters()}
    return stats, gradient, trainer


@pytest.mark.parametrize("model_path", ["tiny_llama_path", "tiny_qwen2_path", "gqa_qwen2_path"])
def test_packed_rows_train_exactly_like_padded_micro_batches(request, tmp_path, model_path):
    path = request.getfixturevalue(model_path)
    padded_stats, padded, _ = loss_and_gradient(tmp_path / "padded", path, False, texts=TEXTS)
    packed_stats, packed, trainer = loss_and_gradient(tmp_path / "packed", path, True, texts=TEXTS)
    assert packed_stats["num_tokens"] == padded_stats["num_tokens"]
    assert packed_stats["loss"] == pytest.approx(padded_stats["loss"], rel=1e-5)
    for name in padded:
        torch.testing.assert_close(packed[name], padded[name], atol=1e-6, rtol=1e-4, msg=name)
    assert packed_stats["padding_fraction"] == 0.0 < padded_stats["padding_fraction"]
    assert trainer.model.config._attn_implementation == "sdpa", "the model's own kernel is back after the step"


def test_prompt_masked_labels_train_the_same_packed_or_padded(tmp_path, tiny_llama_path):
    tokenizer = make_trainer(tmp_path / "t", tiny_llama_path).processing_class
    input_ids = [tokenizer(text)["input_ids"] for text in TEXTS]
    labels = [[-100] * (len(ids) // 2) + ids[len(ids) // 2 :] for ids in input_ids]  # loss on the second half
    inputs = dict(input_ids=[torch.tensor(ids) for ids in input_ids], labels=[torch.tensor(x) for x in labels])
    padded_stats, padded, _ = loss_and_gradient(tmp_path / "padded", tiny_llama_path, False, **inputs)
    packed_stats, packed, _ = loss_and_gradient(tmp_path / "packed", tiny_llama_path, True, **inputs)
    assert (
        packed_stats["num_tokens"]
        == padded_stats["num_tokens"]
        == sum(sum(label != -100 for label in row[1:]) for row in labels)
    )
    assert packed_stats["loss"] == pytest.approx(padded_stats["loss"], rel=1e-5)
    for name in padded:
        torch.testing.assert_close(packed[name], padded[name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_recomputes_within_each_sample(tmp_path, tiny_llama_path, use_reentrant):
    padded_stats, padded, _ = loss_and_gradient(tmp_path / "padded", tiny_llama_path, False, texts=TEXTS)
    trainer = make_trainer(
        tmp_path / "ckpt",
        tiny_llama_path,
        padding_free=True,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": use_reentrant},
    )
    assert trainer.model.model.layers[0].gradient_checkpointing, "the config alone turns checkpointing on"
    trainer.optimizer = trainer.accelerator.prepare(torch.optim.SGD(trainer.model.parameters(), lr=1.0))
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    stats = trainer.step(texts=TEXTS)
    assert stats["loss"] == pytest.approx(padded_stats["loss"], rel=1e-5)
    for name, param in trainer.model.named_parameters():
        torch.testing.assert_close(before[name] - param.detach(), padded[name], atol=1e-6, rtol=1e-4, msg=name)


def test_no_sample_attends_to_another_in_a_packed_row(tiny_llama_path):
    trainer = IterativeSFTTrainer(tiny_llama_path, args=IterativeSFTConfig(output_dir="unused", report_to="none"))
    model, tokenizer = trainer.model.eval(), trainer.processing_class
    first, second = (torch.tensor(tokenizer(text)["input_ids"]) for text in TEXTS[1:3])
    with torch.no_grad():
        alone = model(input_ids=second[None]).logits[0]
        row = torch.cat([first, second])[None]
        positions = torch.cat([torch.arange(len(first)), torch.arange(len(second))])[None]
        with packing.packed_attention(model, [(0, len(first)), (len(first), row.shape[1])]) as layout:
            packed = model(input_ids=row, position_ids=positions).logits
        one_causal_row = model(input_ids=row).logits[0, len(first) :]
    torch.testing.assert_close(packed[0, len(first) :], alone, atol=1e-5, rtol=1e-4)
    assert layout.calls == model.config.num_hidden_layers, "one attention call per layer for the whole row"
    assert not torch.allclose(one_causal_row, alone, atol=1e-3), "in one causal row, sample 2 sees sample 1"


def test_models_that_cannot_pack_train_padded_or_are_refused_when_packing_is_required(tmp_path, tiny_t5_path):
    assert make_trainer(tmp_path / "auto", tiny_t5_path).padding_free is False
    with pytest.raises(
        ValueError, match="padding_free=True, but the model is an encoder-decoder; set padding_free"
    ):
        make_trainer(tmp_path / "required", tiny_t5_path, padding_free=True)


def test_other_attention_kernels_train_padded(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    assert trainer.padding_free is True
    trainer.model.config._attn_implementation = "flex_attention"
    assert "'flex_attention' attention kernel" in packing.unsupported_reason(trainer.model)


def test_pad_to_multiple_of_keeps_padded_micro_batches_and_conflicts_with_required_packing(
    tmp_path, tiny_llama_path
):
    assert make_trainer(tmp_path, tiny_llama_path, pad_to_multiple_of=8).padding_free is False
    with pytest.raises(ValueError, match="padding_free=True leaves no padding to round, but pad_to_multiple_of="):
        IterativeSFTConfig(output_dir=str(tmp_path), padding_free=True, pad_to_multiple_of=8)


def test_a_model_that_bypasses_the_attention_interface_is_an_error_not_a_silent_mix(tiny_llama_path):
    trainer = IterativeSFTTrainer(tiny_llama_path, args=IterativeSFTConfig(output_dir="unused", report_to="none"))
    with pytest.raises(RuntimeError, match="did not call transformers' attention interface"):
        with packing.packed_attention(trainer.model, [(0, 3)]):
            pass  # stands for a forward pass that never reached packed_sdpa
    assert trainer.model.config._attn_implementation == "sdpa"
    assert not hasattr(trainer.model.config, packing.LAYOUT_ATTRIBUTE), "no layout is left on the config"


def test_packed_attention_outside_a_packed_step_is_an_error(tiny_llama_path):
    query = torch.zeros(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="only runs inside iterframe's padding-free training step"):
        packing.packed_sdpa(torch.nn.Module(), query, query, query)


def samples_of(lengths, loss_from=0):
    """Samples of the given lengths whose labels carry loss from position ``loss_from`` on."""
    return [
        step_inputs.TokenizedSample(
            input_ids=torch.arange(length) % 50 + 3,
            labels=torch.cat(
                [torch.full((min(loss_from, length),), -100), torch.arange(max(length - loss_from, 0)) + 3]
            ),
        )
        for length in lengths
    ]


def test_the_cost_model_pads_micro_batches_with_nothing_to_save_and_packs_those_with_padding(tiny_llama_path):
    trainer = IterativeSFTTrainer(tiny_llama_path, args=IterativeSFTConfig(output_dir="unused", report_to="none"))
    costs = packing_support.PackingCostModel(trainer.model)
    assert costs.body > 0 and costs.head == trainer.model.config.vocab_size * costs.hidden_size
    assert not costs(samples_of([7] * 8)), "equal lengths: packing only adds work"
    assert not costs(samples_of([8, 8, 8, 7])), "one padded position in 32: not worth the index copies"
    assert costs(samples_of([300, 12, 9, 5])), "most of the padded micro-batch would be padding"
    costs.head = 100 * costs.body  # a large vocabulary: the head dominates
    assert costs(samples_of([12] * 8, loss_from=9)), "packing skips the head on prompt positions"


def test_the_cost_model_counts_parameters_zero3_keeps_as_shards(tiny_llama_path):
    """Under DeepSpeed ZeRO-3 each process holds an empty shard of every parameter (``numel() == 0``) and the
    full size in ``ds_numel``/``ds_shape``: the costs are the unsharded model's."""
    trainer = IterativeSFTTrainer(tiny_llama_path, args=IterativeSFTConfig(output_dir="unused", report_to="none"))
    whole = packing_support.PackingCostModel(trainer.model)
    for parameter in trainer.model.parameters():
        parameter.ds_numel, parameter.ds_shape = parameter.numel(), tuple(parameter.shape)
        parameter.data = parameter.data.new_empty(0)
    sharded = packing_support.PackingCostModel(trainer.model)
    assert (sharded.body, sharded.head, sharded.hidden_size) == (whole.body, whole.head, whole.hidden_size)
    samples = samples_of([300, 12, 9, 5])
    assert sharded(samples) == whole(samples)


def test_step_chooses_packed_or_padded_per_micro_batch_when_padding_free_is_left_unset(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, per_device_train_batch_size=4, group_by_length=True)
    assert trainer.padding_free is True and trainer.args.padding_free is None
    micro_batches = trainer._micro_batches(samples_of([400, 400, 400, 400, 300, 3, 3, 2]))
    packed = {tuple(sorted(batch.sample_indices)): batch.segments is not None for batch in micro_batches}
    assert packed == {(0, 1, 2, 3): False, (4, 5, 6, 7): True}  # equal lengths padded, 300 beside 3s packed
    forced = make_trainer(tmp_path, tiny_llama_path, per_device_train_batch_size=4, padding_free=True)
    assert all(batch.segments is not None for batch in forced._micro_batches(samples_of([7, 7, 7, 7])))


def tiny_gemma3(vocab_size: int, **settings):
    from test_packing_architectures import ALTERNATING, COMMON
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("gemma3_text", **{**COMMON, **ALTERNATING, "vocab_size": vocab_size, **settings})
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def test_a_gemma3_with_bidirectional_attention_trains_each_sample_as_it_is_alone(tmp_path):
    tokenizer = train_bpe_tokenizer()
    model = tiny_gemma3(len(tokenizer), use_bidirectional_attention=True)
    generator = torch.Generator().manual_seed(0)
    input_ids = [torch.randint(3, len(tokenizer), (length,), generator=generator) for length in (9, 4, 7)]
    with torch.no_grad():
        alone = [float(model(input_ids=ids[None], labels=ids[None]).loss) * (len(ids) - 1) for ids in input_ids]
    expected = sum(alone) / sum(len(ids) - 1 for ids in input_ids)
    trainer = IterativeSFTTrainer(
        model,
        args=IterativeSFTConfig(output_dir=str(tmp_path), report_to="none", learning_rate=0.0, use_cpu=True),
        processing_class=tokenizer,
    )
    assert trainer.step(input_ids=input_ids)["loss"] == pytest.approx(expected, rel=1e-5)


def test_packing_is_refused_by_the_config_switch_that_makes_attention_bidirectional(tmp_path):
    tokenizer = train_bpe_tokenizer()
    assert packing_support.unsupported_reason(tiny_gemma3(len(tokenizer))) is None
    model = tiny_gemma3(len(tokenizer), use_bidirectional_attention=True)
    assert "use_bidirectional_attention" in packing_support.unsupported_reason(model)
    assert not packing_support.ignores_right_padding(model)
    with pytest.raises(ValueError, match="use_bidirectional_attention"):
        packing_support.resolve_padding_free(model, True, None)


def test_with_the_head_at_label_positions_prompt_masking_is_no_reason_to_pack(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    costs = trainer._packing_costs
    assert costs.head_at_labels, "padded micro-batches of this model run the head at label positions only"
    costs.head = 100 * costs.body  # a large vocabulary
    assert not costs(samples_of([12] * 8, loss_from=9)), "equal lengths: the head costs the same both ways"
    assert costs(samples_of([300, 12, 9, 5])), "most of the padded micro-batch would be padding"
