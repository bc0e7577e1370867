"""What a run leaves out of its output: library notices that say only what is expected (DeepSpeed finding no
GPU, a tied-embedding model's checkpoint without ``lm_head.weight``), while warnings a user must act on stay."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner
from loop_fakes import make_loop
from safetensors.torch import load_file, save_file

from iterframe.cli import cli


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def trainer_warnings():
    """The messages transformers' trainer logs (its loggers do not propagate to the root)."""
    handler, trainer_logger = Collect(), logging.getLogger("transformers.trainer")
    level = trainer_logger.level
    trainer_logger.addHandler(handler)
    trainer_logger.setLevel(logging.WARNING)  # whatever verbosity an earlier test left transformers at
    yield handler.messages
    trainer_logger.removeHandler(handler)
    trainer_logger.setLevel(level)


@pytest.fixture(scope="module")
def tied_model_path(tmp_path_factory) -> str:
    from iterframe.testing import build_tiny_causal_lm

    path = str(tmp_path_factory.mktemp("models") / "tied")
    build_tiny_causal_lm(path, tie_word_embeddings=True)
    return path


def _checkpoint_weights(output_dir) -> str:
    return os.path.join(output_dir, "checkpoints", "iteration-000000", "model.safetensors")


def test_resuming_a_tied_embedding_model_does_not_warn_about_its_missing_lm_head(
    tied_model_path, tmp_path, trainer_warnings
):
    make_loop(tied_model_path, tmp_path / "out", iterations=1).run()
    assert "lm_head.weight" not in load_file(_checkpoint_weights(tmp_path / "out"))  # saved once, as embeddings
    rows = make_loop(tied_model_path, tmp_path / "out", iterations=2, existing_output="resume").run()
    assert [row["iteration"] for row in rows] == [0, 1]
    assert not [message for message in trainer_warnings if "missing keys" in message]


def test_resuming_a_checkpoint_that_lacks_an_untied_weight_still_warns(
    tied_model_path, tmp_path, trainer_warnings
):
    make_loop(tied_model_path, tmp_path / "out", iterations=1).run()
    weights = load_file(_checkpoint_weights(tmp_path / "out"))
    del weights["model.norm.weight"]
    save_file(weights, _checkpoint_weights(tmp_path / "out"), metadata={"format": "pt"})
    make_loop(tied_model_path, tmp_path / "out", iterations=2, existing_output="resume").run()
    missing = [message for message in trainer_warnings if "missing keys" in message]
    assert missing and "model.norm.weight" in missing[0]


def test_the_command_line_drops_deepspeeds_no_gpu_notice_and_keeps_its_other_warnings():
    CliRunner().invoke(cli, ["plugins"], catch_exceptions=False)  # any command installs the filter
    deepspeed_logger, handler = logging.getLogger("DeepSpeed"), Collect()
    deepspeed_logger.addHandler(handler)
    try:
        deepspeed_logger.warning(
            "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."
        )
        deepspeed_logger.warning("ZeRO-3 needs more memory than this machine has.")
    finally:
        deepspeed_logger.removeHandler(handler)
    assert handler.messages == ["ZeRO-3 needs more memory than this machine has."]


def test_print_config_writes_only_yaml_to_stdout_when_wandb_is_offline(tiny_llama_path, arithmetic_path, tmp_path):
    """transformers prints a notice to stdout when it first imports its integrations with WANDB_MODE=offline: the
    command line drops it (the user set the mode), so stdout is the YAML alone."""
    command = [sys.executable, "-m", "iterframe", "run", "--model", tiny_llama_path, "--dataset", arithmetic_path]
    command += ["--reference-column", "answer", "--reward", "answer-match"]
    command += ["--output-dir", str(tmp_path / "run"), "--print-config"]
    env = dict(os.environ, WANDB_MODE="offline")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load(result.stdout)
    assert config["model"] == tiny_llama_path and config["dataset"]["reference_column"] == "answer"
    assert "Running in WANDB offline mode" not in result.stdout + result.stderr  # an expected notice, dropped
