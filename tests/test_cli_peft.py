"""``iterframe run --peft lora``: only adapters train, checkpoints and final/ hold adapters, final/merged/ on
request, resume restores the adapters, and bad peft options are refused by name."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from iterframe.cli import cli
from iterframe.loop.artifacts import read_metrics
from iterframe.run_config import (
    RunConfigError,
    apply_flags,
    apply_overrides,
    load_config_file,
    resolve_run_config,
)


def _run_args(model: str, dataset: str, output_dir: str, *extra: str) -> list[str]:
    return [
        "run",
        "--model", model,
        "--dataset", dataset,
        "--reference-column", "answer",
        "--reward", "answer-match",
        "--iterations", "1",
        "--prompts-per-iteration", "2",
        "--samples-per-prompt", "2",
        "--set", "generator.max_new_tokens=3",
        "--set", "train.learning_rate=1e-2",
        "--output-dir", output_dir,
        "--quiet",
        *extra,
    ]  # fmt: skip


def _base_weights(model_path: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(model_path, "model.safetensors"))


def _lora_run(model, dataset, output_dir, *extra):
    args = _run_args(model, dataset, output_dir, "--peft", "lora", "--set", "peft.r=4", "--set", "peft.alpha=8")
    args += ["--set", "peft.target_modules=q_proj,v_proj", *extra]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_lora_run_writes_adapters_to_final_and_leaves_base_weights(tiny_llama_path, arithmetic_path, tmp_path):
    before = _base_weights(tiny_llama_path)
    output_dir = str(tmp_path / "run")
    result = _lora_run(tiny_llama_path, arithmetic_path, output_dir)
    assert result.exit_code == 0, result.output
    final = os.path.join(output_dir, "final")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(final))
    assert not os.path.exists(os.path.join(final, "model.safetensors"))
    adapter_config = json.loads(open(os.path.join(final, "adapter_config.json")).read())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (4, 8)
    assert set(adapter_config["target_modules"]) == {"q_proj", "v_proj"}
    adapters = load_file(os.path.join(final, "adapter_model.safetensors"))
    assert adapters and all("lora_" in name for name in adapters)
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in adapters.items())  # trained
    after = _base_weights(tiny_llama_path)
    assert all(torch.equal(before[name], after[name]) for name in before)
    saved = load_config_file(os.path.join(output_dir, "config.yaml"))
    assert saved["peft"]["r"] == 4 and saved["peft"]["target_modules"] == ["q_proj", "v_proj"]


def test_lora_final_model_card_names_the_run_not_its_temporary_folder(tiny_llama_path, arithmetic_path, tmp_path):
    output_dir = str(tmp_path / "my-run")
    result = _lora_run(tiny_llama_path, arithmetic_path, output_dir)
    assert result.exit_code == 0, result.output
    with open(os.path.join(output_dir, "final", "README.md"), encoding="utf-8") as handle:
        card = handle.read()
    assert ".tmp" not in card
    assert "model_name: my-run\n" in card


def test_only_adapter_parameters_train(tiny_llama_path, tmp_path):
    from iterframe.api.execution import load_trainer

    config = apply_overrides(
        apply_flags(
            {}, model=tiny_llama_path, output_dir=str(tmp_path / "run"), reward="answer-match", peft="lora"
        ),
        ["peft.target_modules=q_proj"],
    )
    trainer = load_trainer(resolve_run_config(config))
    trainable = [name for name, parameter in trainer.model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name and "q_proj" in name for name in trainable)


def test_lora_final_loads_from_any_folder_when_the_base_model_was_given_as_a_relative_path(
    tiny_llama_path, arithmetic_path, tmp_path, monkeypatch
):
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(os.path.dirname(tiny_llama_path))
    output_dir = str(tmp_path / "run")
    result = _lora_run(os.path.basename(tiny_llama_path), arithmetic_path, output_dir)
    assert result.exit_code == 0, result.output
    final = os.path.join(output_dir, "final")
    adapter_config = json.loads(open(os.path.join(final, "adapter_config.json")).read())
    assert adapter_config["base_model_name_or_path"] == os.path.abspath(tiny_llama_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = AutoModelForCausalLM.from_pretrained(final)
    assert any("lora_B" in name for name, _ in model.named_parameters())


def test_resume_restores_the_adapters_and_continues(tiny_llama_path, arithmetic_path, tmp_path):
    output_dir = str(tmp_path / "run")
    assert _lora_run(tiny_llama_path, arithmetic_path, output_dir).exit_code == 0
    first_adapters = load_file(os.path.join(output_dir, "final", "adapter_model.safetensors"))
    result = _lora_run(tiny_llama_path, arithmetic_path, output_dir, "--resume", "--iterations", "2")
    assert result.exit_code == 0, result.output
    rows = read_metrics(os.path.join(output_dir, "metrics.jsonl"))
    assert [row["iteration"] for row in rows] == [0, 1]
    assert rows[1]["global_step"] > rows[0]["global_step"]
    checkpoints = os.listdir(os.path.join(output_dir, "checkpoints"))
    assert checkpoints
    second_adapters = load_file(os.path.join(output_dir, "final", "adapter_model.safetensors"))
    assert set(second_adapters) == set(first_adapters)
    assert any(not torch.equal(first_adapters[name], second_adapters[name]) for name in first_adapters)


def test_merge_final_writes_a_standalone_merged_model(tiny_llama_path, arithmetic_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    output_dir = str(tmp_path / "run")
    result = _lora_run(tiny_llama_path, arithmetic_path, output_dir, "--set", "peft.merge_final=true")
    assert result.exit_code == 0, result.output
    merged_dir = os.path.join(output_dir, "final", "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama_path), os.path.join(output_dir, "final")
    ).eval()
    input_ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = adapted(input_ids=input_ids).logits
        got = merged.eval()(input_ids=input_ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert os.path.isfile(os.path.join(merged_dir, "tokenizer_config.json"))


def test_yaml_peft_section_is_read(tiny_llama_path, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        f"model: {tiny_llama_path}\nreward: answer-match\noutput_dir: {tmp_path / 'run'}\n"
        "peft: {method: lora, r: 2, alpha: 4, dropout: 0.0, target_modules: [q_proj, v_proj], merge_final: true}\n"
    )
    peft = resolve_run_config(load_config_file(str(path))).peft
    assert (peft.method, peft.r, peft.alpha, peft.dropout, peft.merge_final) == ("lora", 2, 4, 0.0, True)
    assert peft.target_modules == ["q_proj", "v_proj"]


def test_no_peft_section_means_full_fine_tuning(tiny_llama_path, tmp_path):
    config = apply_flags({}, model=tiny_llama_path, output_dir=str(tmp_path), reward="answer-match")
    assert resolve_run_config(config).peft is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["peft.r=0"], "r=0 must be a positive integer"),
        (["peft.r=big"], "option 'r' expects int"),
        (["peft.alpha=0"], "alpha=0 must be a positive integer"),
        (["peft.dropout=1.5"], "dropout=1.5 must be in [0, 1)"),
        (["peft.target_modules="], "target_modules is empty"),
        (["peft.target_modules=all-linear,q_proj"], "all-linear stands alone"),
        (["peft.rank=8"], "peft section has no option 'rank'. Valid options: alpha"),
        (["peft=adalora"], "method 'adalora' is not supported"),
    ],
)
def test_bad_peft_options_are_refused_by_name(tiny_llama_path, tmp_path, overrides, message):
    config = apply_flags({}, model=tiny_llama_path, output_dir=str(tmp_path), reward="answer-match", peft="lora")
    with pytest.raises(RunConfigError) as error:
        resolve_run_config(apply_overrides(config, overrides))
    assert message in str(error.value)


@pytest.mark.parametrize("text", ["q_proj,v_proj", "q_proj, v_proj", '["q_proj", "v_proj"]'])
def test_target_modules_given_as_one_comma_separated_string_are_module_names(tiny_llama_path, tmp_path, text):
    config = apply_flags({}, model=tiny_llama_path, output_dir=str(tmp_path), reward="answer-match", peft="lora")
    peft = resolve_run_config(apply_overrides(config, [f"peft.target_modules={text}"])).peft
    assert peft.target_modules == ["q_proj", "v_proj"]


def test_peft_options_without_a_method_are_refused(tiny_llama_path, tmp_path):
    config = apply_flags({}, model=tiny_llama_path, output_dir=str(tmp_path), reward="answer-match")
    with pytest.raises(RunConfigError, match="no adapter method: pass --peft lora"):
        resolve_run_config(apply_overrides(config, ["peft.r=8"]))


def test_unknown_peft_method_flag_is_a_usage_error(tiny_llama_path, arithmetic_path, tmp_path):
    result = CliRunner().invoke(
        cli, _run_args(tiny_llama_path, arithmetic_path, str(tmp_path / "r"), "--peft", "ia3")
    )
    assert result.exit_code == 2
    assert "Invalid value for '--peft': 'ia3'" in result.output


def test_target_modules_missing_from_the_model_are_named(tiny_llama_path, arithmetic_path, tmp_path):
    output_dir = tmp_path / "run"
    args = _run_args(tiny_llama_path, arithmetic_path, str(output_dir), "--peft", "lora")
    result = CliRunner().invoke(cli, [*args, "--set", "peft.target_modules=foo_proj"])
    assert result.exit_code == 1
    assert "foo_proj" in result.output and "Set peft.target_modules" in result.output
    assert not output_dir.exists()
