"""metrics.jsonl, samples.parquet and atomic writes."""

from __future__ import annotations

import json
import math
import os

import pytest

from iterframe.loop.artifacts import (
    SAMPLE_COLUMNS,
    TOKEN_ID_COLUMNS,
    atomic_write_bytes,
    atomic_write_json,
    iteration_dir,
    read_metrics,
    read_samples,
    sample_row,
    samples_path,
    truncate_metrics,
    write_metrics_row,
    write_samples,
)
from iterframe.plugins.components import Sample


def test_iteration_dir_is_zero_padded_to_six_digits(tmp_path):
    assert iteration_dir(tmp_path, 7) == os.path.join(str(tmp_path), "iterations", "000007")
    assert samples_path(tmp_path, 12) == os.path.join(str(tmp_path), "iterations", "000012", "samples.parquet")


def test_atomic_write_bytes_replaces_content_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(path, b"old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path / "sub") == ["file.bin"]


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"iteration": 1})

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"iteration": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"iteration": 1}
    assert os.listdir(tmp_path) == ["state.json"]


def test_write_metrics_row_replaces_row_of_same_iteration_and_sorts(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_metrics_row(path, {"iteration": 1, "reward/mean": 0.5})
    write_metrics_row(path, {"iteration": 0, "reward/mean": 0.1})
    write_metrics_row(path, {"iteration": 1, "reward/mean": 0.7})
    rows = read_metrics(path)
    assert rows == [{"iteration": 0, "reward/mean": 0.1}, {"iteration": 1, "reward/mean": 0.7}]
    assert len(path.read_text().splitlines()) == 2


def test_write_metrics_row_writes_nan_as_null(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_metrics_row(path, {"iteration": 0, "train/loss": math.nan, "reward/max": math.inf})
    assert json.loads(path.read_text()) == {"iteration": 0, "train/loss": None, "reward/max": None}


def test_write_metrics_row_requires_integer_iteration(tmp_path):
    with pytest.raises(ValueError, match="integer 'iteration'"):
        write_metrics_row(tmp_path / "metrics.jsonl", {"reward/mean": 1.0})


def test_read_metrics_of_missing_file_is_empty(tmp_path):
    assert read_metrics(tmp_path / "absent.jsonl") == []


def test_read_metrics_names_file_and_line_of_bad_json(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 0}\n{"iteration": 1\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not valid JSON"):
        read_metrics(path)


def test_truncate_metrics_drops_rows_after_iteration(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for iteration in range(4):
        write_metrics_row(path, {"iteration": iteration})
    assert [row["iteration"] for row in truncate_metrics(path, 1)] == [0, 1]
    assert [row["iteration"] for row in read_metrics(path)] == [0, 1]
    assert truncate_metrics(path, -1) == []
    assert read_metrics(path) == []


def test_samples_round_trip_with_chat_prompts_and_failed_rewards(tmp_path):
    chat = [{"role": "user", "content": "2+2="}]
    samples = [
        Sample(
            iteration=3,
            prompt_id=5,
            prompt="1+1=",
            completion="2",
            reference="2",
            reward=1.0,
            kept=True,
            info={"sample_index": 0, "generator": "fake", "num_tokens": 1, "finish_reason": "stop", "x": 1},
        ),
        Sample(
            iteration=3,
            prompt_id=6,
            prompt=chat,
            completion="5",
            reference=4,
            reward=math.nan,
            dropped_by="threshold",
            drop_reason={"reward": None, "min_reward": 0.5},
            info={"sample_index": 1},
        ),
    ]
    path = samples_path(tmp_path, 3)
    write_samples(path, samples)
    rows = read_samples(path)
    assert list(rows[0]) == [*SAMPLE_COLUMNS, *TOKEN_ID_COLUMNS]
    assert rows[0] | {"info": None} == {
        "iteration": 3,
        "prompt_id": 5,
        "sample_index": 0,
        "prompt": "1+1=",
        "completion": "2",
        "reference": "2",
        "reward": 1.0,
        "kept": True,
        "dropped_by": None,
        "drop_reason": None,
        "generator": "fake",
        "num_tokens": 1,
        "finish_reason": "stop",
        "info": None,
        "prompt_token_ids": None,
        "completion_token_ids": None,
        "tokenizer_hash": None,
    }
    assert json.loads(rows[0]["info"]) == {"x": 1}
    assert json.loads(rows[1]["prompt"]) == chat
    assert rows[1]["reference"] == "4"
    assert math.isnan(rows[1]["reward"])
    assert rows[1]["kept"] is False and rows[1]["dropped_by"] == "threshold"
    assert json.loads(rows[1]["drop_reason"]) == {"reward": None, "min_reward": 0.5}


def test_samples_keep_their_token_ids_and_the_tokenizer_hash(tmp_path):
    sample = Sample(
        iteration=0,
        prompt_id=1,
        prompt="1+1=",
        completion="2",
        info={"tokenizer_hash": "ab" * 32, "finish_reason": "stop"},
        prompt_token_ids=[1, 7, 8],
        completion_token_ids=[9, 2],
    )
    path = samples_path(tmp_path, 0)
    write_samples(path, [sample])
    (row,) = read_samples(path)
    assert (row["prompt_token_ids"], row["completion_token_ids"]) == ([1, 7, 8], [9, 2])
    assert row["tokenizer_hash"] == "ab" * 32 and json.loads(row["info"]) == {}


def test_write_samples_accepts_an_empty_iteration(tmp_path):
    path = tmp_path / "samples.parquet"
    write_samples(path, [])
    assert read_samples(path) == []


def test_read_samples_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No samples file"):
        read_samples(tmp_path / "nope.parquet")


def test_sample_row_is_the_row_samples_parquet_stores(tmp_path):
    sample = Sample(
        iteration=2,
        prompt_id=5,
        prompt=[{"role": "user", "content": "2+2?"}],
        completion="4",
        reference=4,
        reward=1.0,
        kept=True,
        info={"sample_index": 1, "generator": "hf", "num_tokens": 3, "finish_reason": "stop", "note": "x"},
    )
    row = sample_row(sample)
    assert tuple(row) == (*SAMPLE_COLUMNS, *TOKEN_ID_COLUMNS)
    assert row["prompt"] == '[{"role": "user", "content": "2+2?"}]' and row["reference"] == "4"
    assert (row["sample_index"], row["generator"], row["num_tokens"], row["info"]) == (1, "hf", 3, '{"note": "x"}')
    write_samples(tmp_path / "samples.parquet", [sample])
    assert read_samples(tmp_path / "samples.parquet") == [row]
