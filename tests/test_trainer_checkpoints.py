"""Logging, evaluation, checkpoints, save_total_limit, report_to and the model card."""

import json
import os

import datasets
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from iterframe import IterativeSFTConfig, IterativeSFTTrainer

TEXTS = ["hello world", "the quick brown fox", "abc", "twelve plus seven"]


def make_trainer(tmp_path, model_path, **overrides):
    settings = {"output_dir": str(tmp_path / "out"), "report_to": "none", "per_device_train_batch_size": 2}
    settings.update(overrides)
    return IterativeSFTTrainer(model_path, args=IterativeSFTConfig(**settings))


def read_card(path):
    text = open(path, encoding="utf-8").read()
    _, front_matter, body = text.split("---", 2)
    return yaml.safe_load(front_matter), body


def test_logging_steps_are_honoured(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, logging_steps=2, save_strategy="no")
    for _ in range(5):
        trainer.step(texts=TEXTS[:2])
    logged_steps = [entry["step"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged_steps == [2, 4]
    assert all({"loss", "learning_rate", "grad_norm"} <= entry.keys() for entry in trainer.state.log_history)


def test_save_steps_write_complete_hf_checkpoints(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, save_steps=2)
    for _ in range(2):
        trainer.step(texts=TEXTS[:2])
    checkpoint = tmp_path / "out" / "checkpoint-2"
    files = set(os.listdir(checkpoint))
    for expected in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "trainer_state.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "README.md",
    ):
        assert expected in files, expected
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 2
    reloaded = AutoModelForCausalLM.from_pretrained(checkpoint)
    for name, param in trainer.model.named_parameters():
        torch.testing.assert_close(reloaded.state_dict()[name], param.detach())


def test_save_total_limit_keeps_only_the_newest_checkpoints(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, save_steps=1, save_total_limit=2)
    for _ in range(4):
        trainer.step(texts=TEXTS[:1])
    kept = sorted(name for name in os.listdir(tmp_path / "out") if name.startswith("checkpoint-"))
    assert kept == ["checkpoint-3", "checkpoint-4"]


def test_eval_steps_with_eval_dataset_evaluate(tmp_path, tiny_llama_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    eval_dataset = datasets.Dataset.from_dict({"input_ids": [tokenizer(text)["input_ids"] for text in TEXTS]})
    args = IterativeSFTConfig(
        output_dir=str(tmp_path / "out"), report_to="none", eval_strategy="steps", eval_steps=2, save_strategy="no"
    )
    trainer = IterativeSFTTrainer(tiny_llama_path, args=args, eval_dataset=eval_dataset)
    for _ in range(4):
        trainer.step(texts=TEXTS[:2])
    eval_steps = [entry["step"] for entry in trainer.state.log_history if "eval_loss" in entry]
    assert eval_steps == [2, 4]


def test_report_to_tensorboard_writes_event_files(tmp_path, tiny_llama_path):
    pytest.importorskip("tensorboard")
    trainer = make_trainer(tmp_path, tiny_llama_path, report_to="tensorboard", logging_steps=1, save_strategy="no")
    trainer.step(texts=TEXTS)
    trainer.callback_handler.on_train_end(trainer.args, trainer.state, trainer.control)
    events = [name for _, _, names in os.walk(tmp_path) for name in names if name.startswith("events.out")]
    assert events


def test_load_checkpoint_restores_weights_optimizer_and_step(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, save_strategy="no")
    saved_step = trainer.step(texts=TEXTS)["global_step"]
    path = trainer.save_checkpoint()
    assert path.endswith(f"checkpoint-{saved_step}")
    saved = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    trainer.step(texts=TEXTS)

    fresh = make_trainer(tmp_path, tiny_llama_path, save_strategy="no")
    assert fresh.load_checkpoint() == path
    assert fresh.state.global_step == saved_step
    for name, param in fresh.model.named_parameters():
        torch.testing.assert_close(param.detach(), saved[name])
    assert len(fresh.optimizer.state) > 0
    assert fresh.step(texts=TEXTS)["global_step"] == 2 * saved_step


def test_load_checkpoint_keeps_this_process_s_own_rank_flags(tmp_path, tiny_llama_path, monkeypatch):
    trainer = make_trainer(tmp_path, tiny_llama_path, save_strategy="no")
    trainer.step(texts=TEXTS)
    trainer.save_checkpoint()  # written by the main process: its trainer_state.json says "process zero"

    other = make_trainer(tmp_path, tiny_llama_path, save_strategy="no")
    monkeypatch.setattr(other, "is_world_process_zero", lambda: False)
    monkeypatch.setattr(other, "is_local_process_zero", lambda: False)
    other.load_checkpoint()
    assert other.state.is_world_process_zero is False
    assert other.state.is_local_process_zero is False


def test_load_checkpoint_without_any_checkpoint_is_a_clear_error(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    (tmp_path / "out").mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        trainer.load_checkpoint()


def test_create_model_card_writes_metadata_and_tags(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    trainer.step(texts=TEXTS)
    path = trainer.create_model_card(model_name="my-model", dataset_name="math-prompts", tags=["rest-em"])
    assert path == str(tmp_path / "out" / "README.md")
    metadata, body = read_card(path)
    assert {"iterframe", "iterative-sft", "rest-em"} <= set(metadata["tags"])
    assert metadata["model_name"] == "my-model"
    assert metadata["datasets"] == ["math-prompts"]
    assert tiny_llama_path in body
    assert "base_model" not in metadata  # a local path is no hub id


def test_model_card_names_a_hub_base_model_in_metadata(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    trainer.base_model_id = "some-org/some-model"
    metadata, _ = read_card(trainer.create_model_card())
    assert metadata["base_model"] == "some-org/some-model"


def test_checkpoints_carry_the_model_card(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, save_strategy="no")
    trainer.step(texts=TEXTS)
    metadata, _ = read_card(os.path.join(trainer.save_checkpoint(), "README.md"))
    assert "iterative-sft" in metadata["tags"]
