"""``iterframe run`` before training: a light start, model paths and Hub ids checked at once, the flags people
expect with their defaults in --help, --print-config, --dry-run, unknown flags, and errors that point at the fix.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import click
import pytest
import yaml
from click.testing import CliRunner

from iterframe.api import runner
from iterframe.cli import cli, run_cmd
from iterframe.run_config import FLAGS, apply_flags, resolve_run_config

ROWS = [{"question": f"{a}+{b}=", "answer": str(a + b)} for a, b in ((1, 1), (2, 3), (4, 4), (3, 2))]


@pytest.fixture
def captured(monkeypatch) -> list:
    """The prepared runs ``iterframe run`` would execute (nothing is trained)."""
    runs = []
    monkeypatch.setattr(runner, "execute_run", lambda prepared: runs.append(prepared) or [])
    return runs


@pytest.fixture
def dataset(tmp_path) -> str:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return str(path)


def _args(model: str, dataset: str, output_dir, *extra: str) -> list[str]:
    columns = ["--prompt-column", "question", "--reference-column", "answer"]
    return ["run", "--model", model, "--dataset", dataset, *columns, "--reward", "answer-match"] + [
        "--output-dir",
        str(output_dir),
        *extra,
    ]


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _model_folder(path):
    """A folder that passes the model checks made before loading (it holds a config.json), and need not load."""
    path.mkdir()
    (path / "config.json").write_text("{}")


# --- a light start ------------------------------------------------------------------------------------------


def _modules_loaded_by(code: str, env_changes: dict) -> list[str]:
    env = {key: value for key, value in os.environ.items() if key not in env_changes}
    env.update({key: value for key, value in env_changes.items() if value is not None})
    probe = code + "\nimport sys\nprint([m for m in ('torch', 'transformers', 'peft') if m in sys.modules])"
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    return eval(output.stdout.strip().splitlines()[-1])


def test_importing_the_command_line_loads_no_torch_transformers_or_peft():
    assert _modules_loaded_by("import iterframe.cli", {}) == []


def test_help_version_and_plugins_load_no_torch_even_with_installed_plugins():
    code = (
        "from iterframe.cli import cli\n"
        "for args in (['--help'], ['--version'], ['run', '--help'], ['plugins', '--all']):\n"
        "    try:\n"
        "        cli(args, prog_name='iterframe')\n"
        "    except SystemExit as stop:\n"
        "        assert not stop.code, (args, stop.code)\n"
    )
    assert _modules_loaded_by(code, {"ITERFRAME_LOAD_PLUGINS": None}) == []


# --- model paths and Hub ids --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["./tiny-modle", "models/tiny-modle", "/no/such/place/model", "a/b/c"])
def test_a_path_that_does_not_exist_is_refused_at_once_naming_the_folder(
    tmp_path, dataset, monkeypatch, captured, model
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny-model").mkdir(parents=True)
    (tmp_path / "tiny-model").mkdir()
    result = _run(*_args(model, dataset, tmp_path / "out"))
    assert result.exit_code == 1
    expected = os.path.abspath(os.path.expanduser(model))
    assert f"Model folder {expected!r} does not exist" in result.output
    if "modle" in model:
        assert "Similar folders there: tiny-model" in result.output
    assert not (tmp_path / "out").exists() and captured == []


def test_a_hub_id_offline_is_refused_at_once(tmp_path, dataset, captured):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # as conftest sets it
    result = _run(*_args("no-org/no-such-model", dataset, tmp_path / "out"))
    assert result.exit_code == 1
    assert "'no-org/no-such-model' is neither a local folder nor in the Hugging Face cache" in result.output
    assert "HF_HUB_OFFLINE is set" in result.output
    assert not (tmp_path / "out").exists() and captured == []


def test_a_hub_id_is_refused_at_once_when_the_hub_does_not_answer(tmp_path, dataset, monkeypatch, captured):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    result = _run(*_args("no-org/no-such-model", dataset, tmp_path / "out"))
    assert result.exit_code == 1
    assert "http://127.0.0.1:9 does not answer (offline?)" in result.output
    assert not (tmp_path / "out").exists() and captured == []


def test_a_model_path_that_is_a_file_is_refused(tmp_path, dataset, captured):
    (tmp_path / "model.safetensors").write_text("x")
    result = _run(*_args(str(tmp_path / "model.safetensors"), dataset, tmp_path / "out"))
    assert result.exit_code == 1 and "is a file; --model takes a model folder" in result.output


def test_a_model_folder_without_config_json_is_refused_naming_a_folder_in_it_that_has_one(
    tmp_path, dataset, captured
):
    (tmp_path / "run" / "final").mkdir(parents=True)
    (tmp_path / "run" / "final" / "config.json").write_text("{}")
    result = _run(*_args(str(tmp_path / "run"), dataset, tmp_path / "out"))
    assert result.exit_code == 1
    assert "has no config.json, so it holds no saved model" in result.output
    assert "Folders in it that hold one: final." in result.output
    assert "model_type" not in result.output and not (tmp_path / "out").exists() and captured == []


def test_a_mistyped_dataset_path_names_the_similar_files_there(tmp_path, captured):
    _model_folder(tmp_path / "model")
    (tmp_path / "arithmetic.jsonl").write_text('{"question": "1+1=", "answer": "2"}\n')
    result = _run(*_args(str(tmp_path / "model"), str(tmp_path / "arithmetc.jsonl"), tmp_path / "out"))
    assert result.exit_code == 1
    assert "does not exist. Similar names there: arithmetic.jsonl." in result.output


# --- flags --------------------------------------------------------------------------------------------------


def test_the_common_training_and_sampling_flags_reach_their_keys(tmp_path, dataset, captured):
    _model_folder(tmp_path / "model")
    extra = ["--learning-rate", "0.001", "--batch-size", "3", "--max-length", "64", "--max-new-tokens", "5"]
    extra += ["--temperature", "0.5", "--eval-every", "2", "--tokenizer", "full-text"]
    result = _run(*_args(str(tmp_path / "model"), dataset, tmp_path / "out", *extra))
    assert result.exit_code == 0, result.output
    (prepared,) = captured
    train, generator = prepared.config.train, prepared.components["generator"].options
    assert (train.learning_rate, train.per_device_train_batch_size, train.max_length) == (0.001, 3, 64)
    assert (generator.max_new_tokens, generator.temperature) == (5, 0.5)
    assert prepared.config.loop.eval_every == 2
    assert prepared.components["sample_tokenizer"].name == "full-text"


def _value_at(run_config, key: str):
    section, _, name = key.partition(".")
    value = getattr(run_config, section)
    if not name:
        return value.name if hasattr(value, "options") else value
    return value.options[name] if hasattr(value, "options") else getattr(value, name)


@pytest.mark.parametrize("flag", [flag for flag in FLAGS if flag.default is not None], ids=lambda flag: flag.dest)
def test_the_default_a_flag_shows_is_what_a_run_gets(flag):
    run_config = resolve_run_config(apply_flags({"model": "m", "reward": "answer-match", "output_dir": "o"}))
    value = _value_at(run_config, flag.key)
    assert [spec.name for spec in value] == [flag.default] if flag.multiple else value == flag.default


def test_run_help_states_a_default_for_every_flag_that_sets_a_key():
    context = click.Context(run_cmd.command)
    for flag in FLAGS:
        param = next(param for param in run_cmd.command.params if param.name == flag.dest)
        _options, help_text = param.get_help_record(context)
        if flag.type is not bool:
            assert "[default: " in help_text or "[required]" in help_text, flag.options[0]
    shown = " ".join(_run("run", "--help").output.split())
    assert "--learning-rate LR Learning rate (train.learning_rate). [default: 5e-05]" in shown
    assert "Iterations to run. [default: 5]" in shown and "Completions generated per prompt. [default: 4]" in shown


@pytest.mark.parametrize(
    ("flag", "key"),
    [
        ("--warmup-steps", "train.warmup_steps"),
        ("--top-p", "generator.top_p"),
        ("--replay-buffer-size", "loop.replay_buffer_size"),
        ("--eval-fraktion", "dataset.eval_fraction"),
        ("--frobnicate-widely", None),
    ],
)
def test_an_unknown_flag_suggests_the_set_key(flag, key):
    result = _run("run", flag, "1")
    assert result.exit_code == 2
    assert "No such option" in result.output and flag in result.output
    if key is None:
        assert "Any config key can be set with --set KEY=VALUE" in result.output
    else:
        assert f"Set it with --set {key}=VALUE" in result.output


# --- --print-config and --dry-run ---------------------------------------------------------------------------


def test_print_config_prints_the_training_settings_the_run_uses_given_or_not(tmp_path, dataset, captured):
    _model_folder(tmp_path / "model")
    args = _args(str(tmp_path / "model"), dataset, tmp_path / "out", "--set", "train.learning_rate=1e-3")
    config = yaml.safe_load(_run(*args, "--print-config").stdout)
    assert config["train"]["learning_rate"] == 1e-3  # given
    assert config["train"]["per_device_train_batch_size"] == 8  # defaults
    assert config["train"]["lr_scheduler_type"] == "constant_with_warmup"
    assert {"warmup_steps", "weight_decay", "max_grad_norm", "gradient_accumulation_steps"} <= set(config["train"])
    assert "max_steps" not in config["train"]  # worked out from the run's iterations each time


def test_print_config_prints_the_resolved_config_and_writes_nothing(tmp_path, dataset, captured):
    _model_folder(tmp_path / "model")
    args = _args(str(tmp_path / "model"), dataset, tmp_path / "out", "--set", "train.warmup_steps=3")
    printed = _run(*args, "--print-config")
    assert printed.exit_code == 0, printed.output
    assert not (tmp_path / "out").exists() and captured == []
    config = yaml.safe_load(printed.stdout)
    assert config["train"]["warmup_steps"] == 3
    assert config["generator"]["options"]["max_new_tokens"] == 64  # every option, at its value
    assert config["sample_tokenizer"] == {"name": "completion-only", "options": {"add_eos": True}}
    assert _run(*args).exit_code == 0  # the run itself resolves to what was printed
    (prepared,) = captured
    assert prepared.config.to_config() == config


def test_print_config_shows_stop_strings_byte_for_byte_as_the_run_gets_them(tmp_path, dataset, captured):
    _model_folder(tmp_path / "model")
    stops = {"generator.stop=\n\nQuestion:": ["\n\nQuestion:"], 'generator.stop=[" Q:", "a, b"]': [" Q:", "a, b"]}
    for assignment, expected in stops.items():
        args = _args(str(tmp_path / "model"), dataset, tmp_path / "out", "--set", assignment)
        printed = _run(*args, "--print-config")
        assert printed.exit_code == 0, printed.output
        assert yaml.safe_load(printed.stdout)["generator"]["options"]["stop"] == expected
        assert _run(*args).exit_code == 0
        assert captured.pop().config.generator.options["stop"] == expected


def test_the_chat_sample_tokenizer_with_text_prompts_is_refused_before_anything_runs(tmp_path, dataset, captured):
    _model_folder(tmp_path / "model")
    result = _run(*_args(str(tmp_path / "model"), dataset, tmp_path / "out", "--sample-tokenizer", "chat"))
    assert result.exit_code == 1 and captured == []
    assert "is text" in result.output and "--sample-tokenizer completion-only" in result.output
    assert not (tmp_path / "out").exists()


def test_dry_run_checks_the_model_and_writes_nothing(tmp_path, dataset, tiny_llama_path, captured):
    result = _run(*_args(tiny_llama_path, dataset, tmp_path / "out", "--dry-run"))
    assert result.exit_code == 0, result.output
    assert "Dry run: everything checks out, nothing was written." in result.output
    assert "LlamaForCausalLM" in result.output and "4 to train on, 0 to evaluate" in result.output
    assert not (tmp_path / "out").exists() and captured == []
    _model_folder(tmp_path / "not-a-model")
    broken = _run(*_args(str(tmp_path / "not-a-model"), dataset, tmp_path / "out", "--dry-run"))
    assert broken.exit_code == 1 and "Cannot load model" in broken.output
    assert not (tmp_path / "out").exists()


def test_dry_run_catches_chat_prompts_without_a_chat_template(tmp_path, tiny_llama_path, captured):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"question": [{"role": "user", "content": "1+1?"}], "answer": "2"}) + "\n")
    result = _run(*_args(tiny_llama_path, str(path), tmp_path / "out", "--dry-run"))
    assert result.exit_code == 1
    assert "has no chat template; use a model whose tokenizer has one" in result.output


# --- errors that point at the fix ---------------------------------------------------------------------------


def _flags_named(text: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z-]+", text))


def test_chat_template_advice_names_only_flags_that_exist():
    from iterframe.generation.prompt_encoding import NO_CHAT_TEMPLATE_ADVICE

    run_flags = {option for param in run_cmd.command.params for option in param.opts}
    tokenizers = os.path.join(os.path.dirname(os.path.dirname(run_cmd.__file__)), "builtin", "tokenizers.py")
    with open(tokenizers, encoding="utf-8") as handle:
        tokenizers_source = handle.read()
    for text in (NO_CHAT_TEMPLATE_ADVICE, tokenizers_source):
        named = _flags_named(text)
        assert named <= run_flags, named - run_flags
    assert "tokenizer.chat_template" not in NO_CHAT_TEMPLATE_ADVICE


def test_a_reward_that_needs_references_is_checked_before_the_model_loads(tmp_path, dataset, captured):
    _model_folder(tmp_path / "empty-folder")  # would fail to load as a model: the check must come first
    args = ["run", "--model", str(tmp_path / "empty-folder"), "--dataset", dataset, "--prompt-column", "question"]
    result = _run(*args, "--reward", "answer-match", "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "The reward 'answer-match' compares each completion with a reference answer" in result.output
    assert "The column 'answer' looks like it: --reference-column answer." in result.output
    assert not (tmp_path / "out").exists()
    function = f"{os.path.abspath(__file__)}:_length_reward"
    python_reward = ["--reward", "python", "--set", f"reward.function={function}"]
    other = _run(*args, *python_reward, "--output-dir", str(tmp_path / "out"), "--print-config")
    assert other.exit_code == 0, other.output  # a reward without that need is not held to it


def _length_reward(samples):
    return [float(len(sample.completion)) for sample in samples]
