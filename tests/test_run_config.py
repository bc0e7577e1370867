"""Run configuration: YAML loading, flags, ``--set`` overrides, precedence, coercion, errors and round trips."""

from __future__ import annotations

import os

import pytest
import yaml

from iterframe.run_config import (
    RunConfigError,
    apply_flags,
    apply_overrides,
    load_config_file,
    resolve_run_config,
    save_run_config,
)

BASE = {"model": "some/model", "reward": "answer-match", "output_dir": "out", "dataset": "prompts.jsonl"}


def _write_yaml(path, config) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _resolve(config=None, overrides=(), **flags):
    config = apply_flags(dict(BASE, **(config or {})), **flags)
    return resolve_run_config(apply_overrides(config, list(overrides)))


# --- defaults and sections ----------------------------------------------------------------------------------


def test_minimal_config_gets_default_components_and_loop_settings():
    run = _resolve()
    assert (run.generator.name, run.generator.options["max_new_tokens"]) == ("hf", 64)
    assert (run.reward.name, run.reward.options["pattern"], run.reward.options["ignore_case"]) == (
        "answer-match",
        None,
        False,
    )
    assert run.filters == []
    assert run.sample_tokenizer is None
    assert [spec.name for spec in run.loggers] == ["console"]
    assert run.loop.output_dir == os.path.abspath("out")
    assert run.loop.existing_output == "error"
    assert run.dataset.path == "prompts.jsonl" and run.dataset.prompt_column == "prompt"


def test_default_sample_tokenizer_follows_the_prompt_kind():
    run = _resolve()
    assert run.with_default_sample_tokenizer(prompts_are_chat=True).sample_tokenizer.name == "chat"
    assert run.with_default_sample_tokenizer(prompts_are_chat=False).sample_tokenizer.name == "completion-only"
    named = _resolve(sample_tokenizer="full-text")
    assert named.with_default_sample_tokenizer(prompts_are_chat=True).sample_tokenizer.name == "full-text"


def test_the_old_tokenizer_key_and_flag_still_name_the_sample_tokenizer():
    assert _resolve({"tokenizer": "full-text"}).sample_tokenizer.name == "full-text"
    assert _resolve(tokenizer="chat").sample_tokenizer.name == "chat"
    spec = _resolve(overrides=["tokenizer=full-text", "tokenizer.add_eos=false"]).sample_tokenizer
    assert (spec.name, spec.options) == ("full-text", {"add_eos": False})
    with pytest.raises(RunConfigError, match="sets 'sample_tokenizer' twice"):
        _resolve({"tokenizer": "chat", "sample_tokenizer": "full-text"})


def test_component_sections_accept_name_mapping_and_flat_forms():
    run = _resolve(
        {
            "generator": {"name": "hf", "options": {"max_new_tokens": 8}},
            "filters": ["dedup", {"name": "threshold", "min_reward": 0.5}],
            "loggers": [],
        }
    )
    assert run.generator.options["max_new_tokens"] == 8
    assert [spec.name for spec in run.filters] == ["dedup", "threshold"]
    assert run.filters[1].options["min_reward"] == 0.5
    assert run.loggers == []


def test_train_section_passes_through_to_iterative_sft_config_with_coercion():
    run = _resolve({"train": {"learning_rate": "1e-4", "per_device_train_batch_size": 2, "max_length": 64}})
    assert run.train.learning_rate == pytest.approx(1e-4)
    assert run.train.per_device_train_batch_size == 2
    assert run.train.max_length == 64
    assert run.train.output_dir == os.path.abspath("out")
    assert run.train_settings == {"learning_rate": 1e-4, "per_device_train_batch_size": 2, "max_length": 64}


def test_train_seed_follows_loop_seed_unless_set():
    assert _resolve(seed=7).train.seed == 7
    assert _resolve({"train": {"seed": 3}}, seed=7).train.seed == 3


