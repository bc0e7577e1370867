"""Malformed configs thrown at the resolver: wrong types, unknown keys, out-of-range values, broken YAML, odd
``--set`` assignments. Each is accepted, or refused with a :class:`RunConfigError` whose every problem names a key
of the config; nothing else escapes, and the command line answers ``Error: ...`` without a traceback."""

from __future__ import annotations

import json
import math
import os

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iterframe.cli import cli
from iterframe.run_config import (
    RunConfig,
    RunConfigError,
    apply_overrides,
    load_config_file,
    normalise_config,
    resolve_run_config,
)
from iterframe.run_config.schema import SECTION_ALIASES, TOP_LEVEL_KEYS

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Keys that appear in the sections; a few typos and strangers among them.
LOOP_KEYS = [
    "iterations",
    "prompts_per_iteration",
    "samples_per_prompt",
    "eval_every",
    "seed",
    "save_every",
    "iteratons",
]
TRAIN_KEYS = ["learning_rate", "per_device_train_batch_size", "max_length", "truncation_mode", "warmup_steps"]
TRAIN_KEYS += ["weight_decay", "lr_scheduler_type", "bf16", "fp16", "report_to", "padding_free", "learning_rat"]
DATASET_KEYS = ["path", "prompt_column", "reference_column", "split", "eval_fraction", "eval_split", "colum"]
GENERATOR_OPTIONS = ["max_new_tokens", "temperature", "top_p", "top_k", "do_sample", "stop", "batch_size", "tmp"]
NAMES = {
    "generator": ["hf", "hff"],
    "reward": ["answer-match", "python", "answer_match"],
    "filters": ["threshold", "dedup", "best-of-n", "top-fraction", "tresh"],
    "sample_tokenizer": ["chat", "completion-only", "full-txt"],
    "loggers": ["console", "jsonl", "jsnl"],
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def mapping_of(keys) -> st.SearchStrategy:
    return st.dictionaries(st.sampled_from(keys), values, max_size=4)


def component(section: str) -> st.SearchStrategy:
    name = st.sampled_from(NAMES[section])
    options = mapping_of(GENERATOR_OPTIONS + ["min_reward", "k", "fraction", "pattern", "add_eos"])
    return st.one_of(name, st.fixed_dictionaries({"name": name, "options": options}), values)


section_values = {
    "model": st.one_of(st.just("some/model"), values),
    "model_init_kwargs": st.one_of(st.just({"dtype": "float32"}), mapping_of(["dtype", "device_map"]), values),
    "dataset": st.one_of(mapping_of(DATASET_KEYS), values),
    "generator": component("generator"),
    "reward": component("reward"),
    "filters": st.one_of(st.lists(component("filters"), max_size=3), values),
    "sample_tokenizer": component("sample_tokenizer"),
    "loggers": st.one_of(st.lists(component("loggers"), max_size=2), values),
    "loop": st.one_of(mapping_of(LOOP_KEYS), values),
    "train": st.one_of(mapping_of(TRAIN_KEYS), values),
    "peft": st.one_of(st.just("lora"), mapping_of(["method", "r", "alpha", "dropout", "target_modules"]), values),
    "plugins": st.one_of(st.just({}), mapping_of(["iterframe-keyword", "some-plugin"]), values),
    "output_dir": st.one_of(st.just("out"), values),
}
BASE = {"model": "some/model", "reward": "answer-match", "output_dir": "out"}


@st.composite
def configs(draw) -> dict:
    config = dict(BASE) if draw(st.booleans()) else {}
    for key in draw(st.lists(st.sampled_from(TOP_LEVEL_KEYS), max_size=4, unique=True)):
        config[key] = draw(section_values[key])
    if draw(st.integers(0, 5)) == 0:
        config[draw(st.sampled_from(["rewards", "tokenizer", "lop", "colour"]))] = draw(values)
    return config


def _keys_of(value) -> set[str]:
    """Every key and string anywhere in ``value``, as text (a problem may name a key or the value it refuses)."""
    found = set()
    if isinstance(value, dict):
        for key, item in value.items():
            found.add(str(key))
            found |= _keys_of(item)
    elif isinstance(value, list):
        for item in value:
            found |= _keys_of(item)
    return found


def _problems(error: RunConfigError) -> list[str]:
    text = str(error)
    if text.startswith("The run config has "):
        return [line[4:] for line in text.splitlines()[1:]]
    return [text]


def _assert_names_a_key(error: RunConfigError, config: dict) -> None:
    keys = _keys_of(config) | {"model", "reward", "output_dir", *SECTION_ALIASES}
    for problem in _problems(error):
        readable = problem.replace(" ", "_")
        assert any(key and (key in problem or key in readable) for key in keys), problem


def _resolve_or_refuse(config: dict):
    try:
        return resolve_run_config(normalise_config(config))
    except RunConfigError as error:
        _assert_names_a_key(error, config)
        return error


@SETTINGS
@given(configs())
def test_every_malformed_config_is_resolved_or_refused_naming_the_key(config):
    result = _resolve_or_refuse(config)
    assert isinstance(result, (RunConfig, RunConfigError))


ASSIGNMENT_KEYS = [*TOP_LEVEL_KEYS, *SECTION_ALIASES, "lop", *(f"loop.{key}" for key in LOOP_KEYS)]
ASSIGNMENT_KEYS += [f"train.{key}" for key in TRAIN_KEYS] + [f"generator.{key}" for key in GENERATOR_OPTIONS]
ASSIGNMENT_KEYS += ["filter.threshold.min_reward", "filter.0.min_reward", "filter.min_reward", "loop.a.b", "x."]
ASSIGNMENT_KEYS += ["dataset.eval_fraction", "model_init_kwargs.dtype", "peft.r", "reward.function"]


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from(ASSIGNMENT_KEYS), st.text(max_size=8)).map(lambda pair: "=".join(pair))
        | st.text(max_size=10),
        max_size=4,
    )
)
def test_every_set_assignment_is_applied_or_refused_naming_the_key(assignments):
    config = {**BASE, "filters": ["threshold", "dedup"]}
    try:
        resolve_run_config(apply_overrides(config, assignments))
    except RunConfigError as error:
        named = {part for assignment in assignments for part in assignment.partition("=")[0].split(".")}
        for problem in _problems(error):
            assert "--set" in problem or any(key and key in problem.replace(" ", "_") for key in named | set(BASE))


