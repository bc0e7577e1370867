"""Faulty plugins: a component that raises or returns the wrong thing stops the run with an error naming the
plugin, the component and the iteration; finished iterations stay intact and the run resumes. NaN/inf rewards are
failed samples, and generators that return only empty strings are flagged."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
from click.testing import CliRunner
from loop_fakes import PromptCompletionTokenizer, make_loop, make_trainer

from iterframe.loop import FAILED_REWARD
from iterframe.loop.artifacts import read_metrics, read_samples, samples_path
from iterframe.plugins import create_component
from iterframe.plugins.components import Completion, Filter, Generator, Logger, Reward, kind_label
from iterframe.plugins.errors import ComponentError
from iterframe.plugins.hookspecs import hookimpl

PLUGIN = "faulty-plugin"


@dataclasses.dataclass
class FaultOptions:
    fault: str = dataclasses.field(default="none", metadata={"help": "How to misbehave (none: behave)."})
    on_call: int = dataclasses.field(default=1, metadata={"help": "The 0-based call that misbehaves."})


class Faulty:
    """Counts calls; :meth:`misbehaves` is true on call ``options.on_call`` when a fault is set."""

    def misbehaves(self) -> bool:
        self.calls = getattr(self, "calls", 0) + 1
        return self.options.fault != "none" and self.calls - 1 == self.options.on_call


class FaultyGenerator(Faulty, Generator):
    name = "faulty-generator"
    Options = FaultOptions

    def generate(self, prompts, num_samples):
        good = [[Completion(f"{prompt}-{j}") for j in range(num_samples)] for prompt in prompts]
        if not self.misbehaves():
            return good
        if self.options.fault == "raises":
            raise RuntimeError("generation backend crashed")
        if self.options.fault == "wrong-type":
            return "a string instead of completion lists"
        if self.options.fault == "wrong-count":
            return good[:-1]
        if self.options.fault == "text-none":
            return [[Completion(None) for _ in range(num_samples)] for _ in prompts]
        raise AssertionError(self.options.fault)


class EmptyGenerator(Generator):
    name = "empty-generator"

    def generate(self, prompts, num_samples):
        return [[Completion("") for _ in range(num_samples)] for _ in prompts]


class FaultyReward(Faulty, Reward):
    name = "faulty-reward"
    Options = FaultOptions

    def score(self, samples):
        good = [1.0] * len(samples)
        if not self.misbehaves():
            return good
        if self.options.fault == "raises":
            raise RuntimeError("reward server went away")
        if self.options.fault == "wrong-type":
            return None
        if self.options.fault == "wrong-count":
            return good[:-1]
        if self.options.fault == "not-numbers":
            return ["high"] * len(samples)
        raise AssertionError(self.options.fault)


class NonFiniteReward(Reward):
    """Cycles NaN, inf, -inf, 1.0 over the samples."""

    name = "non-finite-reward"

    def score(self, samples):
        return [[math.nan, math.inf, -math.inf, 1.0][index % 4] for index in range(len(samples))]


class FaultyFilter(Faulty, Filter):
    name = "faulty-filter"
    Options = FaultOptions

    def select(self, samples):
        good = [True] * len(samples)
        if not self.misbehaves():
            return good
        if self.options.fault == "raises":
            raise RuntimeError("filter lost its index")
        if self.options.fault == "wrong-type":
            return None
        if self.options.fault == "wrong-count":
            return good[:-1]
        raise AssertionError(self.options.fault)


class FaultyTokenizer(Faulty, PromptCompletionTokenizer):
    name = "faulty-tokenizer"
    Options = FaultOptions

    def __init__(self, options=None):
        super().__init__()
        self.options = options or FaultOptions()

    def tokenize(self, samples):
        good = super().tokenize(samples)
        if not self.misbehaves():
            return good
        if self.options.fault == "raises":
            raise RuntimeError("tokenizer vocabulary missing")
        if self.options.fault == "wrong-type":
            return good["input_ids"]
        if self.options.fault == "wrong-count":
            return {key: rows[:-1] for key, rows in good.items()}
        raise AssertionError(self.options.fault)


class FaultyLogger(Faulty, Logger):
    name = "faulty-logger"
    Options = FaultOptions

    def log_metrics(self, metrics, iteration):
        if self.misbehaves():
            raise RuntimeError("metrics service unreachable")


class FaultyPlugin:
    @hookimpl
    def register_generators(self, register):
        register(FaultyGenerator)
        register(EmptyGenerator)

    @hookimpl
    def register_rewards(self, register):
        register(FaultyReward)
        register(NonFiniteReward)

    @hookimpl
    def register_filters(self, register):
        register(FaultyFilter)

    @hookimpl
    def register_tokenizers(self, register):
        register(FaultyTokenizer)

    @hookimpl
    def register_loggers(self, register):
        register(FaultyLogger)


@pytest.fixture
def faulty_plugin(register_plugin):
    register_plugin(FaultyPlugin(), name=PLUGIN)


def components(faulty_kind: str = "", fault: str = "none") -> dict:
    """One faulty component of each kind; only ``faulty_kind`` misbehaves (with ``fault``, on its second call)."""

    def build(kind):
        return create_component(kind, f"faulty-{kind}", {"fault": fault if kind == faulty_kind else "none"})

    return {
        "generator": build("generator"),
        "reward": build("reward"),
        "filters": [build("filter")],
        "tokenizer": build("tokenizer"),
        "loggers": [build("logger")],
    }


def metrics_iterations(output_dir) -> list[int]:
    return [row["iteration"] for row in read_metrics(os.path.join(output_dir, "metrics.jsonl"))]


FAULTS = [
    ("generator", "raises", ComponentError, "RuntimeError: generation backend crashed"),
    ("generator", "wrong-type", ValueError, "returned str completion lists for 2 prompts"),
    ("generator", "wrong-count", ValueError, "returned 1 completion lists for 2 prompts"),
    ("generator", "text-none", TypeError, "Completion.text must be a string"),
    ("reward", "raises", ComponentError, "RuntimeError: reward server went away"),
    ("reward", "wrong-type", TypeError, "returned a NoneType; it must return a list of 4 numbers"),
    ("reward", "wrong-count", ValueError, "returned 3 scores for 4 samples"),
    ("reward", "not-numbers", TypeError, "returned 'high' for sample 0; scores must be numbers"),
    ("filter", "raises", ComponentError, "RuntimeError: filter lost its index"),
    ("filter", "wrong-type", ValueError, "must return a list of 4 booleans (one per sample), got NoneType"),
    ("filter", "wrong-count", ValueError, "must return a list of 4 booleans (one per sample), got 3"),
    ("tokenizer", "raises", ComponentError, "RuntimeError: tokenizer vocabulary missing"),
    ("tokenizer", "wrong-type", ValueError, "must return a dict with 'input_ids'"),
    ("tokenizer", "wrong-count", ValueError, "returned 3 input_ids rows for 4 samples"),
    ("logger", "raises", ComponentError, "RuntimeError: metrics service unreachable"),
]


@pytest.fixture(scope="module")
def shared_trainer(tiny_llama_path, tmp_path_factory):
    return make_trainer(tiny_llama_path, str(tmp_path_factory.mktemp("faulty-trainer")))


@pytest.mark.parametrize(
    ("kind", "fault", "error_class", "detail"), FAULTS, ids=[f"{k}-{f}" for k, f, *_ in FAULTS]
)
def test_faulty_component_error_names_plugin_component_and_iteration(
    faulty_plugin, shared_trainer, tiny_llama_path, tmp_path, kind, fault, error_class, detail
):
    output_dir = tmp_path / "out"
    loop = make_loop(tiny_llama_path, output_dir, trainer=shared_trainer, iterations=3, **components(kind, fault))
    with pytest.raises(error_class) as caught:
        loop.run()
    error = caught.value
    assert isinstance(error, ComponentError)
    assert str(error).startswith(f"Iteration 1: {kind_label(kind)} 'faulty-{kind}' (plugin '{PLUGIN}') failed: ")
    assert detail in str(error)
    assert (error.kind, error.name, error.origin, error.iteration) == (
        kind,
        f"faulty-{kind}",
        f"plugin '{PLUGIN}'",
        1,
    )
    assert metrics_iterations(output_dir) == [0]


@pytest.mark.parametrize("kind", ["generator", "reward", "filter", "tokenizer", "logger"])
def test_finished_iterations_survive_a_faulty_component_and_the_run_resumes(
    faulty_plugin, tiny_llama_path, tmp_path, kind
):
    output_dir = tmp_path / "out"
    with pytest.raises(ComponentError, match=f"Iteration 1: {kind_label(kind)} 'faulty-{kind}'"):
        make_loop(tiny_llama_path, output_dir, iterations=3, **components(kind, "raises")).run()
    finished = open(samples_path(output_dir, 0), "rb").read()
    assert sorted(os.listdir(output_dir / "checkpoints")) == ["iteration-000000"]

    rows = make_loop(tiny_llama_path, output_dir, iterations=3, existing_output="resume", **components()).run()
    assert [row["iteration"] for row in rows] == [0, 1, 2]
    assert metrics_iterations(output_dir) == [0, 1, 2]
    assert open(samples_path(output_dir, 0), "rb").read() == finished
    assert [row["global_step"] for row in rows] == [1, 2, 3]


def test_setup_failure_names_the_component_and_that_no_iteration_ran(faulty_plugin, tiny_llama_path, tmp_path):
    class BrokenSetupReward(FaultyReward):
        def setup(self, context):
            raise OSError("credentials file missing")

    parts = components()
    parts["reward"] = BrokenSetupReward()
    with pytest.raises(ComponentError) as caught:
        make_loop(tiny_llama_path, tmp_path / "out", **parts).run()
    assert str(caught.value).startswith("Setup, before the first iteration: reward 'faulty-reward' (")
    assert "OSError: credentials file missing" in str(caught.value)
    assert caught.value.iteration is None


def test_non_finite_rewards_are_failed_samples_counted_and_never_trained(faulty_plugin, tiny_llama_path, tmp_path):
    tokenizer = create_component("tokenizer", "faulty-tokenizer")
    loop = make_loop(
        tiny_llama_path,
        tmp_path / "out",
        reward=create_component("reward", "non-finite-reward"),
        tokenizer=tokenizer,
        iterations=2,
        prompts_per_iteration=2,
        samples_per_prompt=4,
        max_failed_rate=1.0,
    )
    rows = loop.run()
    assert [row["reward/num_failed"] for row in rows] == [6, 6]
    assert [row["reward/num_failed/no-score"] for row in rows] == [6, 6]
    assert [row["num_kept"] for row in rows] == [2, 2]
    assert [row["reward/mean"] for row in rows] == [1.0, 1.0]
    assert tokenizer.batches == [2, 2]
    for iteration in (0, 1):
        samples = read_samples(samples_path(tmp_path / "out", iteration))
        failed = [sample for sample in samples if sample["dropped_by"] == f"{FAILED_REWARD}:no-score"]
        assert len(failed) == 6
        assert all(math.isnan(sample["reward"]) and not sample["kept"] for sample in failed)
    written = read_metrics(tmp_path / "out" / "metrics.jsonl")
    assert [row["reward/num_failed"] for row in written] == [6, 6]


def test_generator_of_only_empty_strings_is_flagged_and_the_loop_goes_on(faulty_plugin, tiny_llama_path, tmp_path):
    loop = make_loop(
        tiny_llama_path, tmp_path / "out", generator=create_component("generator", "empty-generator"), iterations=2
    )
    with pytest.warns(UserWarning) as warned:
        rows = loop.run()
    messages = [str(warning.message) for warning in warned if "only empty completions" in str(warning.message)]
    assert messages == [
        f"Iteration {iteration}: generator 'empty-generator' (plugin '{PLUGIN}') returned only empty completions "
        "for 2 prompts; they are scored and filtered like any other, but check the generator's settings "
        "(max_new_tokens, stop strings)."
        for iteration in (0, 1)
    ]
    assert [row["iteration"] for row in rows] == [0, 1]
    assert {sample["completion"] for sample in read_samples(samples_path(tmp_path / "out", 1))} == {""}


def test_cli_reports_a_crashing_component_with_its_traceback_and_the_resume_hint(
    faulty_plugin, tiny_llama_path, tmp_path
):
    from iterframe.cli import cli

    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": f"{a}+1="}) + "\n" for a in range(4)))
    output_dir = tmp_path / "out"
    args = ["run", "--model", tiny_llama_path, "--dataset", str(dataset), "--reward", "faulty-reward"]
    args += ["--set", "reward.fault=raises", "--set", "generator.max_new_tokens=2", "--iterations", "3"]
    args += ["--prompts-per-iteration", "2", "--samples-per-prompt", "2", "--output-dir", str(output_dir), "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "Traceback" in result.output and "RuntimeError: reward server went away" in result.output
    assert "Error: Iteration 1: reward 'faulty-reward' (plugin " in result.output
    assert "add --resume to the command to continue the run" in result.output
    assert metrics_iterations(output_dir) == [0]


def test_cli_reports_a_crashing_reward_with_its_errors_and_the_resume_hint(tiny_llama_path, tmp_path):
    from iterframe.cli import cli

    reward_file = tmp_path / "crashing_reward.py"
    reward_file.write_text(
        "calls = []\n\n"
        "def score(prompts, completions, references):\n"
        "    calls.append(1)\n"
        "    if len(calls) > 1:\n"
        "        raise ZeroDivisionError('the scorer divided by zero')\n"
        "    return [1.0] * len(completions)\n"
    )
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text(
        "".join(json.dumps({"prompt": f"{a}+1=", "reference": str(a + 1)}) + "\n" for a in range(4))
    )
    output_dir = tmp_path / "out"
    args = ["run", "--model", tiny_llama_path, "--dataset", str(dataset), "--reward", "python"]
    args += ["--set", f"reward.function={reward_file}:score", "--set", "reward.workers=0"]
    args += ["--set", "generator.max_new_tokens=2", "--iterations", "3", "--prompts-per-iteration", "2"]
    args += ["--samples-per-prompt", "2", "--output-dir", str(output_dir), "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert (
        "Error: Iteration 1: reward 'python' (plugin 'iterframe.builtin.rewards') failed on 4 of 4 samples "
        "(4 error)" in result.output
    )
    assert f"ZeroDivisionError: the scorer divided by zero (at {reward_file}:6 in score)" in result.output
    assert "add --resume to the command to continue the run" in result.output
    assert metrics_iterations(output_dir) == [0]


# --- faulty lifecycle hooks ---------------------------------------------------------------------------------


class FaultyHooks:
    """Implements every lifecycle hook; ``hook`` misbehaves with ``fault`` in iteration 1."""

    def __init__(self, hook: str, fault: str):
        self.hook, self.fault = hook, fault

    def _answer(self, hook, iteration, good=None):
        if hook != self.hook or iteration != 1:
            return good
        if self.fault == "raises":
            raise RuntimeError(f"{hook} crashed")
        return {"wrong-type": "a string", "wrong-count": [True], "builtin-key": {"num_kept": -5}}[self.fault]

    @hookimpl
    def on_iteration_start(self, iteration):
        return self._answer("on_iteration_start", iteration)

    @hookimpl
    def on_samples_generated(self, iteration):
        return self._answer("on_samples_generated", iteration)

    @hookimpl
    def on_samples_scored(self, iteration):
        return self._answer("on_samples_scored", iteration)

    @hookimpl
    def before_step(self, iteration):
        return self._answer("before_step", iteration)

    @hookimpl
    def after_step(self, iteration):
        return self._answer("after_step", iteration, good={"faulty/steps": 1})

    @hookimpl
    def on_iteration_end(self, iteration):
        return self._answer("on_iteration_end", iteration)

    @hookimpl
    def on_checkpoint_saved(self, iteration):
        return self._answer("on_checkpoint_saved", iteration)


HOOK_FAULTS = [
    ("on_iteration_start", "raises", ComponentError, "RuntimeError: on_iteration_start crashed", [0]),
    ("on_samples_generated", "raises", ComponentError, "RuntimeError: on_samples_generated crashed", [0]),
    (
        "on_samples_scored",
        "wrong-count",
        ValueError,
        "must return a list of 4 booleans (one per sample), got 1",
        [0],
    ),
    ("before_step", "raises", ComponentError, "RuntimeError: before_step crashed", [0]),
    ("after_step", "wrong-type", ValueError, "it returned str 'a string'; it must return None or a dict", [0]),
    (
        "on_iteration_end",
        "builtin-key",
        ValueError,
        "it returned 'num_kept', which iterframe's own metrics use",
        [0],
    ),
    ("on_checkpoint_saved", "raises", ComponentError, "RuntimeError: on_checkpoint_saved crashed", [0, 1]),
]


@pytest.mark.parametrize(
    ("hook", "fault", "error_class", "detail", "finished"),
    HOOK_FAULTS,
    ids=[f"{h}-{f}" for h, f, *_ in HOOK_FAULTS],
)
def test_faulty_hook_error_names_plugin_hook_and_iteration(
    register_plugin, shared_trainer, tiny_llama_path, tmp_path, hook, fault, error_class, detail, finished
):
    register_plugin(FaultyHooks(hook, fault), name="faulty-hooks")
    output_dir = tmp_path / "out"
    with pytest.raises(error_class) as caught:
        make_loop(tiny_llama_path, output_dir, trainer=shared_trainer, iterations=3).run()
    error = caught.value
    assert isinstance(error, ComponentError)
    assert str(error).startswith(f"Iteration 1: hook {hook} of plugin 'faulty-hooks' failed: ")
    assert detail in str(error)
    assert (error.kind, error.name, error.origin, error.iteration) == ("hook", hook, "plugin 'faulty-hooks'", 1)
    assert metrics_iterations(output_dir) == finished


def test_a_failing_on_run_end_does_not_hide_why_the_run_stopped(
    faulty_plugin, register_plugin, tiny_llama_path, tmp_path
):
    ended = []

    class FailingEnd:
        @hookimpl
        def on_run_end(self, error):
            raise OSError("could not upload the run")

    class RecordingEnd:
        @hookimpl
        def on_run_end(self, error):
            ended.append(error)

    register_plugin(RecordingEnd(), name="recording-end")
    register_plugin(FailingEnd(), name="failing-end")
    with pytest.warns(
        UserWarning, match="End of the run: hook on_run_end of plugin 'failing-end' failed: OSError"
    ):
        with pytest.raises(ComponentError, match="reward 'faulty-reward'"):
            make_loop(tiny_llama_path, tmp_path / "broken", iterations=2, **components("reward", "raises")).run()
    assert isinstance(ended[0], ComponentError)
    with pytest.raises(ComponentError, match="^End of the run: hook on_run_end of plugin 'failing-end' failed"):
        make_loop(tiny_llama_path, tmp_path / "ok", iterations=1).run()
    assert ended[1] is None
    assert metrics_iterations(tmp_path / "ok") == [0]


def test_cli_reports_a_crashing_hook_with_its_traceback_and_the_resume_hint(
    register_plugin, tiny_llama_path, tmp_path
):
    from iterframe.cli import cli

    register_plugin(FaultyHooks("after_step", "raises"), name="faulty-hooks")
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text(
        "".join(json.dumps({"prompt": f"{a}+1=", "reference": str(a + 1)}) + "\n" for a in range(4))
    )
    output_dir = tmp_path / "out"
    args = ["run", "--model", tiny_llama_path, "--dataset", str(dataset), "--reward", "answer-match"]
    args += ["--filter", "length", "--set", "generator.max_new_tokens=2"]
    args += ["--iterations", "3", "--prompts-per-iteration", "2", "--samples-per-prompt", "2"]
    args += ["--output-dir", str(output_dir), "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "Traceback" in result.output and "RuntimeError: after_step crashed" in result.output
    assert (
        "Error: Iteration 1: hook after_step of plugin 'faulty-hooks' failed: RuntimeError: after_step crashed"
        in result.output
    )
    assert "add --resume to the command to continue the run" in result.output
    assert metrics_iterations(output_dir) == [0]
