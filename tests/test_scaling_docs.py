"""docs/scaling.md and the accelerate configs in examples/accelerate/: valid configs, every one documented, every
launch shown, every vllm option in the table, no broken relative links."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCALING_DOC = ROOT / "docs" / "scaling.md"
CONFIG_DIR = ROOT / "examples" / "accelerate"

#: file -> (distributed_type, what its engine config must say)
CONFIGS = {
    "ddp.yaml": ("MULTI_GPU", {}),
    "deepspeed_zero2.yaml": ("DEEPSPEED", {"deepspeed_config": {"zero_stage": 2}}),
    "deepspeed_zero3.yaml": ("DEEPSPEED", {"deepspeed_config": {"zero_stage": 3, "zero3_save_16bit_model": True}}),
    "fsdp.yaml": ("FSDP", {"fsdp_config": {"fsdp_version": 2, "fsdp_state_dict_type": "FULL_STATE_DICT"}}),
}


@pytest.fixture(scope="module")
def scaling_doc() -> str:
    return SCALING_DOC.read_text()


@pytest.mark.parametrize("file_name", sorted(CONFIGS))
def test_accelerate_config_has_the_expected_setup(file_name):
    config = yaml.safe_load((CONFIG_DIR / file_name).read_text())
    distributed_type, sections = CONFIGS[file_name]
    assert config["distributed_type"] == distributed_type
    assert config["compute_environment"] == "LOCAL_MACHINE"
    assert config["num_machines"] == 1 and config["num_processes"] >= 2
    assert config["mixed_precision"] in ("no", "fp16", "bf16")
    for section, expected in sections.items():
        assert {key: config[section][key] for key in expected} == expected


@pytest.mark.parametrize("file_name", sorted(CONFIGS))
def test_accelerate_loads_the_config(file_name):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(CONFIG_DIR / file_name))  # rejects unknown keys and bad values
    assert config.distributed_type.value == CONFIGS[file_name][0]


def test_every_config_in_the_folder_is_documented(scaling_doc):
    on_disk = {path.name for path in CONFIG_DIR.glob("*.yaml")}
    assert on_disk == set(CONFIGS)
    for file_name in on_disk:
        assert f"examples/accelerate/{file_name}" in scaling_doc, file_name


@pytest.mark.parametrize(
    "launch",
    [
        "accelerate launch --config_file examples/accelerate/ddp.yaml -m iterframe run",
        "torchrun --nproc_per_node 4 -m iterframe run",
        "--num_machines 2",
        "--machine_rank 0",
        "--main_process_ip",
        "torchrun --nnodes 2",
        "--rdzv_endpoint",
        "accelerate launch --config_file examples/accelerate/deepspeed_zero3.yaml -m iterframe run",
        "--set train.deepspeed=",
        "accelerate launch --config_file examples/accelerate/fsdp.yaml -m iterframe run",
        "--generator vllm",
        "--peft lora",
    ],
)
def test_the_doc_shows_each_launch(scaling_doc, launch):
    assert launch in scaling_doc


def test_every_vllm_option_is_in_the_options_table(scaling_doc):
    from iterframe_vllm import VLLMOptions

    documented = set(re.findall(r"^\| `(\w+)` \|", scaling_doc, flags=re.MULTILINE))
    assert {field.name for field in dataclasses.fields(VLLMOptions)} <= documented


def test_relative_links_point_at_existing_files(scaling_doc):
    targets = re.findall(r"\]\((?!https?:|#)([^)#]+)", scaling_doc)
    assert targets
    missing = [target for target in targets if not (SCALING_DOC.parent / target).exists()]
    assert not missing
