"""LoRA adapters: only adapters train, checkpoints hold adapters, merged export loads standalone."""

import os

import pytest
import torch

peft = pytest.importorskip("peft")

from transformers import AutoModelForCausalLM  # noqa: E402

from iterframe import IterativeSFTConfig, IterativeSFTTrainer  # noqa: E402
from iterframe.engine.adapters import build_lora_config, merged_copy  # noqa: E402


def make_trainer(tmp_path, model_path, **config_overrides):
    args = IterativeSFTConfig(
        output_dir=str(tmp_path / "out"), report_to="none", learning_rate=1e-2, save_strategy="no"
    )
    return IterativeSFTTrainer(
        model_path, args=args, peft_config=build_lora_config(r=4, alpha=8, **config_overrides)
    )


def test_only_adapter_weights_change(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.step(texts=["hello world", "the quick brown fox"])
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(before[name], p)}
    assert changed, "adapters must train"
    assert all("lora_" in name for name in changed)
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)


def test_checkpoints_hold_adapters_and_merged_export_loads(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    trainer.step(texts=["hello world", "the quick brown fox"])
    checkpoint = trainer.save_checkpoint()
    files = set(os.listdir(checkpoint))
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    assert "model.safetensors" not in files

    merged_dir = tmp_path / "merged"
    merged_copy(trainer.model, str(merged_dir))
    reloaded = AutoModelForCausalLM.from_pretrained(merged_dir)
    ids = torch.tensor([trainer.processing_class("hello world")["input_ids"]])
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(input_ids=ids).logits
        actual = reloaded(input_ids=ids).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_generation_uses_the_adapters(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    ids = torch.tensor([trainer.processing_class("hello")["input_ids"]])
    trainer.model.eval()
    with torch.no_grad():
        base_logits = trainer.model(input_ids=ids).logits.clone()
    for _ in range(3):
        trainer.step(texts=["hello world"])
    trainer.model.eval()
    with torch.no_grad():
        assert not torch.allclose(trainer.model(input_ids=ids).logits, base_logits)
        with trainer.model.disable_adapter():
            torch.testing.assert_close(trainer.model(input_ids=ids).logits, base_logits)


def test_bad_lora_settings_are_clear_errors():
    with pytest.raises(ValueError, match="rank r=0"):
        build_lora_config(r=0)
    with pytest.raises(ValueError, match="dropout"):
        build_lora_config(dropout=1.5)


def test_peft_config_of_the_wrong_type_is_rejected(tmp_path, tiny_llama_path):
    args = IterativeSFTConfig(output_dir=str(tmp_path / "out"), report_to="none")
    with pytest.raises(TypeError, match="peft.PeftConfig"):
        IterativeSFTTrainer(tiny_llama_path, args=args, peft_config={"r": 8})


def test_comma_separated_target_modules(tmp_path, tiny_llama_path):
    config = build_lora_config(target_modules="q_proj, v_proj")
    assert set(config.target_modules) == {"q_proj", "v_proj"}


PROMPT_LEARNING_CONFIGS = {
    "PromptTuningConfig": lambda: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    "PrefixTuningConfig": lambda: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
}


@pytest.mark.parametrize("name", sorted(PROMPT_LEARNING_CONFIGS))
def test_prompt_learning_adapters_are_refused_up_front_by_name(tmp_path, tiny_llama_path, name):
    args = IterativeSFTConfig(output_dir=str(tmp_path / "out"), report_to="none")
    with pytest.raises(ValueError, match=rf"{name}.*virtual tokens.*LoraConfig"):
        IterativeSFTTrainer(tiny_llama_path, args=args, peft_config=PROMPT_LEARNING_CONFIGS[name]())
    model = peft.get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama_path), PROMPT_LEARNING_CONFIGS[name]()
    )
    with pytest.raises(ValueError, match=rf"{name}.*virtual tokens.*LoraConfig"):
        IterativeSFTTrainer(model, args=args)


def test_adapters_start_from_weights_the_seed_decides(tmp_path, tiny_llama_path):
    def lora_weights():
        trainer = make_trainer(tmp_path, tiny_llama_path)
        return {name: p.detach().clone() for name, p in trainer.model.named_parameters() if "lora_" in name}

    first = lora_weights()
    torch.rand(1000)  # whatever ran before the trainer was built
    second = lora_weights()
    assert first.keys() == second.keys() and first
    assert all(torch.equal(first[name], second[name]) for name in first)
