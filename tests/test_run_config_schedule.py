"""``iterframe run`` gives a requested learning-rate schedule the horizon it needs: with ``train.max_steps``
unset, the most updates the run can make."""

from __future__ import annotations

import pytest
from transformers import TrainingArguments

from iterframe.run_config import resolve_run_config

#: A warmup given as a ratio of the horizon: ``warmup_ratio`` in transformers 4, a ``warmup_steps`` below 1 in 5.
WARMUP_RATIO = (
    {"warmup_ratio": 0.5} if "warmup_ratio" in TrainingArguments.__dataclass_fields__ else {"warmup_steps": 0.5}
)

LOOP = {"iterations": 3, "prompts_per_iteration": 4, "samples_per_prompt": 2}
BASE = {"model": "some/model", "reward": "answer-match", "output_dir": "out", "dataset": "prompts.jsonl"}


def resolved(loop=None, **train):
    train = {"per_device_train_batch_size": 2, **train}
    return resolve_run_config({**BASE, "loop": {**LOOP, **(loop or {})}, "train": train})


def test_a_decaying_schedule_runs_over_the_most_updates_the_run_can_make(caplog):
    with caplog.at_level("WARNING", logger="iterframe.run_config.schedule_horizon"):
        run = resolved(lr_scheduler_type="cosine")
    assert run.train.max_steps == 3 * 4  # 3 iterations x ceil(4 prompts x 2 samples / batch 2)
    assert (
        "lr_scheduler_type='cosine' runs over 12 optimizer updates, the most 3 iterations can make" in caplog.text
    )
    assert "max_steps" not in run.to_config()["train"], "the saved config asks again, for the same horizon"


@pytest.mark.parametrize(
    ("loop", "train", "expected"),
    [
        ({"train_epochs": 2, "replay_buffer_size": 4}, {}, 3 * 2 * 6),  # (8 + 4 replayed) / 2 per epoch
        ({}, {"gradient_accumulation_steps": 3}, 3 * 2),  # 4 micro-batches make 2 updates
        ({"restart_from_base": True}, {}, 4),  # each iteration starts a fresh schedule
        ({}, WARMUP_RATIO, 12),  # a warmup ratio needs the horizon too
    ],
)
def test_the_horizon_counts_epochs_replay_accumulation_and_restarts(loop, train, expected):
    settings = {"lr_scheduler_type": "linear", **train}
    if train is WARMUP_RATIO:
        settings.pop("lr_scheduler_type")
    assert resolved(loop, **settings).train.max_steps == expected


def test_a_given_max_steps_or_a_constant_schedule_is_left_as_it_is():
    assert resolved(lr_scheduler_type="cosine", max_steps=50).train.max_steps == 50
    assert resolved().train.max_steps == -1
    assert resolved(lr_scheduler_type="constant_with_warmup", warmup_steps=3).train.max_steps == -1


def test_a_run_that_trains_from_a_recorded_set_sizes_its_schedule_from_the_set(tiny_llama_path, tmp_path):
    from loop_fakes import make_loop

    recorded = tmp_path / "recorded"
    # 2 iterations of 4 prompts x 3 samples, every one kept: 12 kept samples an iteration, 6 updates of batch 2
    make_loop(tiny_llama_path, recorded, iterations=2, prompts_per_iteration=4, samples_per_prompt=3).run()
    loop = {"train_from": str(recorded), "iterations": 2, "prompts_per_iteration": 1}
    run = resolved(loop, lr_scheduler_type="cosine")
    assert run.train.max_steps == 2 * 6
