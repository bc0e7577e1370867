"""``iterframe run`` under ``torchrun`` with two CPU processes (gloo): it finishes, writes one metrics row per
iteration, generates as many samples as a one-process run, and resumes without duplicates."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from iterframe.loop.artifacts import read_metrics

pytestmark = pytest.mark.slow

PROBLEMS = [("1+1=", "2"), ("2+3=", "5"), ("4+4=", "8"), ("3+2=", "5"), ("1+2=", "3"), ("2+2=", "4")]


@pytest.fixture(scope="module")
def arithmetic_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "arithmetic.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in PROBLEMS))
    return str(path)


def _run(
    num_processes: int,
    model: str,
    dataset: str,
    output_dir: str,
    iterations: int,
    *extra: str,
    chain="top-fraction",
):
    run_args = [
        "run",
        "--model", model,
        "--dataset", dataset,
        "--reference-column", "answer",
        "--reward", "answer-match",
        "--filter", chain,
        "--iterations", str(iterations),
        "--prompts-per-iteration", "4",
        "--samples-per-prompt", "2",
        "--set", "generator.max_new_tokens=3",
        "--set", "train.learning_rate=1e-3",
        "--output-dir", output_dir,
        "--quiet",
        *extra,
    ]  # fmt: skip
    launcher = [sys.executable, "-m", "iterframe"]
    if num_processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(num_processes), "-m", "iterframe"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, *run_args], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-30000:]
    return read_metrics(os.path.join(output_dir, "metrics.jsonl"))


def test_two_processes_match_one_and_resume(tiny_llama_path, arithmetic_path, tmp_path):
    one = _run(1, tiny_llama_path, arithmetic_path, str(tmp_path / "one"), 2)
    output_dir = str(tmp_path / "two")
    two = _run(2, tiny_llama_path, arithmetic_path, output_dir, 2)
    assert [row["iteration"] for row in two] == [0, 1]
    for key in ("num_prompts", "num_generated", "train/num_samples"):
        assert [row[key] for row in two] == [row[key] for row in one], key
    assert os.path.isfile(os.path.join(output_dir, "final", "model.safetensors"))
    assert two[-1]["global_step"] > 0

    resumed = _run(2, tiny_llama_path, arithmetic_path, output_dir, 3, "--resume")
    assert [row["iteration"] for row in resumed] == [0, 1, 2]
    assert resumed[:2] == two
    assert resumed[2]["global_step"] > two[-1]["global_step"]


PROMPT_REWARD = '''
def score(prompts, completions, references):
    """1 for prompts whose answer is odd, whatever the completion: those are solved by their first sample."""
    return [float(int(reference) % 2) for reference in references]
'''


def test_adaptive_rounds_under_two_processes_match_one(tiny_llama_path, arithmetic_path, tmp_path):
    reward_file = tmp_path / "prompt_reward.py"
    reward_file.write_text(PROMPT_REWARD)
    adaptive = (
        "--reward", "python", "--set", f"reward.function={reward_file}:score", "--samples-per-prompt", "3",
        "--set", "loop.until_accepted=1", "--set", "loop.redistribute=true",
    )  # fmt: skip
    one = _run(1, tiny_llama_path, arithmetic_path, str(tmp_path / "one"), 1, *adaptive, chain="threshold")
    two = _run(2, tiny_llama_path, arithmetic_path, str(tmp_path / "two"), 1, *adaptive, chain="threshold")
    keys = ("num_generated", "num_kept", "prompts/solved", "prompts/exhausted", "sampling/rounds")
    assert [two[0][key] for key in keys] == [one[0][key] for key in keys]
    # odd answers are solved by their first sample; even ones never, and get the budget the odd ones saved
    assert one[0]["prompts/solved"] == one[0]["num_kept"] > 0 and one[0]["prompts/exhausted"] > 0
    assert one[0]["num_generated"] == 4 * 3
    assert one[0]["sampling/rounds"] > 3
