import os
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from iterframe import IterativeSFTConfig, IterativeSFTTrainer


def make_args(tmp_path, **overrides):
    return IterativeSFTConfig(output_dir=str(tmp_path / "out"), report_to="none", **overrides)


def test_model_given_as_local_path_is_loaded(tmp_path, tiny_llama_path):
    trainer = IterativeSFTTrainer(tiny_llama_path, args=make_args(tmp_path))
    assert trainer.model.config.model_type == "llama"
    assert trainer.is_encoder_decoder is False
    assert trainer.processing_class.name_or_path == tiny_llama_path


def test_qwen2_style_model_loads_and_trains(tmp_path, tiny_qwen2_path):
    trainer = IterativeSFTTrainer(tiny_qwen2_path, args=make_args(tmp_path))
    assert trainer.model.config.model_type == "qwen2"
    assert trainer.step(texts=["hello world"])["global_step"] == 1


def test_encoder_decoder_path_loads_a_seq2seq_model(tmp_path, tiny_t5_path):
    trainer = IterativeSFTTrainer(tiny_t5_path, args=make_args(tmp_path))
    assert trainer.is_encoder_decoder is True
    assert trainer.model.config.model_type == "t5"


def test_model_init_kwargs_with_string_dtype_device_map_and_remote_code(tmp_path, tiny_llama_path):
    args = make_args(
        tmp_path,
        model_init_kwargs={"torch_dtype": "bfloat16", "device_map": "auto", "trust_remote_code": True},
    )
    trainer = IterativeSFTTrainer(tiny_llama_path, args=args)
    assert next(trainer.model.parameters()).dtype == torch.bfloat16


def test_model_init_kwargs_with_an_instantiated_model_warns(tmp_path, tiny_llama_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    args = make_args(tmp_path, model_init_kwargs={"dtype": "float32"})
    with pytest.warns(UserWarning, match="model_init_kwargs.*ignored"):
        IterativeSFTTrainer(model, args=args)


def test_args_none_gives_a_default_config_named_after_the_model(tmp_path, tiny_llama_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = IterativeSFTTrainer(tiny_llama_path)
    assert isinstance(trainer.args, IterativeSFTConfig)
    assert trainer.args.output_dir.endswith("tiny-llama-IterativeSFT")


def test_plain_training_arguments_are_converted(tmp_path, tiny_llama_path):
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), learning_rate=3e-4, gradient_accumulation_steps=3, report_to="none"
    )
    trainer = IterativeSFTTrainer(tiny_llama_path, args=args)
    assert isinstance(trainer.args, IterativeSFTConfig)
    assert trainer.args.learning_rate == 3e-4
    assert trainer.args.gradient_accumulation_steps == 3
    assert trainer.args.truncation_mode == "keep_end"


def test_args_of_the_wrong_type_are_rejected(tiny_llama_path):
    with pytest.raises(TypeError, match="IterativeSFTConfig or TrainingArguments"):
        IterativeSFTTrainer(tiny_llama_path, args={"learning_rate": 1e-4})


def test_tokenizer_is_loaded_from_the_model_and_pad_falls_back_to_eos(tmp_path, tiny_nopad_llama_path):
    assert AutoTokenizer.from_pretrained(tiny_nopad_llama_path).pad_token is None
    trainer = IterativeSFTTrainer(tiny_nopad_llama_path, args=make_args(tmp_path))
    assert trainer.processing_class.pad_token == trainer.processing_class.eos_token


def test_tiny_model_generates_from_what_its_saved_tokenizer_returns(tiny_llama_path):
    # a transformers 4.x tokenizer also returns token_type_ids unless told what the model takes; generate() refuses
    # them
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    encoded = tokenizer("1+2=", return_tensors="pt")
    assert sorted(encoded) == ["attention_mask", "input_ids"]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    output = model.generate(**encoded, min_new_tokens=2, max_new_tokens=2, pad_token_id=tokenizer.pad_token_id)
    assert output.shape == (1, encoded["input_ids"].shape[1] + 2)


def test_missing_tokenizer_without_a_model_path_is_a_clear_error(tmp_path, tiny_llama_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    model.config._name_or_path = ""
    with pytest.raises(ValueError, match="processing_class is required"):
        IterativeSFTTrainer(model, args=make_args(tmp_path))


def test_deprecated_kwargs_warn_and_are_forwarded_into_args(tmp_path, tiny_llama_path):
    args = make_args(tmp_path)
    with pytest.warns(FutureWarning) as caught:
        trainer = IterativeSFTTrainer(
            tiny_llama_path, args=args, max_length=7, truncation_mode="keep_start", optimize_device_cache=True
        )
    assert len([w for w in caught if issubclass(w.category, FutureWarning)]) >= 3
    assert (trainer.args.max_length, trainer.args.truncation_mode) == (7, "keep_start")
    assert trainer.args.optimize_device_cache is True


def test_deprecated_truncation_mode_kwarg_is_validated(tmp_path, tiny_llama_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(ValueError, match="truncation_mode='middle'"):
            IterativeSFTTrainer(tiny_llama_path, args=make_args(tmp_path), truncation_mode="middle")


def test_construction_writes_nothing_to_the_output_dir(tmp_path, tiny_llama_path):
    IterativeSFTTrainer(tiny_llama_path, args=make_args(tmp_path))
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []
