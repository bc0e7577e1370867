"""One finished run with scripted components: metrics, samples, filters, eval, checkpoints, final model."""

from __future__ import annotations

import math
import os

import pytest
from loop_fakes import (
    FirstPerPrompt,
    MinReward,
    PromptCompletionTokenizer,
    RecordingLogger,
    ScriptedGenerator,
    is_nan,
    make_loop,
    make_prompts,
)

from iterframe.loop import FAILED_REWARD
from iterframe.loop.artifacts import iteration_dir, read_metrics, read_samples, samples_path

CONTRACT_KEYS = {
    "iteration",
    "reward/mean",
    "reward/max",
    "reward/kept_mean",
    "keep_rate",
    "num_generated",
    "num_kept",
    "train/loss",
    "train/tokens",
    "eval/reward",
    "time/generate_s",
    "time/score_s",
    "time/train_s",
}


def scripted_reward(prompts, completions, references):
    """Sample 0 of a prompt scores 1, sample 1 scores 0.5, sample 2 fails (NaN); eval prompt e1 scores 0."""
    scores = []
    for prompt, completion in zip(prompts, completions):
        index = int(completion.rsplit("-", 1)[1])
        scores.append(0.0 if prompt == "e1" else [1.0, 0.5, math.nan][index])
    return scores


