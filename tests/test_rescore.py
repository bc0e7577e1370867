"""Rescoring and refiltering a run's samples without generating (``rescore_run``), and a run that trains on such a
set (``loop.train_from``)."""

from __future__ import annotations

import json
import math
import os

import pytest
from loop_fakes import PromptCompletionTokenizer, ScriptedGenerator, make_loop, make_prompts

from iterframe import __version__
from iterframe.loop.artifacts import read_metrics, read_samples, samples_path
from iterframe.loop.report import write_report
from iterframe.loop.rescore import rescore_run
from iterframe.loop.run_state import OutputDirError
from iterframe.loop.sample_sets import SampleSetError, TrainingSet, select_iterations
from iterframe.plugins import create_component
from iterframe.plugins.components import Completion


class TokenGenerator(ScriptedGenerator):
    """Completion ``j`` of prompt ``p`` is ``"<p>-<j>"``, with made-up token ids and tokenizer hash."""

    name = "token-scripted"

    def generate(self, prompts, num_samples):
        self.calls.append((list(prompts), num_samples))
        return [
            [Completion(f"{p}-{j}", 2, "stop", token_ids=[7, j], prompt_token_ids=[1, 2], tokenizer_hash="h0")
             for j in range(num_samples)]
            for p in prompts
        ]  # fmt: skip


def by_index(prompts, completions, references):
    """Sample j scores j / 2: 0, 0.5, 1."""
    return [int(completion.rsplit("-", 1)[1]) / 2 for completion in completions]


def strict(prompts, completions, references):
    """Only sample 2 scores; sample 0 fails."""
    return [[math.nan, 0.0, 1.0][int(completion.rsplit("-", 1)[1])] for completion in completions]


@pytest.fixture(scope="module")
def source_run(tiny_llama_path, tmp_path_factory):
    from iterframe.plugins import reset_plugin_manager

    reset_plugin_manager()
    output_dir = tmp_path_factory.mktemp("source") / "run"
    make_loop(
        tiny_llama_path,
        output_dir,
        generator=TokenGenerator(),
        reward=by_index,
        filters=[create_component("filter", "threshold", {"min_reward": 1.0})],
        iterations=2,
        samples_per_prompt=3,
        keep_checkpoints=0,
    ).run()
    return output_dir


def snapshot(folder) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(folder)
        for name in names
    }


@pytest.fixture(scope="module")
def rescored(source_run, tmp_path_factory):
    before = snapshot(source_run / "iterations")
    output_dir = tmp_path_factory.mktemp("rescored") / "set"
    threshold = create_component("filter", "threshold", {"min_reward": 0.5})
    result = rescore_run(str(source_run), str(output_dir), _reward(strict), [threshold], iterations="1:2")
    assert snapshot(source_run / "iterations") == before  # the source is left as it was
    return result, output_dir


def _reward(function):
    from iterframe.loop.stages import FunctionReward

    return FunctionReward(function)


def test_rescoring_judges_the_same_samples_afresh(source_run, rescored):
    result, output_dir = rescored
    assert result.iterations == [1]
    assert os.listdir(output_dir / "iterations") == ["000001"]
    source = read_samples(samples_path(source_run, 1))
    rows = read_samples(samples_path(output_dir, 1))
    assert [row["completion"] for row in rows] == [row["completion"] for row in source]
    fates = [(row["completion"][-1], row["kept"], row["dropped_by"]) for row in rows[:3]]
    assert fates == [("0", False, "failed-reward:no-score"), ("1", False, "threshold"), ("2", True, None)]
    assert json.loads(rows[1]["drop_reason"]) == {"reward": 0.0, "min_reward": 0.5}
    assert [row["reward"] for row in source[:3]] == [0.0, 0.5, 1.0]


def test_rescoring_keeps_the_exact_token_ids(rescored):
    _, output_dir = rescored
    row = read_samples(samples_path(output_dir, 1))[2]
    assert (row["completion_token_ids"], row["prompt_token_ids"], row["tokenizer_hash"]) == ([7, 2], [1, 2], "h0")


def test_rescored_metrics_and_report(rescored):
    result, output_dir = rescored
    (row,) = read_metrics(output_dir / "metrics.jsonl")
    assert row == result.metrics[0]
    assert (row["iteration"], row["num_generated"], row["reward/num_failed"], row["num_kept"]) == (1, 6, 2, 2)
    assert row["filter/threshold/dropped"] == 2
    funnel = write_report(str(output_dir), str(output_dir / "report.png")).text.split("Funnel, ")[1]
    assert funnel.splitlines()[3].split() == ["1", "6", "2", "2", "2", "-"]


def test_run_json_records_where_the_samples_came_from_and_what_judged_them(source_run, rescored):
    _, output_dir = rescored
    run = json.loads((output_dir / "run.json").read_text())
    source = run["rescored_from"]
    assert source["run"] == str(source_run)
    assert source["iterations"] == [1]
    assert source["policy"] == {"1": str(source_run / "checkpoints" / "iteration-000000")}
    assert source["sampling"]["samples_per_prompt"] == 3
    assert run["reward"]["name"] == "strict" and "test_rescore.strict" in run["reward"]["origin"]
    (threshold,) = run["filters"]
    assert threshold["name"] == "threshold" and threshold["version"] == __version__
    assert threshold["options"] == {"min_reward": 0.5}


