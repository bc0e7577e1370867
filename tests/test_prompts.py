"""Loading prompt sets: file formats, save_to_disk folders, columns, chat prompts, eval splits and errors."""

from __future__ import annotations

import json

import pytest

from iterframe.loop.datasets import DatasetSettings, PromptSetError, load_prompt_sets

ROWS = [
    {"prompt": "1+1=", "answer": "2", "topic": "add"},
    {"prompt": "2+2=", "answer": "4", "topic": "add"},
    {"prompt": "3*3=", "answer": "9", "topic": "mul"},
    {"prompt": "8-5=", "answer": "3", "topic": "sub"},
]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _load(path, **settings):
    return load_prompt_sets(DatasetSettings(path=str(path), **settings))


def _write_format(tmp_path, fmt: str, rows) -> str:
    if fmt == "jsonl":
        return _write_jsonl(tmp_path / "data.jsonl", rows)
    if fmt == "json":
        path = tmp_path / "data.json"
        path.write_text(json.dumps(rows))
    elif fmt == "json-columns":
        path = tmp_path / "data.json"
        path.write_text(json.dumps({key: [row[key] for row in rows] for key in rows[0]}))
    elif fmt == "json-lines-named-json":
        path = tmp_path / "data.json"
        path.write_text("\n".join(json.dumps(row) for row in rows))
    elif fmt == "csv":
        import csv

        path = tmp_path / "data.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "save_to_disk":
        import datasets

        path = tmp_path / "saved"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize(
    "fmt", ["jsonl", "json", "json-columns", "json-lines-named-json", "csv", "parquet", "save_to_disk"]
)
def test_every_format_gives_the_same_prompt_records(tmp_path, fmt):
    path = _write_format(tmp_path, fmt, ROWS)
    train, eval_prompts = _load(path, reference_column="answer")
    assert eval_prompts is None
    assert [record.prompt for record in train] == [row["prompt"] for row in ROWS]
    assert [record.reference for record in train] == [row["answer"] for row in ROWS]
    assert [record.prompt_id for record in train] == [0, 1, 2, 3]
    assert train[2].extra == {"topic": "mul"}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "save_to_disk"])
def test_chat_message_prompts_load_as_message_lists(tmp_path, fmt):
    path = _write_format(tmp_path, fmt, [{"prompt": CHAT, "answer": "2"}, {"prompt": CHAT[1:], "answer": "2"}])
    train, _ = _load(path, reference_column="answer")
    assert train[0].prompt == CHAT
    assert train[1].prompt == CHAT[1:]


def test_prompt_column_option_picks_the_column(tmp_path):
    path = _write_jsonl(tmp_path / "q.jsonl", [{"question": "why?", "solution": "because"}])
    train, _ = _load(path, prompt_column="question", reference_column="solution")
    assert (train[0].prompt, train[0].reference, train[0].extra) == ("why?", "because", {})


def test_reference_column_defaults_to_a_column_named_reference(tmp_path):
    path = _write_jsonl(tmp_path / "r.jsonl", [{"prompt": "p", "reference": "r"}])
    train, _ = _load(path)
    assert train[0].reference == "r"
    assert train[0].extra == {}


def test_without_reference_column_references_are_none(tmp_path):
    train, _ = _load(_write_jsonl(tmp_path / "p.jsonl", ROWS))
    assert all(record.reference is None for record in train)
    assert train[0].extra == {"answer": "2", "topic": "add"}


def test_missing_prompt_column_lists_available_columns(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(PromptSetError, match=r"no column 'question' .*available columns: prompt, answer, topic"):
        _load(path, prompt_column="question")


def test_missing_reference_column_lists_available_columns(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(PromptSetError, match=r"no column 'solution' \(set by reference_column\).*prompt, answer"):
        _load(path, reference_column="solution")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ("[]", "has no rows"),
        ('{"prompt": "a"}\n{"prompt": ', r"p.json:\d"),
    ],
)
def test_empty_or_broken_json_files_are_reported(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(PromptSetError, match=message):
        _load(path)


def test_broken_jsonl_line_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(PromptSetError, match=r"p.jsonl:2 is not valid JSON"):
        _load(path)


def test_csv_with_header_only_has_no_rows(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt,answer\n")
    with pytest.raises(PromptSetError, match="has no rows"):
        _load(path)


def test_unreadable_parquet_is_reported(tmp_path):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(PromptSetError, match="as Parquet"):
        _load(path)


@pytest.mark.parametrize(
    "prompt", [5, None, ["just", "strings"], [{"role": "user"}], [], {"role": "user", "content": "x"}]
)
def test_non_string_prompt_names_the_row(tmp_path, prompt):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "fine"}, {"prompt": prompt}])
    with pytest.raises(
        PromptSetError, match=r"row 1: column 'prompt' holds .* a prompt must be a non-empty string"
    ):
        _load(path)