def test_model_init_kwargs_reach_the_training_arguments_and_remote_code_stays_off():
    import torch

    run = _resolve(model_init_kwargs='{"dtype": "float32"}')
    assert run.model_init_kwargs == {"dtype": "float32"}
    assert run.train.model_init_kwargs == {"dtype": torch.float32}
    assert "trust_remote_code" not in (_resolve().train.model_init_kwargs or {})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"train": {"learning_rat": 1e-4}},
            r"train.learning_rat is not an IterativeSFTConfig field. Did you mean 'learning_rate'",
        ),
        ({"train": {"output_dir": "x"}}, "use the top-level `output_dir:` key or --output-dir"),
        ({"train": {"model_init_kwargs": {}}}, "--model-init-kwargs"),
        ({"train": {"learning_rate": "fast"}}, r"option 'learning_rate' expects float, got 'fast'"),
        ({"train": {"truncation_mode": "middle"}}, r"truncation_mode='middle' is not supported"),
        ({"loop": {"iteratoins": 2}}, r"no option 'iteratoins'. Did you mean 'iterations'"),
        ({"loop": {"iterations": "many"}}, r"'iterations' expects int, got 'many'"),
        ({"loop": {"existing_output": "overwrite"}}, "use --resume or --overwrite"),
        ({"dataset": {"prompt_colum": "q"}}, r"Did you mean 'prompt_column'"),
        ({"rewards": "x"}, r"Unknown config key 'rewards'. Did you mean 'reward'"),
        ({"model": None}, r"No model given: pass --model"),
        ({"output_dir": ""}, r"No output_dir given: pass --output-dir"),
        ({"reward": None}, r"No reward given: pass --reward"),
        ({"filters": {"name": "x"}}, "filters must be a list"),
        ({"generator": 5}, "generator must be a component name or a mapping"),
        ({"model_init_kwargs": "{oops"}, "model_init_kwargs is not valid JSON"),
        ({"model_init_kwargs": "[1]"}, "must be a JSON object"),
    ],
)
def test_invalid_configs_name_the_key_and_the_fix(config, message):
    with pytest.raises(RunConfigError, match=message):
        _resolve(config)


# --- config files -------------------------------------------------------------------------------------------


def test_config_file_paths_resolve_next_to_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "prompts.jsonl").write_text('{"prompt": "x"}\n')
    (folder / "model").mkdir()
    path = _write_yaml(
        folder / "run.yaml", {"model": "model", "dataset": {"path": "prompts.jsonl"}, "reward": "r"}
    )
    monkeypatch.chdir(tmp_path)
    config = load_config_file(path)
    assert config["model"] == str(folder / "model")
    assert config["dataset"]["path"] == str(folder / "prompts.jsonl")


def test_config_file_value_not_found_next_to_it_is_kept_as_given(tmp_path):
    path = _write_yaml(tmp_path / "run.yaml", {"model": "org/hub-model", "dataset": "org/hub-data"})
    config = load_config_file(path)
    assert (config["model"], config["dataset"]["path"]) == ("org/hub-model", "org/hub-data")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model: [unclosed", "is not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("colour: red\n", "Unknown"),
    ],
)
def test_bad_config_files_are_reported(tmp_path, content, message):
    path = tmp_path / "run.yaml"
    path.write_text(content)
    with pytest.raises(RunConfigError, match=message):
        load_config_file(str(path))


def test_missing_config_file_is_reported(tmp_path):
    with pytest.raises(RunConfigError, match="Cannot read config file"):
        load_config_file(str(tmp_path / "absent.yaml"))


