"""``iterframe run`` end to end on a tiny local model: artifacts, saved config, --resume, --overwrite, --quiet,
``python -m iterframe``, and ``iterframe report`` on the result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from arithmetic_data import PROBLEMS
from click.testing import CliRunner

from iterframe.cli import cli
from iterframe.loop.artifacts import read_metrics, read_samples, samples_path
from iterframe.run_config import load_config_file, resolve_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_args(model: str, dataset: str, output_dir: str, *extra: str) -> list[str]:
    return [
        "run",
        "--model",
        model,
        "--dataset",
        dataset,
        "--reference-column",
        "answer",
        "--reward",
        "answer-match",
        "--filter",
        "best-of-n",
        "--iterations",
        "1",
        "--prompts-per-iteration",
        "2",
        "--samples-per-prompt",
        "2",
        "--eval-fraction",
        "0.5",
        "--set",
        "generator.max_new_tokens=3",
        "--set",
        "train.learning_rate=1e-3",
        "--output-dir",
        output_dir,
        *extra,
    ]


def _invoke(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def finished_run(tiny_llama_path, arithmetic_path, tmp_path_factory):
    """A finished one-iteration run (quiet) and the command's output."""
    output_dir = str(tmp_path_factory.mktemp("runs") / "finished")
    result = _invoke(_run_args(tiny_llama_path, arithmetic_path, output_dir, "--quiet"))
    return output_dir, result.output


@pytest.fixture
def run_copy(finished_run, tmp_path) -> str:
    """A private copy of the finished run, for tests that change it."""
    copy = str(tmp_path / "copy")
    shutil.copytree(finished_run[0], copy)
    return copy


def test_run_writes_metrics_samples_and_final_model(finished_run):
    from transformers import AutoModelForCausalLM

    output_dir, _ = finished_run
    (row,) = read_metrics(os.path.join(output_dir, "metrics.jsonl"))
    assert row["iteration"] == 0
    for key in (
        "reward/mean",
        "reward/kept_mean",
        "keep_rate",
        "num_generated",
        "num_kept",
        "train/loss",
        "eval/reward",
    ):
        assert key in row
    assert row["num_generated"] == 4  # 2 prompts x 2 samples
    assert row["num_kept"] == 2  # best-of-n keeps one per prompt
    samples = read_samples(samples_path(output_dir, 0))
    assert len(samples) == 4
    assert {sample["reference"] for sample in samples} <= {answer for _, answer in PROBLEMS}
    assert sum(sample["kept"] for sample in samples) == 2
    model = AutoModelForCausalLM.from_pretrained(os.path.join(output_dir, "final"))
    assert model.config.vocab_size > 0


def test_saved_config_resolves_to_the_same_run(finished_run, tiny_llama_path):
    output_dir, _ = finished_run
    saved = load_config_file(os.path.join(output_dir, "config.yaml"))
    assert saved["model"] == tiny_llama_path
    assert saved["generator"].options["max_new_tokens"] == 3
    assert [(spec.name, spec.options) for spec in saved["filters"]] == [("best-of-n", {"k": 1})]
    resolved = resolve_run_config(saved)
    assert resolved.train.learning_rate == pytest.approx(1e-3)
    assert resolved.loop.iterations == 1
    assert resolved.to_config() == resolve_run_config(resolved.to_config()).to_config()


def test_quiet_run_prints_only_the_closing_summary(finished_run):
    output_dir, output = finished_run
    assert output.splitlines() == [
        next(line for line in output.splitlines() if line.startswith("eval/reward: ")),
        f"Artifacts: {output_dir} (final model: {os.path.join(output_dir, 'final')})",
    ]
    assert "%|" not in output
    assert "Plot and table" not in output


def test_report_on_the_finished_run(finished_run):
    output_dir, _ = finished_run
    result = _invoke(["report", output_dir])
    assert "1 of 1 iterations finished" in result.output
    assert os.path.getsize(os.path.join(output_dir, "report.png")) > 0


def test_resume_continues_after_the_last_finished_iteration(run_copy):
    metrics_path = os.path.join(run_copy, "metrics.jsonl")
    (first,) = read_metrics(metrics_path)
    result = _invoke(["run", "--resume", "--output-dir", run_copy, "--iterations", "2"])
    rows = read_metrics(metrics_path)
    assert [row["iteration"] for row in rows] == [0, 1]
    assert rows[0] == first  # the finished iteration is kept as it was, never duplicated
    assert os.path.isfile(samples_path(run_copy, 1))
    assert "eval/reward" in result.output  # the loop's closing summary: not quiet this time
    assert f"iterframe report {run_copy}" in result.output
    assert load_config_file(os.path.join(run_copy, "config.yaml"))["loop"]["iterations"] == 2


def test_overwrite_replaces_the_run_and_keeps_other_files(run_copy, tiny_llama_path, arithmetic_path):
    marker = os.path.join(run_copy, "iterations", "000000", "stale.txt")
    with open(marker, "w") as handle:
        handle.write("from the old run")
    with open(os.path.join(run_copy, "notes.txt"), "w") as handle:
        handle.write("mine")
    refused = CliRunner().invoke(cli, _run_args(tiny_llama_path, arithmetic_path, run_copy, "--quiet"))
    assert refused.exit_code == 1 and "already holds a run" in refused.output
    assert os.path.exists(marker)
    _invoke(_run_args(tiny_llama_path, arithmetic_path, run_copy, "--quiet", "--overwrite", "--seed", "5"))
    assert not os.path.exists(marker)
    assert open(os.path.join(run_copy, "notes.txt")).read() == "mine"
    (row,) = read_metrics(os.path.join(run_copy, "metrics.jsonl"))
    assert row["iteration"] == 0
    assert load_config_file(os.path.join(run_copy, "config.yaml"))["loop"]["seed"] == 5


