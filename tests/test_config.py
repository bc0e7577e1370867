import dataclasses
import os

import pytest
import torch
from transformers import HfArgumentParser

from iterframe import IterativeSFTConfig


def test_defaults_work_on_a_cpu_only_machine(tmp_path):
    config = IterativeSFTConfig(output_dir=str(tmp_path))
    assert config.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert config.truncation_mode == "keep_end"
    assert config.max_length is None
    assert config.optimize_device_cache is False
    assert config.report_to == [] or config.report_to == "none" or config.report_to == ["none"]


def test_unknown_truncation_mode_is_rejected_at_construction(tmp_path):
    with pytest.raises(ValueError, match="truncation_mode='keep_middle'.*keep_end.*keep_start"):
        IterativeSFTConfig(output_dir=str(tmp_path), truncation_mode="keep_middle")


@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_max_length_is_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match="max_length"):
        IterativeSFTConfig(output_dir=str(tmp_path), max_length=bad)


def test_hf_argument_parser_reads_every_added_field(tmp_path):
    parser = HfArgumentParser(IterativeSFTConfig)
    (config,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--max_length",
            "128",
            "--truncation_mode",
            "keep_start",
            "--optimize_device_cache",
            "true",
            "--model_init_kwargs",
            '{"dtype": "bfloat16", "trust_remote_code": true}',
            "--pad_to_multiple_of",
            "8",
        ]
    )
    assert config.max_length == 128
    assert config.truncation_mode == "keep_start"
    assert config.optimize_device_cache is True
    assert config.pad_to_multiple_of == 8
    assert config.model_init_kwargs == {"dtype": torch.bfloat16, "trust_remote_code": True}


def test_hf_argument_parser_rejects_unknown_truncation_mode(tmp_path):
    parser = HfArgumentParser(IterativeSFTConfig)
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--truncation_mode", "middle"])


@pytest.mark.parametrize(
    ("given", "expected"),
    [("bfloat16", torch.bfloat16), ("torch.float16", torch.float16), ("float32", torch.float32), ("auto", "auto")],
)
def test_dtype_strings_in_model_init_kwargs_become_torch_dtypes(tmp_path, given, expected):
    config = IterativeSFTConfig(output_dir=str(tmp_path), model_init_kwargs={"torch_dtype": given})
    assert config.model_init_kwargs["torch_dtype"] == expected


def test_unknown_dtype_string_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="'float13' is not a torch dtype"):
        IterativeSFTConfig(output_dir=str(tmp_path), model_init_kwargs={"dtype": "float13"})


def test_model_init_kwargs_must_be_json_object(tmp_path):
    with pytest.raises(ValueError, match="not valid JSON"):
        IterativeSFTConfig(output_dir=str(tmp_path), model_init_kwargs="{dtype: bfloat16")
    with pytest.raises(ValueError, match="JSON object"):
        IterativeSFTConfig(output_dir=str(tmp_path), model_init_kwargs="[1, 2]")


def test_every_added_field_has_help_text():
    added = {"model_init_kwargs", "max_length", "truncation_mode", "optimize_device_cache", "pad_to_multiple_of"}
    fields = {field.name: field for field in dataclasses.fields(IterativeSFTConfig)}
    for name in added:
        assert fields[name].metadata.get("help"), name


# --- which device several processes train on -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("world_size", "device_present", "cpu_only"),
    [("2", False, True), ("2", True, False), ("1", False, False), (None, False, False)],
)
def test_only_multi_process_runs_without_any_accelerator_are_sent_to_the_cpu(
    monkeypatch, world_size, device_present, cpu_only
):
    from iterframe.engine import config

    if world_size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setattr(config, "accelerator_device_present", lambda: device_present)
    assert config.multi_process_on_cpu_only() is cpu_only


@pytest.mark.parametrize("check", ["is_mps_available", "is_npu_available", "is_hpu_available"])
def test_devices_outside_cuda_count_as_accelerators(monkeypatch, check):
    import accelerate.utils

    from iterframe.engine import config

    if hasattr(torch, "accelerator"):
        monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("is_xpu_available", "is_mps_available", "is_npu_available", "is_hpu_available"):
        monkeypatch.setattr(accelerate.utils, name, lambda name=name: name == check)
    assert config.accelerator_device_present()


def test_no_device_at_all_is_no_accelerator(monkeypatch):
    import accelerate.utils

    from iterframe.engine import config

    if hasattr(torch, "accelerator"):
        monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in dir(accelerate.utils):
        if name.startswith("is_") and name.endswith("_available") and name != "is_cuda_available":
            monkeypatch.setattr(accelerate.utils, name, lambda: False)
    assert not config.accelerator_device_present()


@pytest.mark.parametrize("key", ["version", "fsdp_version"])
def test_an_fsdp_version_transformers_4_would_ignore_is_refused(tmp_path, monkeypatch, key):
    from iterframe.engine import config

    # the transformers module the check reads (importing parts of transformers can put another one in sys.modules)
    monkeypatch.setattr(config.transformers, "__version__", "4.57.6")
    monkeypatch.delenv("FSDP_VERSION", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    with pytest.raises(ValueError, match=r"sets version 2, which transformers 4\.57\.6 does not read: FSDP v1"):
        IterativeSFTConfig(output_dir=str(tmp_path), fsdp=True, fsdp_config={key: 2})
    assert "ACCELERATE_USE_FSDP" not in os.environ  # refused before TrainingArguments hands anything to accelerate