@SETTINGS
@given(st.text(max_size=60) | st.builds(lambda config: yaml.safe_dump(config), configs()))
def test_broken_yaml_files_are_refused_with_a_message(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "run.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        draft = load_config_file(str(path))
    except RunConfigError as error:
        assert str(path) in str(error) or "config key" in str(error) or "must be" in str(error)
        return
    try:
        resolve_run_config(draft)
    except RunConfigError:
        pass


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-fuzz")
    (folder / "model").mkdir()
    (folder / "model" / "config.json").write_text("{}")
    (folder / "prompts.jsonl").write_text(json.dumps({"prompt": "1+1=", "reference": "2"}) + "\n")
    return folder


@SETTINGS
@given(configs())
def test_the_command_line_answers_malformed_configs_with_an_error_not_a_traceback(cli_inputs, config):
    config = {**config, "model": str(cli_inputs / "model"), "dataset": str(cli_inputs / "prompts.jsonl")}
    config["output_dir"] = str(cli_inputs / "out")
    path = cli_inputs / "run.yaml"
    path.write_text(yaml.safe_dump(_plain(config)), encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(path), "--print-config"])
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1), repr(result.exception)
    if result.exit_code == 1:
        assert result.output.startswith("Error: "), result.output
    assert not os.path.exists(cli_inputs / "out")


def _plain(value):
    """``value`` as YAML can write it (NaN and infinities stay floats)."""
    if isinstance(value, float) and not math.isfinite(value):
        return value
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
