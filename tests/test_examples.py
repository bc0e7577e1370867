"""Every example in examples/ runs on a tiny local model (one short iteration each)."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
from click.testing import CliRunner

from iterframe.cli import cli
from iterframe.loop.artifacts import read_metrics, read_samples, samples_path
from iterframe.run_config import load_config_file

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
#: Flags that shrink an example to one short iteration.
SHORT_RUN = [
    "--iterations", "1",
    "--prompts-per-iteration", "2",
    "--samples-per-prompt", "2",
    "--set", "generator.max_new_tokens=3",
    "--set", "dataset.eval_fraction=0.1",
    "--quiet",
]  # fmt: skip


def _custom_reward_module():
    spec = importlib.util.spec_from_file_location(
        "custom_reward_example", os.path.join(EXAMPLES, "custom_reward.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_example(config_name: str, model: str, output_dir: str, *extra: str):
    args = ["run", os.path.join(EXAMPLES, config_name), "--model", model, "--output-dir", output_dir]
    result = CliRunner().invoke(cli, [*args, *SHORT_RUN, *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    (row,) = read_metrics(os.path.join(output_dir, "metrics.jsonl"))
    return row, read_samples(samples_path(output_dir, 0))


def test_raft_best_of_n_example_keeps_one_sample_per_prompt(tiny_llama_path, tmp_path):
    row, samples = _run_example("raft_best_of_n.yaml", tiny_llama_path, str(tmp_path / "raft"))
    assert row["num_generated"] == 4
    assert row["num_kept"] == 2
    assert sorted(sample["prompt_id"] for sample in samples if sample["kept"]) == sorted(
        {sample["prompt_id"] for sample in samples}
    )
    assert "eval/reward" in row


def test_expert_iteration_example_keeps_only_verified_samples(tiny_llama_path, tmp_path):
    output_dir = str(tmp_path / "expert")
    row, samples = _run_example("expert_iteration.yaml", tiny_llama_path, output_dir)
    assert all(sample["reward"] == 1.0 for sample in samples if sample["kept"])
    assert all(sample["dropped_by"] == "threshold" for sample in samples if sample["reward"] < 1.0)
    assert row["num_kept"] == sum(sample["kept"] for sample in samples)
    saved = load_config_file(os.path.join(output_dir, "config.yaml"))
    assert [spec.name for spec in saved["filters"]] == ["threshold", "dedup"]
    assert saved["loop"]["replay_buffer_size"] == 32
    assert saved["dataset"]["path"] == os.path.join(EXAMPLES, "data", "arithmetic.jsonl")


def test_code_tests_example_judges_every_program_with_a_verdict(tiny_llama_path, tmp_path):
    row, samples = _run_example("code_tests.yaml", tiny_llama_path, str(tmp_path / "code"))
    verdicts = [json.loads(sample["info"])["verdict"] for sample in samples]
    assert len(verdicts) == row["num_generated"] == 4
    assert set(verdicts) <= {"pass", "wrong-answer", "timeout", "crash", "syntax-error"}
    assert sum(row.get(f"reward/verdict/{verdict}", 0) for verdict in set(verdicts)) == 4
    assert all(sample["kept"] == (sample["reward"] == 1.0) for sample in samples)


@pytest.mark.parametrize(
    ("completion", "reference", "score"),
    [("tac", "tac", 1.0), (" ta", "tac", 2 / 3), ("cat", "tac", 0.0), ("", "drib", 0.0), ("tacos", "tac", 1.0)],
)
def test_custom_reward_gives_prefix_credit(completion, reference, score):
    reward = _custom_reward_module().reversal_reward
    assert reward(["p"], [completion], [reference]) == [pytest.approx(score)]


def test_custom_reward_example_runs_from_python(tiny_llama_path, tmp_path):
    output_dir = str(tmp_path / "reverse-python")
    args = ["--model", tiny_llama_path, "--output-dir", output_dir, "--iterations", "1"]
    args += ["--prompts-per-iteration", "2", "--samples-per-prompt", "2", "--max-new-tokens", "3", "--quiet"]
    (row,) = _custom_reward_module().main(args)
    assert row["num_generated"] == 4
    assert row["num_kept"] == 2  # top-fraction 0.5 of 4 samples
    assert read_metrics(os.path.join(output_dir, "metrics.jsonl"))[0]["iteration"] == 0


def test_custom_reward_example_runs_from_the_cli(tiny_llama_path, tmp_path):
    output_dir = str(tmp_path / "reverse-cli")
    function = os.path.join(EXAMPLES, "custom_reward.py") + ":reversal_reward"
    args = ["run", "--model", tiny_llama_path, "--dataset", os.path.join(EXAMPLES, "data", "reverse.jsonl")]
    args += ["--reward", "python", "--set", f"reward.function={function}", "--filter", "top-fraction"]
    args += ["--output-dir", output_dir, *SHORT_RUN]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    samples = read_samples(samples_path(output_dir, 0))
    module = _custom_reward_module()
    expected = module.reversal_reward(None, [s["completion"] for s in samples], [s["reference"] for s in samples])
    assert [sample["reward"] for sample in samples] == pytest.approx(expected)