def test_yaml_is_safe_loaded(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo unsafe']\n")
    with pytest.raises(RunConfigError, match="is not valid YAML"):
        load_config_file(str(path))


# --- precedence ---------------------------------------------------------------------------------------------


def test_flags_override_yaml_and_set_overrides_flags(tmp_path):
    config = load_config_file(
        _write_yaml(tmp_path / "run.yaml", {**BASE, "loop": {"iterations": 9, "samples_per_prompt": 3}})
    )
    run = resolve_run_config(apply_overrides(apply_flags(config, iterations=4), ["loop.iterations=2"]))
    assert run.loop.iterations == 2
    assert run.loop.samples_per_prompt == 3
    assert resolve_run_config(apply_flags(config, iterations=4)).loop.iterations == 4


def test_flags_set_model_dataset_columns_loop_and_output():
    run = _resolve(
        model="m2",
        dataset="d2.jsonl",
        prompt_column="question",
        reference_column="answer",
        split="dev",
        eval_split="test",
        iterations=3,
        prompts_per_iteration=5,
        samples_per_prompt=6,
        seed=11,
        output_dir="o2",
        quiet=True,
    )
    assert run.model == "m2"
    assert (run.dataset.path, run.dataset.prompt_column, run.dataset.reference_column) == (
        "d2.jsonl",
        "question",
        "answer",
    )
    assert (run.dataset.split, run.dataset.eval_split) == ("dev", "test")
    assert (run.loop.iterations, run.loop.prompts_per_iteration, run.loop.samples_per_prompt) == (3, 5, 6)
    assert (run.loop.seed, run.loop.quiet, run.loop.output_dir) == (11, True, os.path.abspath("o2"))


def test_eval_flags_reach_dataset_settings():
    assert _resolve(eval_fraction=0.25).dataset.eval_fraction == 0.25
    assert _resolve(eval_dataset="e.jsonl").dataset.eval_dataset == "e.jsonl"


def test_component_flag_keeps_options_of_the_same_component_and_drops_others():
    config = {
        "generator": {"name": "hf", "options": {"temperature": 0.5}},
        "reward": {"name": "python", "function": "m:f"},
    }
    same = _resolve(config, generator="hf", reward="answer-match")
    assert same.generator.options["temperature"] == 0.5
    assert (same.reward.name, same.reward.options["pattern"]) == ("answer-match", None)


def test_filter_and_logger_flags_replace_the_lists_keeping_options_by_name():
    config = {"filters": [{"name": "threshold", "min_reward": 0.5}, "dedup"], "loggers": ["console", "jsonl"]}
    run = _resolve(config, filters=("dedup", "threshold", "best-of-n"), loggers=("wandb",))
    assert [spec.name for spec in run.filters] == ["dedup", "threshold", "best-of-n"]
    assert run.filters[1].options["min_reward"] == 0.5
    assert [spec.name for spec in run.loggers] == ["wandb"]


def test_unknown_flag_is_a_programming_error():
    with pytest.raises(TypeError, match="unknown flag 'colour'"):
        apply_flags(BASE, colour="red")


# --- --set ---------------------------------------------------------------------------------------------------


def test_set_coerces_loop_train_and_dataset_values():
    run = _resolve(
        overrides=[
            "loop.iterations=3",
            "loop.restart-from-base=true",
            "train.learning_rate=2e-4",
            "train.bf16=false",
            "train.max_length=none",
            "dataset.eval_fraction=0.5",
        ]
    )
    assert run.loop.iterations == 3 and run.loop.restart_from_base is True
    assert run.train.learning_rate == pytest.approx(2e-4) and run.train.bf16 is False
    assert run.train.max_length is None
    assert run.dataset.eval_fraction == 0.5


def test_set_component_options_and_names():
    run = _resolve(
        {"filters": ["threshold", "top-fraction"], "loggers": ["console"]},
        overrides=[
            "generator.temperature=0.7",
            "reward=python",
            "reward.function=examples.rewards:score",
            "filter.top-fraction.fraction=0.25",
            "filters.0.min_reward=0.5",
            "logger.samples=2",
            "tokenizer=chat",
        ],
    )
    assert run.generator.options["temperature"] == 0.7
    assert (run.reward.name, run.reward.options["function"]) == ("python", "examples.rewards:score")
    assert [spec.name for spec in run.filters] == ["threshold", "top-fraction"]
    assert (run.filters[0].options["min_reward"], run.filters[1].options["fraction"]) == (0.5, 0.25)
    assert run.loggers[0].options["samples"] == 2
    assert run.sample_tokenizer.name == "chat"


def test_set_filter_list_and_top_level_values():
    run = _resolve(
        overrides=[
            "filters=threshold,dedup",
            "model=other",
            "output_dir=elsewhere",
            "dataset=d.csv",
            "model_init_kwargs.dtype=float32",
            "model_init_kwargs.low_cpu_mem_usage=true",
        ]
    )
    assert [spec.name for spec in run.filters] == ["threshold", "dedup"]
    assert (run.model, run.dataset.path) == ("other", "d.csv")
    assert run.loop.output_dir == os.path.abspath("elsewhere")
    assert run.model_init_kwargs == {"dtype": "float32", "low_cpu_mem_usage": True}


def test_set_option_of_unnamed_generator_uses_the_default_generator():
    config = dict(BASE)
    run = resolve_run_config(apply_overrides(config, ["generator.max_new_tokens=4"]))
    assert (run.generator.name, run.generator.options["max_new_tokens"]) == ("hf", 4)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("loop.iterations", "must look like KEY=VALUE"),
        ("=3", "must look like KEY=VALUE"),
        ("lop.iterations=3", r"unknown key 'lop'. Did you mean 'loop'"),
        ("filter.fraction=0.2", r"the run has 2 filters \(threshold, dedup\); name one"),
        ("filter.top-fractoin.fraction=0.2", r"no filter 'top-fractoin' in this run.*threshold, dedup"),
        ("loop.a.b=1", "is not a settable key"),
        ("loop.iterations=zero", r"'iterations' expects int, got 'zero'"),
        ("train.nonsense=1", "train.nonsense is not an IterativeSFTConfig field"),
    ],
)
def test_set_errors_name_the_assignment(assignment, message):
    with pytest.raises(RunConfigError, match=message):
        _resolve({"filters": ["threshold", "dedup"]}, overrides=[assignment])


