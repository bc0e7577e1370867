"""``iterframe run`` flags, config precedence and input validation (the run itself is captured, not trained).

Every case here stops before training: ``execute_run`` is replaced by a recorder, so what is checked is how the
command turns flags, YAML and ``--set`` into the prepared run, and that bad input is refused with nothing
written.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml
from click.testing import CliRunner

from iterframe.api import runner
from iterframe.cli import cli, run_cmd

ROWS = [
    {"question": "1+1=", "answer": "2", "reference": "ref-a"},
    {"question": "2+3=", "answer": "5", "reference": "ref-b"},
    {"question": "4+4=", "answer": "8", "reference": "ref-c"},
    {"question": "3+2=", "answer": "5", "reference": "ref-d"},
]


@pytest.fixture
def prompts_path(tmp_path) -> str:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return str(path)


@pytest.fixture
def captured(monkeypatch) -> list:
    """The prepared runs ``iterframe run`` would execute (nothing is trained)."""
    runs = []

    def record(prepared):
        runs.append(prepared)
        return []

    monkeypatch.setattr(runner, "execute_run", record)
    return runs


@pytest.fixture
def model_dir(tmp_path) -> str:
    """A folder standing in for a model (its config.json empty): these runs stop before a model is loaded."""
    path = tmp_path / "some-model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return str(path)


def _invoke(*args):
    return CliRunner().invoke(cli, ["run", *args])


def _base_args(tmp_path, prompts_path, *extra):
    model = tmp_path / "some-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")  # passes the checks made before loading, and does not load
    return [
        "--model",
        str(model),
        "--dataset",
        prompts_path,
        "--prompt-column",
        "question",
        "--reward",
        "answer-match",
        "--output-dir",
        str(tmp_path / "out"),
        *extra,
    ]


def _prepared(captured, tmp_path, prompts_path, *extra):
    result = _invoke(*_base_args(tmp_path, prompts_path, *extra))
    assert result.exit_code == 0, result.output
    assert len(captured) == 1
    return captured[0]


def _names(components):
    return [component.name for component in components]


# --- flags --------------------------------------------------------------------------------------------------


def test_model_dataset_and_prompt_column_flags(captured, tmp_path, prompts_path):
    prepared = _prepared(captured, tmp_path, prompts_path)
    assert prepared.config.model == str(tmp_path / "some-model")
    assert [record.prompt for record in prepared.prompts] == [row["question"] for row in ROWS]
    assert prepared.config.loop.output_dir == str(tmp_path / "out")


def test_reference_column_flag_picks_references(captured, tmp_path, prompts_path):
    default = _prepared(captured, tmp_path, prompts_path)
    assert [record.reference for record in default.prompts] == ["ref-a", "ref-b", "ref-c", "ref-d"]
    captured.clear()
    chosen = _prepared(captured, tmp_path, prompts_path, "--reference-column", "answer")
    assert [record.reference for record in chosen.prompts] == ["2", "5", "8", "5"]


def test_split_and_eval_split_flags(captured, tmp_path):
    import datasets

    path = str(tmp_path / "saved")
    datasets.DatasetDict(
        {"dev": datasets.Dataset.from_list(ROWS[:3]), "test": datasets.Dataset.from_list(ROWS[3:])}
    ).save_to_disk(path)
    prepared = _prepared(captured, tmp_path, path, "--split", "dev", "--eval-split", "test")
    assert [record.prompt for record in prepared.prompts] == ["1+1=", "2+3=", "4+4="]
    assert [record.prompt for record in prepared.eval_prompts] == ["3+2="]


def test_eval_fraction_flag_holds_out_prompts(captured, tmp_path, prompts_path):
    prepared = _prepared(captured, tmp_path, prompts_path, "--eval-fraction", "0.5")
    assert (len(prepared.prompts), len(prepared.eval_prompts)) == (2, 2)


def test_eval_dataset_flag_reads_a_second_file(captured, tmp_path, prompts_path):
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text(json.dumps({"question": "9-1=", "answer": "8", "reference": "8"}) + "\n")
    prepared = _prepared(captured, tmp_path, prompts_path, "--eval-dataset", str(eval_path))
    assert [record.prompt for record in prepared.eval_prompts] == ["9-1="]


def test_component_flags_build_the_named_components_in_order(captured, tmp_path, prompts_path):
    prepared = _prepared(
        captured,
        tmp_path,
        prompts_path,
        "--generator",
        "hf",
        "--filter",
        "threshold",
        "--filter",
        "best-of-n",
        "--tokenizer",
        "full-text",
        "--logger",
        "console",
        "--logger",
        "jsonl",
    )
    components = prepared.components
    assert components["generator"].name == "hf"
    assert components["reward"].name == "answer-match"
    assert _names(components["filters"]) == ["threshold", "best-of-n"]
    assert components["sample_tokenizer"].name == "full-text"
    assert _names(components["loggers"]) == ["console", "jsonl"]


def test_default_components(captured, tmp_path, prompts_path):
    components = _prepared(captured, tmp_path, prompts_path).components
    assert components["generator"].name == "hf"
    assert components["filters"] == []
    assert components["sample_tokenizer"].name == "completion-only"
    assert _names(components["loggers"]) == ["console"]


def test_chat_prompts_default_to_the_chat_tokenizer(captured, tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"question": [{"role": "user", "content": "1+1?"}], "reference": "2"}) + "\n")
    prepared = _prepared(captured, tmp_path, str(path))
    assert prepared.prompts[0].prompt == [{"role": "user", "content": "1+1?"}]
    assert prepared.components["sample_tokenizer"].name == "chat"


def test_loop_flags(captured, tmp_path, prompts_path):
    loop = _prepared(
        captured,
        tmp_path,
        prompts_path,
        "--iterations",
        "3",
        "--prompts-per-iteration",
        "2",
        "--samples-per-prompt",
        "5",
        "--seed",
        "9",
    ).config.loop
    assert (loop.iterations, loop.prompts_per_iteration, loop.samples_per_prompt, loop.seed) == (3, 2, 5, 9)


@pytest.mark.parametrize("flag", ["--iterations", "--prompts-per-iteration", "--samples-per-prompt"])
def test_loop_count_flags_must_be_positive(captured, tmp_path, prompts_path, flag):
    result = _invoke(*_base_args(tmp_path, prompts_path, flag, "0"))
    assert result.exit_code == 2
    assert "x>=1" in result.output
    assert captured == []


def test_model_init_kwargs_flag_reaches_the_training_arguments(captured, tmp_path, prompts_path):
    import torch

    prepared = _prepared(captured, tmp_path, prompts_path, "--model-init-kwargs", '{"dtype": "float32"}')
    assert prepared.config.train.model_init_kwargs == {"dtype": torch.float32}
    assert prepared.config.model_init_kwargs == {"dtype": "float32"}


def test_trust_remote_code_is_off_unless_set(captured, tmp_path, prompts_path):
    prepared = _prepared(captured, tmp_path, prompts_path)
    assert not (prepared.config.train.model_init_kwargs or {}).get("trust_remote_code", False)


def test_set_flag_reaches_components_training_and_loop(captured, tmp_path, prompts_path):
    prepared = _prepared(
        captured,
        tmp_path,
        prompts_path,
        "--filter",
        "threshold",
        "--filter",
        "top-fraction",
        "--set",
        "generator.temperature=0.7",
        "--set",
        "generator.max-new-tokens=3",
        "--set",
        "filter.top-fraction.fraction=0.25",
        "--set",
        "filter.threshold.min_reward=0.5",
        "--set",
        "train.learning_rate=1e-4",
        "--set",
        "loop.replay_buffer_size=8",
    )
    components = prepared.components
    assert components["generator"].options.temperature == 0.7
    assert components["generator"].options.max_new_tokens == 3
    assert components["filters"][0].options.min_reward == 0.5
    assert components["filters"][1].options.fraction == 0.25
    assert prepared.config.train.learning_rate == pytest.approx(1e-4)
    assert prepared.config.loop.replay_buffer_size == 8


def test_quiet_flag_sets_quiet_and_leaves_the_console_table_out(captured, tmp_path, prompts_path):
    prepared = _prepared(captured, tmp_path, prompts_path, "--logger", "console", "--logger", "jsonl", "--quiet")
    assert prepared.config.loop.quiet is True
    assert _names(prepared.components["loggers"]) == ["jsonl"]
    assert [spec.name for spec in prepared.config.loggers] == ["console", "jsonl"]


def _fake_run(output_dir, *extra_files):
    os.makedirs(output_dir)
    for name in ("run.json", "metrics.jsonl", *extra_files):
        with open(os.path.join(output_dir, name), "w") as handle:
            handle.write("{}\n")


def test_resume_flag_asks_the_loop_to_resume(captured, tmp_path, prompts_path):
    _fake_run(str(tmp_path / "out"))
    prepared = _prepared(captured, tmp_path, prompts_path, "--resume")
    assert prepared.config.loop.existing_output == "resume"


def test_overwrite_flag_asks_the_loop_to_overwrite(captured, tmp_path, prompts_path):
    _fake_run(str(tmp_path / "out"))
    prepared = _prepared(captured, tmp_path, prompts_path, "--overwrite")
    assert prepared.config.loop.existing_output == "overwrite"


def test_resume_without_config_reuses_the_saved_config(captured, tmp_path, prompts_path, model_dir):
    output_dir = tmp_path / "out"
    _fake_run(str(output_dir))
    saved = {"model": model_dir, "dataset": {"path": prompts_path, "prompt_column": "question"}}
    saved.update({"reward": "answer-match", "loop": {"iterations": 2}, "output_dir": str(output_dir)})
    (output_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    result = _invoke("--resume", "--output-dir", str(output_dir), "--iterations", "4")
    assert result.exit_code == 0, result.output
    (prepared,) = captured
    assert prepared.config.model == model_dir
    assert prepared.config.loop.iterations == 4


# --- config file and precedence -----------------------------------------------------------------------------


def test_config_file_flags_and_set_in_order_of_precedence(captured, tmp_path, prompts_path, model_dir):
    config = {
        "model": model_dir,
        "dataset": {"path": prompts_path, "prompt_column": "question", "reference_column": "answer"},
        "reward": "answer-match",
        "filters": [{"name": "threshold", "options": {"min_reward": 0.9}}],
        "loop": {"iterations": 7, "samples_per_prompt": 3, "prompts_per_iteration": 2},
        "train": {"learning_rate": "3e-4"},
        "output_dir": str(tmp_path / "out"),
    }
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = _invoke(
        str(config_path), "--iterations", "4", "--samples-per-prompt", "2", "--set", "loop.iterations=2"
    )
    assert result.exit_code == 0, result.output
    (prepared,) = captured
    assert prepared.config.model == model_dir
    assert prepared.config.loop.iterations == 2  # --set beats the flag, which beats YAML
    assert prepared.config.loop.samples_per_prompt == 2  # flag beats YAML
    assert prepared.config.loop.prompts_per_iteration == 2  # YAML kept
    assert prepared.components["filters"][0].options.min_reward == 0.9
    assert prepared.config.train.learning_rate == pytest.approx(3e-4)
    assert [record.reference for record in prepared.prompts] == ["2", "5", "8", "5"]


def test_no_arguments_resolves_the_demo_spec_and_flags_override_it(captured, tmp_path):
    from iterframe.demo import demo_run_spec

    spec = demo_run_spec()
    output_dir = tmp_path / "demo"
    result = _invoke("--iterations", "2", "--output-dir", str(output_dir))
    assert result.exit_code == 0, result.output
    assert "built-in demo" in result.output
    (prepared,) = captured
    assert prepared.config.loop.iterations == 2
    assert prepared.config.loop.output_dir == str(output_dir)
    assert prepared.config.model == spec["model"]
    assert len(prepared.prompts) > 0


def test_the_demo_run_again_in_the_same_folder_starts_a_numbered_run_beside_the_last(
    captured, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for folder in ("iterframe-demo", "iterframe-demo-2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "run.json").write_text("{}")
    result = _invoke("--iterations", "2")
    assert result.exit_code == 0, result.output
    assert "running the built-in demo into iterframe-demo-3/" in result.output
    assert captured[-1].config.loop.output_dir == str(tmp_path / "iterframe-demo-3")
    resumed = _invoke("--iterations", "2", "--resume")  # --resume and --overwrite act on the default folder
    assert resumed.exit_code == 0, resumed.output
    assert captured[-1].config.loop.output_dir == str(tmp_path / "iterframe-demo")


# --- refused input: clear errors, nothing written -----------------------------------------------------------


def _refused(result, captured, output_dir, *messages):
    assert result.exit_code != 0
    for message in messages:
        assert message in result.output, result.output
    assert captured == []
    assert not os.path.exists(output_dir)


@pytest.mark.parametrize(
    ("extra", "messages"),
    [
        (["--reward", "answer-mach"], ["No reward named 'answer-mach'", "Did you mean 'answer-match'"]),
        (["--filter", "top-fractoin"], ["No filter named 'top-fractoin'", "Did you mean 'top-fraction'"]),
        (["--set", "generator.temprature=0.5"], ["has no option 'temprature'", "Did you mean 'temperature'"]),
        (["--set", "generator.max_new_tokens=lots"], ["'max_new_tokens' expects int, got 'lots'"]),
        (["--prompt-column", "prompt"], ["no column 'prompt'", "available columns: question, answer, reference"]),
        (["--reference-column", "solution"], ["no column 'solution'"]),
        (["--set", "train.learning_rat=1e-3"], ["Did you mean 'learning_rate'"]),
        (["--set", "nonsense"], ["must look like KEY=VALUE"]),
        (["--eval-fraction", "2"], ["strictly between 0 and 1"]),
        (["--model-init-kwargs", "{bad json"], ["model_init_kwargs is not valid JSON"]),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(captured, tmp_path, prompts_path, extra, messages):
    result = _invoke(*_base_args(tmp_path, prompts_path), *extra)
    _refused(result, captured, tmp_path / "out", *messages)


def test_missing_dataset_file_is_refused(captured, tmp_path):
    result = _invoke(*_base_args(tmp_path, str(tmp_path / "absent.jsonl")))
    _refused(result, captured, tmp_path / "out", "does not exist")


def test_empty_dataset_file_is_refused(captured, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    _refused(_invoke(*_base_args(tmp_path, str(path))), captured, tmp_path / "out", "is empty")


def test_missing_reward_and_model_are_refused(captured, tmp_path, prompts_path):
    result = _invoke("--dataset", prompts_path, "--output-dir", str(tmp_path / "out"))
    _refused(result, captured, tmp_path / "out", "No model given: pass --model")
    result = _invoke("--model", "m", "--dataset", prompts_path, "--output-dir", str(tmp_path / "out"))
    _refused(result, captured, tmp_path / "out", "No reward given")


def test_bad_config_file_is_refused(captured, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nrewrd: answer-match\n")
    _refused(
        _invoke(str(path), "--output-dir", str(tmp_path / "out")),
        captured,
        tmp_path / "out",
        "Did you mean 'reward'",
    )


def test_unwritable_output_dir_is_refused(captured, tmp_path, prompts_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = _base_args(tmp_path, prompts_path)
    args[args.index("--output-dir") + 1] = str(blocker / "run")
    result = _invoke(*args)
    assert result.exit_code == 1
    assert "Cannot write to output directory" in result.output
    assert blocker.read_text() == "not a folder"
    assert captured == []


def test_output_dir_that_is_a_file_is_refused(captured, tmp_path, prompts_path):
    (tmp_path / "out").write_text("x")
    result = _invoke(*_base_args(tmp_path, prompts_path))
    assert result.exit_code == 1 and "is a file" in result.output
    assert captured == []


def test_resume_and_overwrite_together_are_refused(captured, tmp_path, prompts_path):
    result = _invoke(*_base_args(tmp_path, prompts_path), "--resume", "--overwrite")
    assert result.exit_code == 2
    assert "--resume and --overwrite exclude each other" in result.output
    assert captured == []
    assert not (tmp_path / "out").exists()


def test_existing_run_is_refused_without_resume_or_overwrite(captured, tmp_path, prompts_path):
    output_dir = tmp_path / "out"
    _fake_run(str(output_dir), "config.yaml")
    before = {name: (output_dir / name).read_text() for name in os.listdir(output_dir)}
    result = _invoke(*_base_args(tmp_path, prompts_path))
    assert result.exit_code == 1
    assert (
        "already holds a run" in result.output and "--resume" in result.output and "--overwrite" in result.output
    )
    assert {name: (output_dir / name).read_text() for name in os.listdir(output_dir)} == before
    assert captured == []


def test_folder_with_the_users_config_yaml_but_no_run_is_refused(captured, tmp_path, prompts_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "config.yaml").write_text("# my own notes\nmodel: mine\n")
    for extra in ((), ("--overwrite",)):
        result = _invoke(*_base_args(tmp_path, prompts_path), *extra)
        assert result.exit_code == 1
        assert "holds a config.yaml but no iterframe run" in result.output
        assert "Choose another --output-dir" in result.output
    assert (output_dir / "config.yaml").read_text() == "# my own notes\nmodel: mine\n"
    assert os.listdir(output_dir) == ["config.yaml"]
    assert captured == []


def test_folder_without_a_run_is_usable(captured, tmp_path, prompts_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    _prepared(captured, tmp_path, prompts_path)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_resume_of_nothing_is_refused(captured, tmp_path, prompts_path):
    result = _invoke(*_base_args(tmp_path, prompts_path), "--resume")
    _refused(result, captured, tmp_path / "out", "Nothing to resume")


def test_plugin_load_errors_stop_the_run(captured, tmp_path, prompts_path, monkeypatch):
    import iterframe.plugins.manager as plugins

    def broken():
        raise plugins.PluginLoadError("Plugin(s) failed to load:\n  iterframe-broken: ImportError")

    monkeypatch.setattr(plugins, "check_plugin_load_errors", broken)
    _refused(_invoke(*_base_args(tmp_path, prompts_path)), captured, tmp_path / "out", "iterframe-broken")


def test_unloadable_model_leaves_no_output_dir(tmp_path, prompts_path):
    result = _invoke(*_base_args(tmp_path, prompts_path))  # the folder holds no loadable model
    assert result.exit_code == 1
    assert f"Cannot load model {str(tmp_path / 'some-model')!r}" in result.output
    assert not (tmp_path / "out").exists()


#: Every option of ``iterframe run``.
FLAGS = sorted(option for param in run_cmd.command.params for option in param.opts if option.startswith("--"))


def test_help_lists_every_flag():
    result = _invoke("--help")
    assert result.exit_code == 0
    for flag in FLAGS:
        assert flag in result.output


def test_docs_describe_every_flag():
    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "cli.md")
    with open(docs, encoding="utf-8") as handle:
        text = handle.read()
    missing = [flag for flag in FLAGS if f"`{flag}" not in text]
    assert not missing, f"docs/cli.md does not describe {missing}"


def test_the_folders_the_readme_commands_and_the_demo_write_are_git_ignored():
    import re
    import shutil
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if shutil.which("git") is None or not os.path.exists(os.path.join(root, ".git")):
        pytest.skip("not a git checkout")
    with open(os.path.join(root, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    written = re.findall(r"build_tiny_causal_lm\('([^']+)'\)", readme) + re.findall(r"--output-dir (\S+)", readme)
    assert "my-model" in written and "runs/math" in written
    paths = [*written, "iterframe-demo", "iterframe-demo-2"]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *[f"{path}/x" for path in paths]],
        cwd=root, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert ignored == [f"{path}/x" for path in paths]


def test_a_finished_run_leaves_its_process_group(captured, tmp_path, prompts_path, monkeypatch):
    left = []
    monkeypatch.setattr("iterframe.api.leave_process_group", lambda: left.append(len(captured)))
    _prepared(captured, tmp_path, prompts_path)
    assert left == [1]  # after the run