@pytest.fixture(scope="module")
def finished_run(tiny_llama_path, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run") / "out"
    generator, tokenizer, logger = ScriptedGenerator(), PromptCompletionTokenizer(), RecordingLogger()
    min_reward = MinReward(0.5)
    loop = make_loop(
        tiny_llama_path,
        output_dir,
        generator=generator,
        reward=scripted_reward,
        filters=[min_reward, FirstPerPrompt()],
        tokenizer=tokenizer,
        loggers=[logger],
        eval_prompts=make_prompts(2, "e"),
        iterations=3,
        prompts_per_iteration=2,
        samples_per_prompt=3,
    )
    rows = loop.run()
    return {
        "rows": rows,
        "output_dir": str(output_dir),
        "loop": loop,
        "generator": generator,
        "tokenizer": tokenizer,
        "logger": logger,
        "min_reward": min_reward,
    }


def test_run_returns_one_row_per_iteration_with_contract_keys(finished_run):
    rows = finished_run["rows"]
    assert [row["iteration"] for row in rows] == [0, 1, 2]
    for row in rows:
        assert CONTRACT_KEYS <= set(row)


def test_reward_and_keep_metrics_count_failed_samples_apart(finished_run):
    row = finished_run["rows"][0]
    assert row["num_generated"] == 6
    assert row["reward/num_failed"] == 2
    assert row["num_kept"] == 2
    assert row["keep_rate"] == pytest.approx(2 / 6)
    assert row["reward/mean"] == pytest.approx(0.75)
    assert row["reward/max"] == 1.0
    assert row["reward/min"] == 0.5
    assert row["reward/kept_mean"] == 1.0
    assert row["filter/min-reward/dropped"] == 0
    assert row["filter/first-per-prompt/dropped"] == 2


def test_training_metrics_come_from_trainer_steps(finished_run):
    rows = finished_run["rows"]
    assert [row["global_step"] for row in rows] == [1, 2, 3]
    assert all(row["train/tokens"] > 0 and math.isfinite(row["train/loss"]) for row in rows)
    assert [row["train/num_samples"] for row in rows] == [2, 2, 2]
    assert finished_run["tokenizer"].batches == [2, 2, 2]


def test_initial_eval_and_checkpoint_saving_are_timed_in_the_rows(finished_run):
    rows = finished_run["rows"]
    assert rows[0]["time/initial_eval_s"] > 0 and all("time/initial_eval_s" not in row for row in rows[1:])
    assert all(row["time/save_s"] > 0 for row in rows)  # a checkpoint after every iteration
    for row in rows:
        stages = sum(value for key, value in row.items() if key.startswith("time/") and key != "time/total_s")
        assert row["time/total_s"] >= stages


def test_eval_reward_is_mean_of_greedy_eval_scores(finished_run):
    rows = finished_run["rows"]
    assert [row["eval/reward"] for row in rows] == [0.5, 0.5, 0.5]
    eval_calls = [call for call in finished_run["generator"].calls if call[0] == ["e0", "e1"]]
    assert eval_calls == [(["e0", "e1"], 1)] * 4  # the starting model, then after each iteration


def test_filters_run_in_order_and_see_only_survivors(finished_run):
    seen_by_first_filter = finished_run["min_reward"].seen[0]
    assert len(seen_by_first_filter) == 4
    assert not any(completion.endswith("-2") for completion in seen_by_first_filter)


def test_metrics_jsonl_holds_the_returned_rows_once(finished_run):
    written = read_metrics(os.path.join(finished_run["output_dir"], "metrics.jsonl"))
    assert [row["iteration"] for row in written] == [0, 1, 2]
    for written_row, row in zip(written, finished_run["rows"]):
        assert set(written_row) == set(row)
        assert written_row["reward/mean"] == row["reward/mean"]


def test_samples_parquet_records_every_sample_with_its_fate(finished_run):
    rows = read_samples(samples_path(finished_run["output_dir"], 0))
    assert len(rows) == 6
    by_index = {}
    for row in rows:
        by_index.setdefault(row["sample_index"], []).append(row)
    assert all(row["kept"] and row["dropped_by"] is None and row["reward"] == 1.0 for row in by_index[0])
    assert all(not row["kept"] and row["dropped_by"] == "first-per-prompt" for row in by_index[1])
    assert all(
        row["dropped_by"] == f"{FAILED_REWARD}:no-score" and math.isnan(row["reward"]) for row in by_index[2]
    )
    first = rows[0]
    assert first["iteration"] == 0
    assert first["generator"] == "scripted"
    assert first["completion"] == f"{first['prompt']}-{first['sample_index']}"
    assert first["reference"] == first["prompt"][1:]
    assert first["finish_reason"] == "stop"


def test_eval_samples_are_saved_next_to_samples(finished_run):
    rows = read_samples(os.path.join(iteration_dir(finished_run["output_dir"], 2), "eval_samples.parquet"))
    assert [(row["prompt"], row["completion"], row["reward"]) for row in rows] == [
        ("e0", "e0-0", 1.0),
        ("e1", "e1-0", 0.0),
    ]


def test_loggers_get_every_row_and_all_samples_then_close(finished_run):
    logger = finished_run["logger"]
    assert [row["iteration"] for row in logger.rows] == [0, 1, 2]
    assert [len(samples) for samples in logger.samples] == [6, 6, 6]
    assert logger.closed


def test_generator_weights_are_synced_after_every_iteration(finished_run):
    assert finished_run["generator"].weight_updates == 3


def test_only_latest_loop_checkpoint_is_kept_and_complete(finished_run):
    checkpoints = os.path.join(finished_run["output_dir"], "checkpoints")
    assert os.listdir(checkpoints) == ["iteration-000002"]
    files = set(os.listdir(os.path.join(checkpoints, "iteration-000002")))
    assert {"loop_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= files
    assert "model.safetensors" in files and "tokenizer.json" in files


def test_final_model_loads_with_from_pretrained_and_has_model_card(finished_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = os.path.join(finished_run["output_dir"], "final")
    model = AutoModelForCausalLM.from_pretrained(final)
    AutoTokenizer.from_pretrained(final)
    trained = finished_run["loop"].trainer.model.state_dict()
    for name, value in model.state_dict().items():
        assert (value == trained[name]).all(), name
    with open(os.path.join(final, "README.md"), encoding="utf-8") as handle:
        assert "iterframe" in handle.read()


def test_final_model_card_names_the_run_not_its_temporary_folder(finished_run):
    with open(os.path.join(finished_run["output_dir"], "final", "README.md"), encoding="utf-8") as handle:
        card = handle.read()
    assert ".tmp" not in card
    assert "model_name: out\n" in card and 'from_pretrained("out")' in card


def test_run_json_marks_the_output_dir(finished_run):
    import json

    with open(os.path.join(finished_run["output_dir"], "run.json"), encoding="utf-8") as handle:
        run = json.load(handle)
    assert run["loop"]["iterations"] == 3


def test_nan_metrics_are_null_in_metrics_jsonl(tiny_llama_path, tmp_path):
    loop = make_loop(
        tiny_llama_path,
        tmp_path / "out",
        reward=lambda p, c, r: [math.inf] * len(c),
        iterations=1,
        max_failed_rate=1.0,
    )
    (row,) = loop.run()
    assert row["reward/num_failed"] == row["num_generated"] == 4
    assert row["num_kept"] == 0 and is_nan(row["reward/mean"])
    (written,) = read_metrics(tmp_path / "out" / "metrics.jsonl")
    assert written["reward/mean"] is None and written["train/loss"] is None


def test_iteration_that_keeps_nothing_trains_nothing_and_loop_goes_on(tiny_llama_path, tmp_path):
    tokenizer = PromptCompletionTokenizer()
    loop = make_loop(
        tiny_llama_path,
        tmp_path / "out",
        reward=lambda p, c, r: [0.0] * len(c),
        filters=[MinReward(1.0)],
        tokenizer=tokenizer,
        iterations=2,
    )
    rows = loop.run()
    assert [row["keep_rate"] for row in rows] == [0.0, 0.0]
    assert [row["train/tokens"] for row in rows] == [0, 0]
    assert all(is_nan(row["train/loss"]) for row in rows)
    assert loop.trainer.state.global_step == 0
    assert tokenizer.batches == []
    assert len(read_samples(samples_path(tmp_path / "out", 1))) == 4
