"""``iterframe.run(config, **overrides)``: config sources, overrides, components passed as Python objects, the
result, and the README's example."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

import iterframe
from iterframe import api
from iterframe.loop.stages import FunctionReward, call_reward_function
from iterframe.plugins.components import Filter, Reward, Sample
from iterframe.run_config import RunConfigError, load_config_file, resolve_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def exact_answer(samples):
    """1.0 when the completion is the reference (an importable reward function of this module)."""
    return [float(sample.completion.strip() == str(sample.reference)) for sample in samples]


class KeepAll(Filter):
    name = "keep-all-in-code"

    def select(self, samples):
        return [True] * len(samples)


class ConstantReward(Reward):
    name = "constant-in-code"

    def score(self, samples):
        return [0.5] * len(samples)


@pytest.fixture
def base_config(tmp_path, arithmetic_path, tiny_llama_path) -> dict:
    return {
        "model": tiny_llama_path,
        "dataset": {"path": arithmetic_path, "reference_column": "answer"},
        "reward": "answer-match",
        "loop": {"iterations": 1, "prompts_per_iteration": 2, "samples_per_prompt": 2, "quiet": True},
        "generator": {"name": "hf", "options": {"max_new_tokens": 2}},
        "output_dir": str(tmp_path / "out"),
    }


# --- the facade ---------------------------------------------------------------------------------------------


def test_the_facade_exports_the_run_api_without_loading_torch():
    code = (
        "import sys, iterframe\n"
        "from iterframe import run, RunResult, IterativeLoop, LoopConfig, PromptRecord\n"
        "assert {'run', 'RunResult', 'IterativeLoop', 'LoopConfig', 'PromptRecord'} <= set(iterframe.__all__)\n"
        "print(run.__module__, 'torch' in sys.modules)\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["iterframe.api.runner", "False"]


# --- configs and overrides (prepared, not run) --------------------------------------------------------------


def test_a_dict_config_and_overrides_merge_section_by_section(base_config):
    prepared = api.prepare(base_config, loop={"iterations": 3}, train={"learning_rate": 1e-3})
    loop = prepared.config.loop
    assert (loop.iterations, loop.prompts_per_iteration, loop.samples_per_prompt) == (3, 2, 2)
    assert prepared.config.train.learning_rate == pytest.approx(1e-3)
    assert prepared.components["generator"].options.max_new_tokens == 2


def test_a_yaml_path_is_a_config(base_config, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base_config))
    prepared = api.prepare(str(path), output_dir=str(tmp_path / "elsewhere"))
    assert prepared.source == str(path)
    assert prepared.config.loop.output_dir == str(tmp_path / "elsewhere")


def test_a_function_of_samples_is_a_reward(base_config):
    prepared = api.prepare(base_config, reward=exact_answer)
    reward = prepared.components["reward"]
    assert isinstance(reward, FunctionReward) and reward.name == "exact_answer"
    samples = [Sample(0, 0, "1+1=", " 2", reference="2"), Sample(0, 1, "1+2=", "4", reference="3")]
    assert reward.score(samples) == [1.0, 0.0]


def test_component_objects_are_used_as_given(base_config):
    reward, keep_all = ConstantReward(), KeepAll()
    prepared = api.prepare(base_config, reward=reward, filters=[keep_all, "dedup"])
    assert prepared.components["reward"] is reward
    assert prepared.components["filters"][0] is keep_all
    assert prepared.components["filters"][1].name == "dedup"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rewards": exact_answer}, r"iterframe.run\(rewards=...\): unknown key 'rewards'. Did you mean 'reward'"),
        ({"reward": 5}, r"reward must be a component name or a mapping .* or a function \(samples\)"),
        ({"filters": [ConstantReward()]}, r"filters\[0\] must be a component name .* iterframe.Filter instance"),
        ({"reward": ConstantReward}, r"reward is the class ConstantReward; pass an instance"),
        ({"loop": {"iterations": "many"}}, r"'iterations' expects int, got 'many'"),
    ],
)
def test_bad_overrides_are_refused_by_name(base_config, overrides, message):
    with pytest.raises(RunConfigError, match=message):
        api.prepare(base_config, **overrides)


def test_resume_and_overwrite_exclude_each_other(base_config):
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        iterframe.run(base_config, resume=True, overwrite=True)


# --- what the saved config records of objects passed in code ------------------------------------------------


def test_saved_config_names_an_importable_reward_function_as_the_python_reward(base_config):
    run_config, _ = api.build_run_config(base_config, reward=exact_answer)
    saved = run_config.to_config()
    assert saved["reward"] == {"name": "python", "options": {"function": f"{__name__}:exact_answer"}}
    assert resolve_run_config(saved).reward.options["function"] == f"{__name__}:exact_answer"


def test_saved_config_of_an_unimportable_object_asks_for_it_again(base_config):
    run_config, _ = api.build_run_config(base_config, reward=lambda samples: [0.0] * len(samples))
    saved = run_config.to_config()
    assert saved["reward"]["passed_in_code"].endswith("<lambda>")
    with pytest.raises(
        RunConfigError, match=r"was a Python object .* passed to iterframe.run\(\); .*reward=\.\.\."
    ):
        resolve_run_config(saved)
    assert resolve_run_config({**saved, "reward": "answer-match"}).reward.name == "answer-match"


def test_saved_config_of_a_registered_component_instance_is_its_name_and_options(base_config):
    from iterframe.plugins import create_component

    threshold = create_component("filter", "threshold", {"min_reward": 0.25})
    run_config, _ = api.build_run_config(base_config, filters=[threshold])
    assert run_config.to_config()["filters"] == [{"name": "threshold", "options": {"min_reward": 0.25}}]


# --- reward functions ---------------------------------------------------------------------------------------


def test_reward_functions_are_called_as_their_signature_asks():
    samples = [Sample(0, 0, "p", "c", reference="r")]
    assert call_reward_function(lambda samples: [len(samples)], samples) == [1]
    assert call_reward_function(lambda prompts, completions, references: [references[0]], samples) == ["r"]
    assert call_reward_function(lambda *lists: [len(lists)], samples) == [3]
    with pytest.raises(TypeError, match="takes neither"):
        call_reward_function(lambda a, b: [0.0], samples)


# --- running ------------------------------------------------------------------------------------------------


def test_run_returns_the_metrics_final_model_and_config(base_config):
    result = iterframe.run(base_config, reward=exact_answer, loop={"iterations": 2})
    assert isinstance(result, iterframe.RunResult)
    assert [row["iteration"] for row in result.metrics] == [0, 1]
    assert result.output_dir == base_config["output_dir"]
    assert result.final_model_dir == os.path.join(result.output_dir, "final")
    assert os.path.isfile(os.path.join(result.final_model_dir, "config.json"))
    saved = load_config_file(os.path.join(result.output_dir, "config.yaml"))
    assert saved["reward"].options == {"function": f"{__name__}:exact_answer"}


def test_only_the_main_process_writes_the_runs_config(base_config, monkeypatch):
    """The main process claims the folder by removing the temporary files in it: another process of the launch
    writing ``config.yaml`` through a temporary file at that moment would fail."""
    import transformers

    from iterframe.loop.iterative_loop import IterativeLoop

    monkeypatch.setattr(transformers.TrainingArguments, "should_save", property(lambda self: False))
    monkeypatch.setattr(IterativeLoop, "run", lambda self: [])  # what a process other than the main one writes
    iterframe.run(base_config, reward=exact_answer)
    assert not os.path.exists(os.path.join(base_config["output_dir"], "config.yaml"))


def _readme_python_example() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    section = readme[readme.index("## The loop from Python") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_python_example_runs_as_written(tmp_path):
    code = _readme_python_example()
    assert len(code.strip().splitlines()) <= 14
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900, env=os.environ
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last_line = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"2 [01]\.\d+ \S+final", last_line), result.stdout


def test_output_dir_check_survives_another_process_removing_the_folder_it_proved(tmp_path, monkeypatch):
    from iterframe.api import output_dir

    target = tmp_path / "new" / "run"
    real_mkstemp, probed = output_dir.tempfile.mkstemp, []

    def mkstemp(**kwargs):
        probed.append(kwargs["dir"])
        if len(probed) == 1:  # the launch's other process, done proving, removes the folders it created
            os.rmdir(target)
            os.rmdir(target.parent)
        return real_mkstemp(**kwargs)

    monkeypatch.setattr(output_dir.tempfile, "mkstemp", mkstemp)
    output_dir.check_output_dir(str(target), "error")
    assert probed == [str(target)] * 2
    assert os.listdir(tmp_path) == []  # nothing written is left


def test_output_dir_check_leaves_a_folder_another_process_is_probing(tmp_path, monkeypatch):
    from iterframe.api import output_dir

    target = tmp_path / "run"
    real_rmdir = output_dir.os.rmdir

    def rmdir(path):
        (target / ".other-process-probe").write_text("")  # the launch's other process probes it meanwhile
        real_rmdir(path)

    monkeypatch.setattr(output_dir.os, "rmdir", rmdir)
    output_dir.check_output_dir(str(target), "error")
    assert os.listdir(target) == [".other-process-probe"]
