"""GGUF checkpoints are models: ``--model file.gguf`` (or ``gguf_file`` in ``model_init_kwargs``) loads the file's
weights dequantized, its tokenizer and chat template, trains, and leaves ordinary Hugging Face folders."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import transformers
from click.testing import CliRunner

from iterframe.api.model_check import check_model_reference
from iterframe.cli import cli
from iterframe.engine.loading import load_model, load_tokenizer
from iterframe.run_config import RunConfigError

pytest.importorskip("gguf")

CHAT_PROBLEMS = [
    ("What is 2 + 3?", "5"),
    ("What is 4 + 4?", "8"),
    ("What is 1 + 1?", "2"),
    ("What is 3 + 2?", "5"),
]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """``(path of a tiny GGUF file, the model and tokenizer it was written from)``."""
    from iterframe.testing import write_tiny_gguf

    path = str(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    model, tokenizer = write_tiny_gguf(path)
    return path, model, tokenizer


@pytest.fixture
def chat_dataset(tmp_path) -> str:
    path = tmp_path / "chat.jsonl"
    rows = [{"prompt": [{"role": "user", "content": q}], "answer": a} for q, a in CHAT_PROBLEMS]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_gguf_file_loads_the_weights_and_tokenizer_it_was_written_from(tiny_gguf):
    path, source_model, source_tokenizer = tiny_gguf
    model, tokenizer = load_model(path, {}), load_tokenizer(path)
    text = source_tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 12 + 7?"}], tokenize=False, add_generation_prompt=True
    )
    ids = source_tokenizer(text, return_tensors="pt")["input_ids"]
    loaded_ids = tokenizer(text, return_tensors="pt")["input_ids"].tolist()
    if transformers.__version__.startswith("4.") and loaded_ids[0][:1] == [tokenizer.bos_token_id]:
        loaded_ids = [loaded_ids[0][1:]]  # 4.x reads a GGUF BPE tokenizer as adding a bos, whatever the file says
    assert loaded_ids == ids.tolist()
    assert tokenizer.chat_template == source_tokenizer.chat_template
    assert model.generation_config.eos_token_id == source_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert torch.equal(model(ids).logits, source_model(ids).logits)
    assert getattr(model, "hf_quantizer", None) is None and "quantization_config" not in model.config.to_dict()


def test_gguf_weights_are_dequantized_to_the_configured_dtype(tiny_gguf):
    model = load_model(tiny_gguf[0], {"dtype": "bfloat16"})
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}


def test_gguf_file_in_model_init_kwargs_loads_from_its_folder(tiny_gguf):
    path, source_model, _ = tiny_gguf
    model = load_model(os.path.dirname(path), {"gguf_file": os.path.basename(path)})
    assert torch.equal(model.lm_head.weight, source_model.lm_head.weight)


def test_run_on_a_gguf_file_trains_and_leaves_plain_hugging_face_folders(tiny_gguf, chat_dataset, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, source_model, source_tokenizer = tiny_gguf
    output_dir = str(tmp_path / "run")
    result = CliRunner().invoke(cli, [
        "run", "--model", path, "--dataset", chat_dataset, "--reference-column", "answer",
        "--reward", "answer-match", "--filter", "best-of-n", "--iterations", "1",
        "--prompts-per-iteration", "2", "--samples-per-prompt", "2", "--eval-fraction", "0.5",
        "--set", "generator.max_new_tokens=3", "--set", "train.learning_rate=1e-2",
        "--output-dir", output_dir, "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    final = os.path.join(output_dir, "final")
    checkpoints = [os.path.join(root) for root, _, files in os.walk(output_dir) if "model.safetensors" in files]
    assert final in checkpoints and len(checkpoints) >= 2  # final/ and the iteration's checkpoint
    for folder in checkpoints:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            assert "quantization_config" not in json.load(handle)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(final), AutoTokenizer.from_pretrained(final)
    assert tokenizer.chat_template == source_tokenizer.chat_template
    assert model.generation_config.eos_token_id == source_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert not torch.equal(model.lm_head.weight, source_model.lm_head.weight)  # trained


def test_saved_config_writes_rope_theta_for_transformers_4(tiny_gguf, tmp_path):
    load_model(tiny_gguf[0], {}).save_pretrained(tmp_path)
    with open(tmp_path / "config.json", encoding="utf-8") as handle:
        config = tiny_gguf[1].config
        rope = getattr(config, "rope_parameters", None) or {"rope_theta": config.rope_theta}  # 5.x / 4.x
        assert json.load(handle)["rope_theta"] == rope["rope_theta"]


def test_gguf_model_without_the_gguf_package_names_the_extra(tiny_gguf, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(RunConfigError, match=r"pip install 'iterframe\[gguf\]'"):
        check_model_reference(tiny_gguf[0])
    with pytest.raises(ImportError, match=r"pip install 'iterframe\[gguf\]'"):
        load_model(tiny_gguf[0], {})


def test_gguf_file_missing_from_the_model_folder_is_refused(tiny_gguf):
    folder = os.path.dirname(tiny_gguf[0])
    with pytest.raises(RunConfigError, match="gguf_file='other.gguf', which is not in the model folder"):
        check_model_reference(folder, {"gguf_file": "other.gguf"})


def test_gguf_file_named_twice_differently_is_refused(tiny_gguf):
    with pytest.raises(ValueError, match="pass the file once"):
        load_model(tiny_gguf[0], {"gguf_file": "other.gguf"})