def test_a_rescored_set_is_not_resumed_as_a_run(tiny_llama_path, rescored):
    _, output_dir = rescored
    with pytest.raises(OutputDirError, match="holds samples `iterframe rescore` wrote.*--train-from"):
        make_loop(tiny_llama_path, output_dir, existing_output="resume").run()
    assert os.listdir(output_dir / "iterations") == ["000001"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [(None, [0, 1, 2]), (1, [1]), ("1", [1]), ("1:3", [1, 2]), ("1:", [1, 2]), (":2", [0, 1])],
)
def test_select_iterations(spec, expected):
    assert select_iterations([0, 1, 2], spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("2:5", r"asks for iterations 2-4, but the set holds iterations 0-2 \(missing: iterations 3-4\)"),
     ("x", "is not N, A:B"), (":", "is not N, A:B"), ("2:1", "asks for no iteration")],
)  # fmt: skip
def test_select_iterations_refuses_what_the_set_does_not_hold(spec, message):
    with pytest.raises(SampleSetError, match=message):
        select_iterations([0, 1, 2], spec)


def test_rescore_refuses_bad_sources_and_destinations_without_writing(source_run, rescored, tmp_path):
    reward = _reward(strict)
    with pytest.raises(SampleSetError, match="is not an iterframe run"):
        rescore_run(str(tmp_path), str(tmp_path / "new"), reward)
    with pytest.raises(SampleSetError, match="needs its own --output-dir"):
        rescore_run(str(source_run), str(source_run), reward)
    with pytest.raises(OutputDirError, match="already holds a run"):
        rescore_run(str(source_run), str(rescored[1]), reward)

    def broken(prompts, completions, references):
        raise RuntimeError("verifier crashed")

    with pytest.raises(RuntimeError, match="verifier crashed"):
        rescore_run(str(source_run), str(tmp_path / "new"), _reward(broken))
    assert not (tmp_path / "new").exists()


def test_a_run_trains_on_the_rescored_set_without_generating(tiny_llama_path, rescored, tmp_path):
    _, output_dir = rescored
    generator, tokenizer = ScriptedGenerator(), PromptCompletionTokenizer()
    loop = make_loop(
        tiny_llama_path,
        tmp_path / "trained",
        generator=generator,
        tokenizer=tokenizer,
        eval_prompts=make_prompts(2, "e"),
        iterations=1,
        train_from=str(output_dir),
        max_failed_rate=0.1,  # the set's failed samples (a third) are not this run's reward failing
    )
    (row,) = loop.run()
    assert all(prompts[0].startswith("e") for prompts, _ in generator.calls)  # only eval prompts were generated
    assert tokenizer.batches == [2]
    assert (row["num_generated"], row["num_kept"], row["train/num_samples"], row["prompt_epoch"]) == (
        6,
        2,
        2,
        None,
    )
    assert row["filter/threshold/dropped"] == 2 and row["reward/num_failed"] == 2
    rows = read_samples(samples_path(tmp_path / "trained", 0))
    assert {json.loads(row["info"])["source_iteration"] for row in rows} == {1}
    assert [row["kept"] for row in rows] == [row["kept"] for row in read_samples(samples_path(output_dir, 1))]


def test_training_set_keeps_token_ids_only_for_the_same_tokenizer(rescored):
    _, output_dir = rescored
    same = TrainingSet(str(output_dir), tokenizer_hash="h0").samples(0)
    other = TrainingSet(str(output_dir), tokenizer_hash="another").samples(0)
    assert same[2].completion_token_ids == [7, 2] and same[2].prompt_token_ids == [1, 2]
    assert other[2].completion_token_ids is None and other[2].prompt_token_ids is None


def test_train_from_refuses_more_iterations_than_the_set_holds(tiny_llama_path, rescored, tmp_path):
    _, output_dir = rescored
    with pytest.raises(
        SampleSetError, match=r"holds 1 iteration\(s\) of samples \(iteration 1\), but the run asks"
    ):
        make_loop(tiny_llama_path, tmp_path / "out", iterations=2, train_from=str(output_dir))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output_dir": "runs/a", "train_from": "runs/a/"}, "is the run's own output_dir"),
        ({"output_dir": "runs/b", "train_from": "runs/a", "until_accepted": 1}, "leave one of them out"),
    ],
)
def test_train_from_options_are_checked(options, message):
    from iterframe.loop import LoopConfig

    with pytest.raises(ValueError, match=message):
        LoopConfig(**options)


def test_the_reward_sees_the_source_runs_config(source_run, tmp_path):
    import shutil

    import yaml

    from iterframe.plugins.components import Reward

    class RecordingReward(Reward):
        name = "recording"

        def setup(self, context):
            self.config = context.config

        def score(self, samples):
            return [1.0] * len(samples)

    run_dir = tmp_path / "run"
    shutil.copytree(source_run, run_dir)
    settings = {"dataset": {"path": "math.jsonl", "reference_column": "solution"}, "plugins": {}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(settings))
    reward = RecordingReward()
    rescore_run(str(run_dir), str(tmp_path / "set"), reward, iterations="0")
    assert reward.config == {**settings, "rescore": str(run_dir)}
