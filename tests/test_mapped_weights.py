"""Trainable weights loaded as views of their checkpoint file get memory of their own when the trainer is built
(``iterframe.engine.mapped_weights``): the same values and ``Parameter`` objects, tied weights still tied, frozen
weights left mapped, and the checkpoint file never written."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.engine import mapped_weights
from iterframe.engine.mapped_weights import file_mapped_ranges, is_file_mapped, own_trainable_weights

needs_maps = pytest.mark.skipif(file_mapped_ranges() is None, reason="the system has no /proc/self/maps")


def mapped(tensor) -> bool:
    return is_file_mapped(tensor, file_mapped_ranges())


def trainer_config(tmp_path) -> IterativeSFTConfig:
    return IterativeSFTConfig(output_dir=str(tmp_path / "out"), report_to="none", save_strategy="no")


def checkpoint_digest(folder) -> str:
    with open(os.path.join(folder, "model.safetensors"), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@needs_maps
def test_tensors_read_from_a_safetensors_file_are_found_mapped_and_others_not(tmp_path):
    path = str(tmp_path / "weights.safetensors")
    save_file({"weight": torch.randn(300, 300)}, path)
    loaded = load_file(path)["weight"]
    assert mapped(loaded)
    assert not mapped(torch.randn(300, 300))
    assert not mapped(loaded.clone())


def test_without_proc_maps_nothing_is_said_to_be_mapped(tmp_path):
    assert file_mapped_ranges(str(tmp_path / "missing")) is None


@needs_maps
def test_a_model_from_a_folder_trains_on_its_own_copy_of_the_weights(tiny_llama_path, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    parameters = dict(model.named_parameters())
    assert any(mapped(p) for p in parameters.values()), "from_pretrained no longer maps the file: nothing to test"
    before = {name: p.detach().clone() for name, p in parameters.items()}
    digest = checkpoint_digest(tiny_llama_path)

    trainer = IterativeSFTTrainer(model, args=trainer_config(tmp_path))

    after = dict(trainer.model.named_parameters())
    assert all(after[name] is parameters[name] for name in parameters)  # the optimizer holds these objects
    assert not any(mapped(p) for p in after.values())
    assert all(torch.equal(after[name], before[name]) for name in before)
    trainer.step(input_ids=[torch.tensor([1, 5, 6, 7, 2])] * 4)
    assert not all(torch.equal(after[name], before[name]) for name in before)
    assert checkpoint_digest(tiny_llama_path) == digest


@needs_maps
def test_tied_weights_stay_tied_and_frozen_weights_stay_mapped(tmp_path):
    from transformers import AutoModelForCausalLM

    from iterframe.testing import build_tiny_causal_lm

    folder = str(tmp_path / "tied")
    build_tiny_causal_lm(folder, tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_pretrained(folder)
    frozen = model.model.layers[0].mlp.down_proj.weight
    frozen.requires_grad_(False)
    assert mapped(frozen) and mapped(model.lm_head.weight)

    copied = own_trainable_weights(model)

    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not mapped(model.lm_head.weight)
    assert mapped(frozen)
    trainable = {
        p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters() if p.requires_grad
    }
    assert copied == sum(trainable.values())
    assert own_trainable_weights(model) == 0  # nothing left to copy


@needs_maps
def test_parameters_viewing_one_mapped_storage_share_one_copy(tmp_path):
    path = str(tmp_path / "fused.safetensors")
    save_file({"fused": torch.randn(8, 6)}, path)
    fused = load_file(path)["fused"]
    module = torch.nn.Module()
    module.first = torch.nn.Parameter(fused[:4])
    module.second = torch.nn.Parameter(fused[4:])
    expected = fused.clone()

    assert own_trainable_weights(module) == fused.untyped_storage().nbytes()

    assert not mapped(module.first)
    assert module.first.untyped_storage().data_ptr() == module.second.untyped_storage().data_ptr()
    with torch.no_grad():
        module.first.fill_(0.0)
    assert torch.equal(module.second, expected[4:])
    assert torch.equal(load_file(path)["fused"], expected)


def test_where_the_system_does_not_say_every_trainable_weight_is_copied(tmp_path, monkeypatch):
    monkeypatch.setattr(mapped_weights, "file_mapped_ranges", lambda: None)
    layer = torch.nn.Linear(4, 3)
    layer.bias.requires_grad_(False)
    weight, bias = layer.weight.untyped_storage().data_ptr(), layer.bias.untyped_storage().data_ptr()
    values = layer.weight.detach().clone()

    assert own_trainable_weights(layer) == 4 * 3 * 4

    assert layer.weight.untyped_storage().data_ptr() != weight
    assert layer.bias.untyped_storage().data_ptr() == bias
    assert torch.equal(layer.weight, values)