def test_blank_prompt_names_the_row(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "  "}])
    with pytest.raises(PromptSetError, match="row 0: the prompt in column 'prompt' is empty"):
        _load(path)


def test_unknown_file_type_lists_supported_types(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("hello")
    with pytest.raises(PromptSetError, match=r"unknown file type '.txt'.*\.csv, \.json, \.jsonl"):
        _load(path)


def test_missing_local_file_is_reported(tmp_path):
    with pytest.raises(PromptSetError, match="does not exist"):
        _load(tmp_path / "nope.jsonl")


def test_folder_that_is_no_saved_dataset_is_reported(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(PromptSetError, match="not a dataset saved with `save_to_disk`"):
        _load(tmp_path / "folder")


def test_hub_id_that_cannot_load_offline_is_reported():
    with pytest.raises(PromptSetError, match="loading it as a Hugging Face Hub dataset failed"):
        load_prompt_sets(DatasetSettings(path="nobody-has/this-dataset"))


def test_no_dataset_path_is_reported():
    with pytest.raises(PromptSetError, match="--dataset"):
        load_prompt_sets(DatasetSettings())


@pytest.fixture
def dataset_dict_path(tmp_path):
    import datasets

    path = tmp_path / "dict"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:3]), "test": datasets.Dataset.from_list(ROWS[3:])}
    ).save_to_disk(str(path))
    return str(path)


def test_split_and_eval_split_of_a_saved_dataset_dict(dataset_dict_path):
    train, eval_prompts = _load(dataset_dict_path, split="train", eval_split="test", reference_column="answer")
    assert [record.prompt for record in train] == ["1+1=", "2+2=", "3*3="]
    assert [(record.prompt_id, record.prompt, record.reference) for record in eval_prompts] == [(0, "8-5=", "3")]


def test_unknown_split_lists_available_splits(dataset_dict_path):
    with pytest.raises(PromptSetError, match=r"no split 'validation'; available splits: train, test"):
        _load(dataset_dict_path, split="validation")


def test_split_of_a_single_file_must_be_train(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(PromptSetError, match="no split 'test'; available splits: train"):
        _load(path, split="test")


def test_eval_dataset_is_a_separate_file(tmp_path):
    path = _write_jsonl(tmp_path / "train.jsonl", ROWS[:2])
    eval_path = _write_jsonl(tmp_path / "eval.jsonl", ROWS[2:])
    train, eval_prompts = _load(path, eval_dataset=eval_path, reference_column="answer")
    assert [record.prompt for record in train] == ["1+1=", "2+2="]
    assert [record.reference for record in eval_prompts] == ["9", "3"]


def test_eval_fraction_holds_out_disjoint_prompts_reproducibly(tmp_path):
    rows = [{"prompt": f"p{index}"} for index in range(10)]
    settings = DatasetSettings(path=_write_jsonl(tmp_path / "p.jsonl", rows), eval_fraction=0.3)
    train, eval_prompts = load_prompt_sets(settings, seed=1)
    assert (len(train), len(eval_prompts)) == (7, 3)
    assert {r.prompt for r in train} | {r.prompt for r in eval_prompts} == {row["prompt"] for row in rows}
    assert not {r.prompt for r in train} & {r.prompt for r in eval_prompts}
    assert [r.prompt_id for r in eval_prompts] == [0, 1, 2]
    again_train, again_eval = load_prompt_sets(settings, seed=1)
    assert [r.prompt for r in again_eval] == [r.prompt for r in eval_prompts]
    other_seeds = {tuple(r.prompt for r in load_prompt_sets(settings, seed=seed)[1]) for seed in range(2, 6)}
    assert len(other_seeds | {tuple(r.prompt for r in eval_prompts)}) > 1


def test_eval_fraction_that_leaves_nothing_is_reported(tmp_path):
    path = _write_jsonl(tmp_path / "p.jsonl", ROWS[:2])
    with pytest.raises(PromptSetError, match="both need at least one"):
        _load(path, eval_fraction=0.1)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"eval_fraction": 1.5}, "strictly between 0 and 1"),
        ({"eval_fraction": 0.2, "eval_split": "test"}, "cannot be combined"),
    ],
)
def test_invalid_eval_settings_are_reported(settings, message):
    with pytest.raises(PromptSetError, match=message):
        DatasetSettings(path="p.jsonl", **settings)
