"""``gradient_checkpointing`` in the config turns activation checkpointing on for ``step()`` (which never goes
through ``Trainer.train()``), with its kwargs, and lowers the activation memory a step holds."""

from __future__ import annotations

import pytest
import torch

from iterframe import IterativeSFTConfig, IterativeSFTTrainer

TEXTS = [" ".join(["the quick brown fox jumps over the lazy dog"] * 6)] * 4


def make_trainer(tmp_path, model, **overrides):
    settings = dict(output_dir=str(tmp_path), report_to="none", save_strategy="no", per_device_train_batch_size=4)
    return IterativeSFTTrainer(model, args=IterativeSFTConfig(**settings, **overrides))


def saved_activation_bytes(trainer) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one ``step()``'s forward pass: the activation
    memory held when the forward pass ends, the step's peak (parameters not counted)."""
    parameters = {param.untyped_storage().data_ptr() for param in trainer.model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    forward = trainer._loss_sum

    def measured_forward(batch):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            return forward(batch)

    trainer._loss_sum = measured_forward
    trainer.step(texts=TEXTS)
    return sum(saved.values())


@pytest.mark.parametrize("padding_free", [False, True])
def test_gradient_checkpointing_lowers_the_activation_memory_of_a_step(tmp_path, tiny_llama_path, padding_free):
    plain = make_trainer(tmp_path / "plain", tiny_llama_path, padding_free=padding_free)
    checkpointed = make_trainer(
        tmp_path / "ckpt", tiny_llama_path, padding_free=padding_free, gradient_checkpointing=True
    )
    assert checkpointed.model.is_gradient_checkpointing and not plain.model.is_gradient_checkpointing
    without, with_checkpointing = saved_activation_bytes(plain), saved_activation_bytes(checkpointed)
    assert with_checkpointing < 0.5 * without, (with_checkpointing, without)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_kwargs_reach_the_checkpoint_function(tmp_path, tiny_llama_path, use_reentrant):
    trainer = make_trainer(
        tmp_path,
        tiny_llama_path,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": use_reentrant},
    )
    layer = trainer.model.model.layers[0]
    assert layer.gradient_checkpointing and layer._gradient_checkpointing_func.keywords == {
        "use_reentrant": use_reentrant
    }
    stats = trainer.step(texts=TEXTS[:2])
    assert stats["num_updates"] == 1 and stats["grad_norm"] > 0


def test_without_gradient_checkpointing_nothing_is_recomputed(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    assert not trainer.model.is_gradient_checkpointing
    assert not any(getattr(layer, "gradient_checkpointing", False) for layer in trainer.model.model.layers)
