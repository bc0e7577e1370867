"""Security: remote code stays off unless asked for, YAML is safe-loaded, run state is JSON + safetensors and
pickles in checkpoints are refused, ``python`` rewards import exactly what is named, and the plugin allow-list
keeps unvetted plugins from running at all."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys

import pytest
from click.testing import CliRunner
from loop_fakes import make_loop

from iterframe.builtin.rewards import load_callable
from iterframe.cli import cli
from iterframe.loop.run_state import CHECKPOINTS_DIR, latest_checkpoint
from iterframe.run_config import RunConfigError, load_config_file

# --- trust_remote_code ---------------------------------------------------------------------------------------


@pytest.fixture
def from_pretrained_calls(monkeypatch) -> list:
    """``(loader, kwargs)`` of every config/model ``from_pretrained`` call of the trainer; the model load then
    stops the run (nothing needs training to see what was asked for)."""
    from iterframe.engine import loading as trainer_module

    calls = []
    real_config_loader = trainer_module.AutoConfig.from_pretrained

    def load_config(model_id, **kwargs):
        calls.append(("config", kwargs))
        return real_config_loader(model_id, **kwargs)

    def load_model(model_id, **kwargs):
        calls.append(("model", kwargs))
        raise OSError("stopped by the test after from_pretrained was called")

    monkeypatch.setattr(trainer_module.AutoConfig, "from_pretrained", load_config)
    monkeypatch.setattr(trainer_module.AutoModelForCausalLM, "from_pretrained", load_model)
    return calls


def _run_args(tiny_llama_path, tmp_path) -> list[str]:
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text(json.dumps({"prompt": "1+1=", "reference": "2"}) + "\n")
    return ["--model", tiny_llama_path, "--dataset", str(dataset), "--reward", "answer-match"]


def test_cli_and_yaml_load_the_model_without_remote_code_by_default(
    from_pretrained_calls, tiny_llama_path, tmp_path
):
    result = CliRunner().invoke(cli, ["run", *_run_args(tiny_llama_path, tmp_path), "--output-dir", "out-flags"])
    assert "stopped by the test" in result.output
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_llama_path}\nreward: answer-match\ndataset: {tmp_path / 'prompts.jsonl'}\n")
    result = CliRunner().invoke(cli, ["run", str(config), "--output-dir", str(tmp_path / "out-yaml")])
    assert "stopped by the test" in result.output
    assert [loader for loader, _ in from_pretrained_calls] == ["config", "model", "config", "model"]
    for loader, kwargs in from_pretrained_calls:
        assert kwargs.get("trust_remote_code", False) is False, (loader, kwargs)


def test_remote_code_is_trusted_only_when_the_user_says_so(from_pretrained_calls, tiny_llama_path, tmp_path):
    args = [*_run_args(tiny_llama_path, tmp_path), "--model-init-kwargs", '{"trust_remote_code": true}']
    CliRunner().invoke(cli, ["run", *args, "--output-dir", str(tmp_path / "out")])
    assert [(loader, kwargs["trust_remote_code"]) for loader, kwargs in from_pretrained_calls] == [
        ("config", True),
        ("model", True),
    ]


# --- YAML -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    ["!!python/object/apply:os.system ['touch {marker}']", "!!python/object/new:os.system ['touch {marker}']"],
)
def test_yaml_python_tags_are_refused_and_never_run(tmp_path, tag):
    marker = tmp_path / "pwned"
    config = tmp_path / "run.yaml"
    config.write_text(f"model: m\nreward: {tag.format(marker=marker)}\n")
    with pytest.raises(RunConfigError, match="is not valid YAML"):
        load_config_file(str(config))
    result = CliRunner().invoke(cli, ["run", str(config), "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1 and "is not valid YAML" in result.output
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


# --- run state: JSON + safetensors; checkpoints' pickles refused ---------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tiny_llama_path, tmp_path_factory) -> str:
    output_dir = tmp_path_factory.mktemp("secure-run") / "out"
    make_loop(tiny_llama_path, output_dir, iterations=1, replay_buffer_size=4).run()
    return str(output_dir)


#: Files of a checkpoint that ``transformers.Trainer`` writes with ``torch.save`` (and loads with
#: ``weights_only=True``, except ``training_args.bin``, which nothing in iterframe reads).
TRANSFORMERS_TORCH_FILES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"}


def test_loop_state_is_json_and_weights_are_safetensors(finished_run):
    checkpoint = latest_checkpoint(finished_run)
    files = set(os.listdir(checkpoint))
    assert {"loop_state.json", "trainer_state.json", "model.safetensors"} <= files
    for name in ("loop_state.json", "trainer_state.json"):
        with open(os.path.join(checkpoint, name), encoding="utf-8") as handle:
            assert isinstance(json.load(handle), dict)
    with open(os.path.join(checkpoint, "loop_state.json"), encoding="utf-8") as handle:
        assert set(json.load(handle)) >= {"prompt_sampler", "replay_buffer", "metrics", "iteration"}
    pickled = {name for name in files if name.endswith((".pt", ".pth", ".bin", ".pkl", ".pickle"))}
    assert pickled <= TRANSFORMERS_TORCH_FILES
    assert not any(name.endswith((".bin", ".pkl", ".pickle")) for name in os.listdir(os.path.join(finished_run)))


class _Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_a_malicious_pickle_in_a_checkpoint_is_refused_on_resume(finished_run, tiny_llama_path, tmp_path, name):
    output_dir = tmp_path / "run"
    shutil.copytree(finished_run, output_dir)
    marker = tmp_path / "pwned"
    checkpoint = latest_checkpoint(str(output_dir))
    with open(os.path.join(checkpoint, name), "wb") as handle:
        pickle.dump(_Payload(str(marker)), handle, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        make_loop(tiny_llama_path, output_dir, iterations=2, existing_output="resume").run()
    assert not marker.exists()
    assert os.listdir(output_dir / CHECKPOINTS_DIR) == [os.path.basename(checkpoint)]


# --- python rewards -------------------------------------------------------------------------------------------


@pytest.fixture
def reward_package(tmp_path, monkeypatch):
    """``named_reward`` (a score function and a class) next to ``unrelated``, whose import would leave a marker."""
    (tmp_path / "named_reward.py").write_text(
        "def score(prompts, completions, references):\n"
        "    return [1.0] * len(completions)\n\n"
        "class Scorer:\n"
        "    @staticmethod\n"
        "    def score(prompts, completions, references):\n"
        "        return [0.0] * len(completions)\n"
    )
    (tmp_path / "unrelated.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("named_reward", "unrelated"):
        sys.modules.pop(name, None)


def test_python_reward_imports_only_the_named_module(reward_package):
    before = set(sys.modules)
    function = load_callable("named_reward:score")
    assert function(["p"], ["c"], [None]) == [1.0]
    assert load_callable("named_reward:Scorer.score")(["p"], ["c"], [None]) == [0.0]
    assert set(sys.modules) - before == {"named_reward"}
    assert not (reward_package / "imported").exists()
    assert load_callable("os:getcwd") is os.getcwd  # a standard-library target is exactly what was named


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("__import__('os').system('touch {marker}'):x", "cannot import module"),
        ("os.system('touch {marker}')", "must look like 'package.module:function'"),
        ("named_reward:score(); __import__('os').system('touch {marker}')", "has no attribute"),
        ("os:system('touch {marker}')", "has no attribute"),
    ],
)
def test_python_reward_specs_are_never_evaluated(reward_package, spec, message):
    marker = reward_package / "evaluated"
    with pytest.raises(ValueError, match=message):
        load_callable(spec.format(marker=marker))
    assert not marker.exists()


# --- code a saved config names ---------------------------------------------------------------------------------


@pytest.fixture
def foreign_run(finished_run, tiny_llama_path, tmp_path) -> tuple[str, str, object]:
    """A copy of a finished run whose ``config.yaml`` names a ``trl`` reward in a file that, imported, leaves a
    marker: ``(run folder, the function spec, the marker path)``."""
    run = tmp_path / "foreign-run"
    shutil.copytree(finished_run, run)
    marker = tmp_path / "their-code-ran"
    code = tmp_path / "their_reward.py"
    code.write_text(
        f"open({str(marker)!r}, 'w').close()\n\n\ndef score(completions, **kwargs):\n"
        "    return [1.0] * len(completions)\n"
    )
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text(json.dumps({"prompt": "1+1=", "reference": "2"}) + "\n")
    function = f"{code}:score"
    (run / "config.yaml").write_text(
        f"model: {tiny_llama_path}\ndataset: {{path: {dataset}}}\n"
        f"reward: {{name: trl, options: {{function: {function!r}}}}}\noutput_dir: {run}\n"
    )
    return str(run), function, marker


def test_resume_names_and_refuses_the_code_a_saved_config_would_import(foreign_run):
    from iterframe.api import prepare

    run, function, marker = foreign_run
    with pytest.raises(RunConfigError) as refused:
        prepare(output_dir=run, resume=True)
    message = str(refused.value)
    assert f"reward 'trl': function={function}, in the file {function.rsplit(':', 1)[0]}" in message
    assert "--trust-config-code" in message
    result = CliRunner().invoke(cli, ["run", "--output-dir", run, "--resume"])
    assert result.exit_code == 1 and "--trust-config-code" in result.output
    assert not marker.exists()


def test_resume_takes_a_saved_configs_code_when_trusted_or_named_on_the_command_line(foreign_run):
    from iterframe.api.preparation import build_run_config

    run, function, marker = foreign_run
    trusted, _ = build_run_config(existing_output="resume", output_dir=run, trust_config_code=True)
    named, _ = build_run_config(existing_output="resume", output_dir=run, reward=f"trl:{function}")
    assert trusted.reward.options["function"] == named.reward.options["function"] == function
    assert not marker.exists()  # checked before anything is imported


def test_rescore_refuses_the_code_a_saved_config_would_import_unless_trusted(foreign_run, tmp_path):
    run, function, marker = foreign_run
    command = ["rescore", run, "--output-dir", str(tmp_path / "rescored")]
    refused = CliRunner().invoke(cli, command)
    assert refused.exit_code == 1 and f"function={function}" in refused.output
    assert "--trust-config-code" in refused.output and not marker.exists()
    trusted = CliRunner().invoke(cli, [*command, "--trust-config-code"])
    assert trusted.exit_code == 0, trusted.output
    assert marker.exists()


# --- the plugin allow-list ------------------------------------------------------------------------------------


def test_plugins_left_out_of_the_allow_list_never_run(fake_distribution, monkeypatch, tmp_path):
    from iterframe.plugins import get_plugin_manager, list_plugins

    for name in ("iterframe-vetted", "iterframe-unvetted"):
        module = name.replace("-", "_")
        marker = tmp_path / f"{module}-imported"
        fake_distribution(name, {"main": module}, {f"{module}.py": f"open({str(marker)!r}, 'w').close()\n"})
    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", "iterframe-vetted")
    get_plugin_manager()
    assert (tmp_path / "iterframe_vetted-imported").exists()
    assert not (tmp_path / "iterframe_unvetted-imported").exists()
    assert "iterframe-unvetted" not in [plugin["name"] for plugin in list_plugins()]
