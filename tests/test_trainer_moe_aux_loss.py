"""Mixture-of-experts models with ``output_router_logits=True`` train on transformers' own loss: the token
cross-entropy plus ``router_aux_loss_coef`` times the router's load-balancing loss."""

from __future__ import annotations

import warnings

import pytest
import torch

from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.engine import packing_support
from iterframe.testing import train_bpe_tokenizer

MOE_ARCHITECTURES = {
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32
    ),
}
#: Lengths of the samples; the labels of each sample's first half are -100.
LENGTHS = [9, 5, 12, 7]


def tiny_moe(model_type: str, tokenizer, output_router_logits: bool = True):
    from transformers import AutoConfig, AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = AutoConfig.for_model(
            model_type,
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            output_router_logits=output_router_logits,
            router_aux_loss_coef=0.5,
            initializer_range=0.2,
            pad_token_id=tokenizer.pad_token_id,
            **MOE_ARCHITECTURES[model_type],
        )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def samples(vocab: int):
    generator = torch.Generator().manual_seed(3)
    input_ids = [torch.randint(3, vocab, (length,), generator=generator) for length in LENGTHS]
    labels = [ids.clone() for ids in input_ids]
    for label in labels:
        label[: len(label) // 2] = -100
    return input_ids, labels


def hf_loss_and_gradient(model, input_ids, labels, pad_id):
    """transformers' own loss of the samples as one right-padded batch, and its gradient."""
    longest = max(len(ids) for ids in input_ids)
    batch = torch.full((len(input_ids), longest), pad_id)
    target = torch.full((len(input_ids), longest), -100)
    mask = torch.zeros((len(input_ids), longest), dtype=torch.long)
    for row, (ids, label) in enumerate(zip(input_ids, labels)):
        batch[row, : len(ids)], target[row, : len(ids)], mask[row, : len(ids)] = ids, label, 1
    model.zero_grad()
    outputs = model(input_ids=batch, attention_mask=mask, labels=target)
    outputs.loss.backward()
    gradient = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return float(outputs.loss.detach()), gradient


def step_loss_and_gradient(tmp_path, model, tokenizer, input_ids, labels, padding_free):
    trainer = IterativeSFTTrainer(
        model,
        args=IterativeSFTConfig(
            output_dir=str(tmp_path),
            report_to="none",
            per_device_train_batch_size=len(input_ids),
            max_grad_norm=0.0,
            padding_free=padding_free,
            use_cpu=True,
        ),
        processing_class=tokenizer,
    )
    trainer.optimizer = trainer.accelerator.prepare(torch.optim.SGD(trainer.model.parameters(), lr=1.0))
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    stats = trainer.step(input_ids=input_ids, labels=labels)
    return stats, {name: before[name] - p.detach() for name, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("padding_free", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("model_type", sorted(MOE_ARCHITECTURES))
def test_moe_models_train_on_transformers_loss_with_the_router_aux_loss(tmp_path, model_type, padding_free):
    tokenizer = train_bpe_tokenizer()
    model = tiny_moe(model_type, tokenizer)
    if padding_free and packing_support.unsupported_reason(model) is not None:
        pytest.skip(packing_support.unsupported_reason(model))
    input_ids, labels = samples(len(tokenizer))
    hf_loss, hf_gradient = hf_loss_and_gradient(model, input_ids, labels, tokenizer.pad_token_id)
    model.zero_grad()
    stats, gradient = step_loss_and_gradient(tmp_path, model, tokenizer, input_ids, labels, padding_free)
    assert stats["loss"] == pytest.approx(hf_loss, rel=1e-5)
    for name, expected in hf_gradient.items():
        torch.testing.assert_close(gradient[name], expected, atol=1e-6, rtol=1e-4, msg=name)


def test_the_router_aux_loss_counts_in_the_loss(tmp_path):
    """The control: with ``output_router_logits=False`` the same model's loss is the cross-entropy alone."""
    tokenizer = train_bpe_tokenizer()
    input_ids, labels = samples(len(tokenizer))
    with_aux = tiny_moe("mixtral", tokenizer)
    without_aux = tiny_moe("mixtral", tokenizer, output_router_logits=False)
    aux_stats, _ = step_loss_and_gradient(tmp_path / "aux", with_aux, tokenizer, input_ids, labels, False)
    plain_stats, _ = step_loss_and_gradient(tmp_path / "plain", without_aux, tokenizer, input_ids, labels, False)
    assert aux_stats["loss"] > plain_stats["loss"] + 0.1  # 0.5 x a load-balancing loss of at least 1