def test_python_dash_m_iterframe_run_works_the_same(tiny_llama_path, arithmetic_path, tmp_path):
    output_dir = str(tmp_path / "subprocess-run")
    args = _run_args(tiny_llama_path, arithmetic_path, output_dir, "--quiet")
    completed = subprocess.run(
        [sys.executable, "-m", "iterframe", *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert [row["iteration"] for row in read_metrics(os.path.join(output_dir, "metrics.jsonl"))] == [0]


def _reward_file(tmp_path, body: str) -> str:
    path = tmp_path / "my_reward.py"
    path.write_text(body)
    return f"{path}:score"


def _python_reward_args(model, dataset, output_dir, function, *extra):
    args = _run_args(model, dataset, output_dir, "--quiet", *extra)
    args[args.index("answer-match")] = "python"
    return [*args, "--set", f"reward.function={function}"]


def test_component_setup_failure_leaves_no_output_dir(tiny_llama_path, arithmetic_path, tmp_path):
    output_dir = tmp_path / "setup-fails"
    args = _python_reward_args(tiny_llama_path, arithmetic_path, str(output_dir), "no_such_module:score")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "cannot import module 'no_such_module'" in result.output
    assert "Traceback" not in result.output
    assert not output_dir.exists()


def test_early_failure_leaves_a_users_folder_as_it_was(tiny_llama_path, arithmetic_path, tmp_path):
    output_dir = tmp_path / "mine"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("mine")
    args = _python_reward_args(tiny_llama_path, arithmetic_path, str(output_dir), "no_such_module:score")
    assert CliRunner().invoke(cli, args).exit_code == 1
    assert os.listdir(output_dir) == ["notes.txt"]


def test_failure_after_a_finished_iteration_keeps_it_for_resume(tiny_llama_path, arithmetic_path, tmp_path):
    function = _reward_file(
        tmp_path,
        "calls = []\n\n"
        "def score(prompts, completions, references):\n"
        "    calls.append(1)\n"
        "    if len(calls) > 1:\n"
        "        raise ValueError('the reward service is down')\n"
        "    return [0.5] * len(completions)\n",
    )
    output_dir = str(tmp_path / "stops")
    args = _python_reward_args(tiny_llama_path, arithmetic_path, output_dir, function, "--iterations", "2")
    args = [arg for arg in args if arg not in ("--eval-fraction", "0.5")]  # no eval: 4 samples per iteration
    args += ["--set", "reward.workers=0"]  # one call per iteration, in this process: iteration 1 fails
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "the reward service is down" in result.output
    assert "add --resume" in result.output
    assert [row["iteration"] for row in read_metrics(os.path.join(output_dir, "metrics.jsonl"))] == [0]


def test_no_arguments_runs_the_demo_with_flag_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke(["run", "--iterations", "1", "--set", "loop.prompts_per_iteration=8", "--output-dir", "demo"])
    assert "built-in demo" in result.output
    (row,) = read_metrics(os.path.join(tmp_path, "demo", "metrics.jsonl"))
    from iterframe.demo import demo_run_spec

    spec = demo_run_spec()
    with open(spec["dataset"]["eval_dataset"]) as handle:
        num_eval_prompts = sum(1 for line in handle if line.strip())
    assert row["num_generated"] == 8 * spec["loop"]["samples_per_prompt"]
    assert row["eval/num_prompts"] == num_eval_prompts
    assert load_config_file(str(tmp_path / "demo" / "config.yaml"))["loop"]["iterations"] == 1


CHAT_TEMPLATE = (
    "{% for message in messages %}<{{ message['role'] }}>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def test_chat_message_prompts_run_through_the_chat_template(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from iterframe.testing import build_tiny_causal_lm, train_bpe_tokenizer

    model_path = str(tmp_path / "chat-model")
    build_tiny_causal_lm(model_path, train_bpe_tokenizer(chat_template=CHAT_TEMPLATE))
    rows = [{"messages": [{"role": "user", "content": prompt}], "answer": answer} for prompt, answer in PROBLEMS]
    dataset = str(tmp_path / "chat.parquet")
    pq.write_table(pa.Table.from_pylist(rows), dataset)
    output_dir = str(tmp_path / "chat-run")
    args = _run_args(model_path, dataset, output_dir, "--prompt-column", "messages", "--quiet")
    _invoke(args)
    samples = read_samples(samples_path(output_dir, 0))
    assert json.loads(samples[0]["prompt"])[0]["role"] == "user"
    assert load_config_file(os.path.join(output_dir, "config.yaml"))["sample_tokenizer"].name == "chat"
    (row,) = read_metrics(os.path.join(output_dir, "metrics.jsonl"))
    assert row["train/tokens"] > 0  # the kept assistant replies were trained on