def test_apply_overrides_leaves_the_given_config_unchanged():
    config = {**BASE, "generator": {"name": "hf", "options": {"top_k": 5}}, "loop": {"iterations": 1}}
    apply_overrides(config, ["generator.top_k=9", "loop.iterations=2"])
    assert config["generator"] == {"name": "hf", "options": {"top_k": 5}}
    assert config["loop"] == {"iterations": 1}


# --- saved config -------------------------------------------------------------------------------------------


def test_saved_config_round_trips_to_an_equal_run_config(tmp_path):
    run = _resolve(
        {"filters": [{"name": "threshold", "min_reward": 0.5}], "train": {"learning_rate": "1e-4"}},
        model_init_kwargs='{"dtype": "float32"}',
        iterations=2,
    ).with_default_sample_tokenizer(prompts_are_chat=False)
    path = str(tmp_path / "config.yaml")
    save_run_config(run, path)
    reloaded = resolve_run_config(load_config_file(path))
    assert reloaded.to_config() == run.to_config()
    assert reloaded.train.learning_rate == pytest.approx(1e-4)
    saved = yaml.safe_load(open(path))
    assert saved["loop"]["iterations"] == 2
    assert saved["sample_tokenizer"] == {"name": "completion-only", "options": {"add_eos": True}}
    assert "existing_output" not in saved["loop"]


def test_docs_describe_every_config_key():
    import dataclasses

    from iterframe.loop import LoopConfig
    from iterframe.loop.datasets import DatasetSettings
    from iterframe.run_config.schema import LOOP_FIELDS_SET_ELSEWHERE, TOP_LEVEL_KEYS

    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "config.md")
    with open(docs, encoding="utf-8") as handle:
        text = handle.read()
    loop_keys = [f.name for f in dataclasses.fields(LoopConfig) if f.name not in LOOP_FIELDS_SET_ELSEWHERE]
    keys = [*TOP_LEVEL_KEYS, *loop_keys, *(f.name for f in dataclasses.fields(DatasetSettings))]
    missing = [key for key in keys if f"| `{key}` |" not in text]
    assert not missing, f"docs/config.md has no table row for {missing}"


def test_set_model_init_kwargs_value_that_is_not_yaml_stays_text():
    assert _resolve(overrides=["model_init_kwargs.revision='main"]).model_init_kwargs == {"revision": "'main"}


def test_paths_from_the_home_folder_are_expanded():
    home = os.path.expanduser("~")
    run = _resolve({"dataset": {"path": "~/prompts.jsonl", "eval_dataset": "~/eval.jsonl"}}, model="~/models/m")
    assert run.model == os.path.join(home, "models", "m")
    assert (run.dataset.path, run.dataset.eval_dataset) == (f"{home}/prompts.jsonl", f"{home}/eval.jsonl")
    assert _resolve(output_dir="~/runs/x").loop.output_dir == os.path.join(home, "runs", "x")


def test_set_takes_the_dotted_paths_print_config_prints_for_component_options():
    import yaml

    from iterframe.run_config import config_text

    printed = yaml.safe_load(config_text(_resolve({**BASE, "filters": ["threshold"]})))
    assert printed["generator"]["options"]["max_new_tokens"] == 64  # printed as generator.options.max_new_tokens
    run = _resolve(
        {**BASE, "filters": ["threshold"]},
        [
            "generator.options.max_new_tokens=24",
            "reward.options.ignore_case=true",
            "filter.threshold.options.min_reward=0.5",
        ],
    )
    assert run.generator.options["max_new_tokens"] == 24
    assert run.reward.options["ignore_case"] is True
    assert run.filters[0].options["min_reward"] == 0.5
    assert run.to_config() == _resolve({**BASE, "filters": ["threshold"]}, [
        "generator.max_new_tokens=24", "reward.ignore_case=true", "filter.threshold.min_reward=0.5"
    ]).to_config()  # fmt: skip
