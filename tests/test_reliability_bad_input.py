"""Bad input to ``iterframe run`` (flags, YAML files, datasets, training settings) and to ``IterativeSFTConfig``:
each is refused with an error that names what is wrong and how to fix it, and nothing on disk changes (the
output directory stays absent or byte-identical, the model folder and the inputs untouched).

``step()`` input is covered by tests/test_trainer_bad_input.py; these go through the real command, with a real
model, so an input that slipped through would start a run and write files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import NamedTuple

import pytest
from click.testing import CliRunner

from iterframe import IterativeSFTConfig
from iterframe.cli import cli

PROMPTS = [{"prompt": f"{a}+{b}=", "reference": str(a + b)} for a, b in ((1, 1), (2, 3), (4, 4), (3, 2))]


def snapshot(root) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), and every folder (-> ``b"<dir>"``)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = b"<dir>"
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


class Case(NamedTuple):
    """``prepare(tmp_path)`` writes the inputs and returns the extra command-line arguments."""

    id: str
    prepare: Callable
    messages: tuple[str, ...]
    exit_code: int = 1


def _file(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def _rows(tmp_path, rows, name="rows.jsonl") -> str:
    return _file(tmp_path, name, "".join(json.dumps(row) + "\n" for row in rows))


def _yaml(tmp_path, text: str) -> list[str]:
    return [_file(tmp_path, "run.yaml", text)]


CASES = [
    # --- component names and options ------------------------------------------------------------------------
    Case(
        "unknown-generator",
        lambda t: ["--generator", "hff"],
        ("No generator named 'hff'", "Did you mean 'hf'", "iterframe plugins --all"),
    ),
    Case(
        "unknown-tokenizer",
        lambda t: ["--tokenizer", "completion_only"],
        ("No sample tokenizer named 'completion_only'", "Did you mean 'completion-only'"),
    ),
    Case("unknown-logger", lambda t: ["--logger", "jsnl"], ("No logger named 'jsnl'", "Did you mean 'jsonl'")),
    Case(
        "missing-required-option",
        lambda t: ["--reward", "python"],
        ("reward 'python': required option(s) 'function' not set",),
    ),
    Case(
        "misspelled-option",
        lambda t: ["--reward", "python", "--set", "reward.functoin=m:f"],
        ("reward 'python' has no option 'functoin'", "Did you mean 'function'"),
    ),
    Case(
        "wrong-option-type",
        lambda t: ["--filter", "threshold", "--set", "filter.threshold.min_reward=high"],
        ("filter 'threshold': option 'min_reward' expects float, got 'high'",),
    ),
    Case(
        "option-value-out-of-range",
        lambda t: ["--set", "generator.temperature=0"],
        ("temperature must be > 0", "use do_sample=false for greedy"),
    ),
    Case(
        "set-option-of-absent-filter",
        lambda t: ["--filter", "threshold", "--set", "filter.dedupe.normalise=true"],
        ("no filter 'dedupe' in this run", "add one with --filter NAME"),
    ),
    # --- loop and training settings ---------------------------------------------------------------------------
    Case(
        "wrong-loop-type", lambda t: ["--set", "loop.iterations=three"], ("'iterations' expects int, got 'three'",)
    ),
    Case("negative-loop-value", lambda t: ["--set", "loop.save_every=0"], ("save_every must be an integer >= 1",)),
    Case(
        "wrong-train-type",
        lambda t: ["--set", "train.max_length=long"],
        ("'max_length' expects Optional[int], got 'long'",),
    ),
    Case(
        "unknown-truncation-mode",
        lambda t: ["--set", "train.truncation_mode=keep_middle"],
        ("truncation_mode='keep_middle' is not supported; use one of ['keep_end', 'keep_start']",),
    ),
    Case(
        "misspelled-train-field",
        lambda t: ["--set", "train.gradient_accumulation=4"],
        ("train.gradient_accumulation is not an IterativeSFTConfig field", "'gradient_accumulation_steps'"),
    ),
    Case(
        "train-field-set-elsewhere",
        lambda t: ["--set", "train.output_dir=elsewhere"],
        ("train.output_dir cannot be set in the train section; use the top-level `output_dir:` key",),
    ),
    Case(
        "unknown-dtype",
        lambda t: ["--model-init-kwargs", '{"dtype": "float33"}'],
        ("model_init_kwargs['dtype']='float33' is not a torch dtype", "'float32', 'bfloat16'"),
    ),
    Case(
        "model-init-kwargs-not-an-object",
        lambda t: ["--model-init-kwargs", "[1, 2]"],
        ("model_init_kwargs must be a JSON object",),
    ),
    # --- datasets -------------------------------------------------------------------------------------------
    Case(
        "missing-prompt-column",
        lambda t: ["--prompt-column", "question"],
        ("no column 'question' (set by prompt_column); available columns: prompt, reference",),
    ),
    Case(
        "missing-reference-column",
        lambda t: ["--reference-column", "answer"],
        ("no column 'answer' (set by reference_column); available columns: prompt, reference",),
    ),
    Case("empty-dataset-file", lambda t: ["--dataset", _file(t, "empty.jsonl", "")], ("is empty",)),
    Case(
        "whitespace-only-dataset-file",
        lambda t: ["--dataset", _file(t, "blank.json", "\n  \n")],
        ("is empty",),
    ),
    Case(
        "unreadable-dataset-bytes",
        lambda t: ["--dataset", _file(t, "binary.jsonl", b"\xff\xfe\x00garbage\x80")],
        ("Cannot read", "binary.jsonl", "codec can't decode"),
    ),
    Case(
        "dataset-folder-that-is-no-dataset",
        lambda t: ["--dataset", str((t / "not-a-dataset").mkdir() or t / "not-a-dataset")],
        ("is not a dataset saved with `save_to_disk`", "Point --dataset at a data file"),
    ),
    Case(
        "dataset-of-unsupported-shape",
        lambda t: ["--dataset", _file(t, "number.json", "42")],
        ("holds JSON of an unsupported shape", "use a list of row objects"),
    ),
    Case(
        "dataset-unknown-file-type",
        lambda t: ["--dataset", _file(t, "prompts.txt", "1+1=\n")],
        ("unknown file type '.txt'", "Supported: .csv, .json, .jsonl"),
    ),
    Case(
        "dataset-header-only-csv",
        lambda t: ["--dataset", _file(t, "header.csv", "prompt,reference\n")],
        ("has no rows: there are no prompts to train on",),
    ),
    Case(
        "non-string-prompt",
        lambda t: ["--dataset", _rows(t, PROMPTS[:1] + [{"prompt": 7, "reference": "7"}])],
        ("row 1: column 'prompt' holds int 7", "a prompt must be a non-empty string or a non-empty list"),
    ),
    Case(
        "null-prompt",
        lambda t: ["--dataset", _rows(t, [{"prompt": None, "reference": "0"}])],
        ("row 0: column 'prompt' holds NoneType None",),
    ),
    Case(
        "malformed-chat-prompt",
        lambda t: ["--dataset", _rows(t, [{"prompt": [{"role": "user"}], "reference": "0"}])],
        ("row 0: column 'prompt' holds list", "({'role': str, 'content': str})"),
    ),
    Case(
        "broken-jsonl-line",
        lambda t: ["--dataset", _file(t, "broken.jsonl", json.dumps(PROMPTS[0]) + "\n{oops\n")],
        ("broken.jsonl:2 is not valid JSON",),
    ),
    Case(
        "prompts-longer-than-max-length",
        lambda t: (
            ["--dataset", _rows(t, PROMPTS + [{"prompt": "1+" * 40 + "1=", "reference": "41"}])]
            + ["--set", "train.max_length=12"]
        ),
        ("1 of 5 prompts do not fit train.max_length=12", "prompt_id 4:", "Raise max_length"),
    ),
    # --- output directory -----------------------------------------------------------------------------------
    Case(
        "output-dir-under-a-file",
        lambda t: ["--output-dir", os.path.join(_file(t, "a-file", "not a folder"), "run")],
        ("Cannot write to output directory", "a-file/run", "choose another --output-dir"),
    ),
    Case(
        "output-dir-name-too-long",
        lambda t: ["--output-dir", str(t / ("x" * 300))],
        ("Cannot write to output directory", "File name too long", "choose another --output-dir"),
    ),
    Case(
        "output-dir-is-a-file",
        lambda t: ["--output-dir", _file(t, "out-file", "mine")],
        ("is a file; choose another --output-dir",),
    ),
    Case(
        "resume-of-an-empty-dir",
        lambda t: ["--output-dir", str((t / "empty").mkdir() or t / "empty"), "--resume"],
        ("Nothing to resume in", "Leave out --resume to start a run there"),
    ),
    Case("resume-of-an-absent-dir", lambda t: ["--resume"], ("Nothing to resume in", "no run.json")),
    # --- conflicting flags ----------------------------------------------------------------------------------
    Case(
        "resume-and-overwrite",
        lambda t: ["--resume", "--overwrite"],
        ("--resume and --overwrite exclude each other", "Pass one of them"),
        exit_code=2,
    ),
    Case(
        "eval-fraction-and-eval-split",
        lambda t: ["--eval-fraction", "0.5", "--eval-split", "test"],
        ("eval_fraction cannot be combined with eval_split or eval_dataset: choose one way",),
    ),
    Case(
        "eval-fraction-and-eval-dataset",
        lambda t: ["--eval-fraction", "0.25", "--eval-dataset", _rows(t, PROMPTS, "eval.jsonl")],
        ("eval_fraction cannot be combined with eval_split or eval_dataset",),
    ),
    Case(
        "eval-fraction-leaving-no-training-prompt",
        lambda t: ["--eval-fraction", "0.9"],
        ("leaves 0 to train on and 4 to evaluate; both need at least one",),
    ),
    # --- YAML files -----------------------------------------------------------------------------------------
    Case(
        "yaml-misspelled-key",
        lambda t: _yaml(t, "filtres: [threshold]\n"),
        ("Unknown config key 'filtres'", "Did you mean 'filters'"),
    ),
    Case("yaml-section-not-a-mapping", lambda t: _yaml(t, "loop: 3\n"), ("loop must be a mapping, got 3",)),
    Case(
        "yaml-filters-not-a-list",
        lambda t: _yaml(t, "filters: 5\n"),
        ("filters must be a list of components, got 5",),
    ),
    Case(
        "yaml-component-name-not-a-string",
        lambda t: _yaml(t, "reward: {name: 3}\n"),
        ("reward.name must be a component name (a string), got 3",),
    ),
    Case(
        "yaml-misspelled-loop-option",
        lambda t: _yaml(t, "loop: {iteratons: 2}\n"),
        ("has no option 'iteratons'", "Did you mean 'iterations'"),
    ),
    Case("yaml-syntax-error", lambda t: _yaml(t, "loop: {iterations: 2\n"), ("is not valid YAML",)),
    Case(
        "yaml-not-a-mapping",
        lambda t: _yaml(t, "- model\n- reward\n"),
        ("must hold a mapping of keys, got a list",),
    ),
    Case(
        "yaml-python-tag",
        lambda t: _yaml(t, "reward: !!python/object/apply:os.system ['touch pwned']\n"),
        ("is not valid YAML", "python/object/apply:os.system"),
    ),
    Case("missing-config-file", lambda t: [str(t / "absent.yaml")], ("Cannot read config file", "absent.yaml")),
]


@pytest.fixture
def base_args(tmp_path, tiny_llama_path) -> list[str]:
    dataset = _rows(tmp_path, PROMPTS, "prompts.jsonl")
    return [
        "run",
        "--model",
        tiny_llama_path,
        "--dataset",
        dataset,
        "--reward",
        "answer-match",
        "--iterations",
        "1",
        "--prompts-per-iteration",
        "2",
        "--samples-per-prompt",
        "2",
        "--set",
        "generator.max_new_tokens=2",
        "--output-dir",
        str(tmp_path / "out"),
        "--quiet",
    ]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_by_name_and_changes_nothing_on_disk(case, base_args, tmp_path, tiny_llama_path):
    extra = case.prepare(tmp_path)
    if extra and extra[0].endswith((".yaml", ".yml")):  # a config file comes first; the flags still apply
        extra, base_args = [], ["run", extra[0], *base_args[1:]]
    inputs_before, model_before = snapshot(tmp_path), snapshot(tiny_llama_path)

    result = CliRunner().invoke(cli, [*base_args, *extra])

    assert result.exit_code == case.exit_code, result.output
    for message in case.messages:
        assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert snapshot(tmp_path) == inputs_before  # the output dir is still absent (or as it was), inputs unchanged
    assert snapshot(tiny_llama_path) == model_before


def test_there_are_at_least_thirty_bad_input_cases_across_cli_yaml_and_datasets():
    assert len(CASES) >= 30


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"max_length": 0}, ValueError, "max_length=0 must be a positive integer or None"),
        ({"max_length": True}, ValueError, "max_length=True must be a positive integer or None"),
        ({"pad_to_multiple_of": 0}, ValueError, "pad_to_multiple_of=0 must be a positive integer or None"),
        ({"truncation_mode": "left"}, ValueError, "truncation_mode='left' is not supported; use one of"),
        ({"model_init_kwargs": "{nope"}, ValueError, "model_init_kwargs is not valid JSON"),
        ({"model_init_kwargs": "[1]"}, ValueError, "model_init_kwargs must be a JSON object"),
        ({"model_init_kwargs": 5}, TypeError, "model_init_kwargs must be a dict or a JSON string, got int"),
        ({"model_init_kwargs": {"dtype": "half-ish"}}, ValueError, "model_init_kwargs['dtype']='half-ish'"),
    ],
    ids=["max-length-0", "max-length-bool", "pad-multiple-0", "truncation", "json", "json-list", "int", "dtype"],
)
def test_iterative_sft_config_refuses_bad_values_by_field(tmp_path, settings, error, message):
    with pytest.raises(error) as caught:
        IterativeSFTConfig(output_dir=str(tmp_path / "out"), report_to="none", **settings)
    assert message in str(caught.value)
    assert not (tmp_path / "out").exists()
