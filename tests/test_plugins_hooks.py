"""Lifecycle hooks: keyword calls reach every implementation, results follow each hook's contract; tracing."""

from __future__ import annotations

import math
import re

import pytest

from iterframe import hookimpl
from iterframe.plugins import get_plugin_manager, register, reset_plugin_manager, unregister
from iterframe.plugins.components import RunContext, Sample


@pytest.fixture
def context(tmp_path):
    return RunContext(trainer=None, tokenizer=None, output_dir=str(tmp_path), seed=3, config={"k": 2})


def make_samples(rewards):
    return [
        Sample(iteration=1, prompt_id=index // 2, prompt=f"p{index // 2}", completion=f"c{index}", reward=reward)
        for index, reward in enumerate(rewards)
    ]


class Recorder:
    """Records every lifecycle call it receives."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def on_run_start(self, context):
        self.calls.append(("on_run_start", context))

    @hookimpl
    def on_iteration_start(self, context, iteration, prompts):
        self.calls.append(("on_iteration_start", iteration, list(prompts)))

    @hookimpl
    def on_checkpoint_saved(self, context, iteration, path):
        self.calls.append(("on_checkpoint_saved", iteration, path))

    @hookimpl
    def on_run_end(self, context, metrics, error):
        self.calls.append(("on_run_end", metrics, error))


@pytest.fixture
def recorder(register_plugin):
    plugin = Recorder()
    register_plugin(plugin, name="recorder")
    return plugin


def test_on_run_start_receives_the_run_context(recorder, context):
    assert get_plugin_manager().hook.on_run_start(context=context) == []
    assert recorder.calls == [("on_run_start", context)]


def test_on_iteration_start_receives_iteration_and_prompts(recorder, context):
    get_plugin_manager().hook.on_iteration_start(context=context, iteration=4, prompts=["a", "b"])
    assert recorder.calls == [("on_iteration_start", 4, ["a", "b"])]


def test_on_checkpoint_saved_receives_the_path(recorder, context, tmp_path):
    get_plugin_manager().hook.on_checkpoint_saved(context=context, iteration=2, path=str(tmp_path / "ckpt"))
    assert recorder.calls == [("on_checkpoint_saved", 2, str(tmp_path / "ckpt"))]


def test_on_run_end_receives_last_metrics_and_error(recorder, context):
    error = RuntimeError("stopped")
    get_plugin_manager().hook.on_run_end(context=context, metrics={"iteration": 3}, error=error)
    assert recorder.calls == [("on_run_end", {"iteration": 3}, error)]


def test_on_samples_generated_may_edit_samples_in_place(register_plugin, context):
    class Stripper:
        @hookimpl
        def on_samples_generated(self, context, iteration, samples):
            for sample in samples:
                sample.completion = sample.completion.strip()
                sample.info["stripped_in"] = iteration

    register_plugin(Stripper(), name="stripper")
    samples = [Sample(iteration=0, prompt_id=0, prompt="p", completion="  answer \n")]
    get_plugin_manager().hook.on_samples_generated(context=context, iteration=0, samples=samples)
    assert samples[0].completion == "answer"
    assert samples[0].info == {"stripped_in": 0}


def test_on_samples_scored_returns_one_keep_list_per_answering_plugin(register_plugin, context):
    class DropNegative:
        @hookimpl
        def on_samples_scored(self, context, iteration, samples):
            return [sample.reward >= 0 for sample in samples]

    class KeepAll:
        @hookimpl
        def on_samples_scored(self, context, iteration, samples):
            return None

    register_plugin(DropNegative(), name="drop-negative")
    register_plugin(KeepAll(), name="keep-all")
    samples = make_samples([1.0, -1.0, 0.5])
    results = get_plugin_manager().hook.on_samples_scored(context=context, iteration=1, samples=samples)
    assert results == [[True, False, True]]  # pluggy leaves out None answers


def test_before_step_may_edit_the_batch_in_place(register_plugin, context):
    class MaskFirstLabel:
        @hookimpl
        def before_step(self, context, iteration, batch):
            for labels in batch["labels"]:
                labels[0] = -100

    register_plugin(MaskFirstLabel(), name="mask-first")
    batch = {"input_ids": [[5, 6, 7]], "attention_mask": [[1, 1, 1]], "labels": [[5, 6, 7]]}
    get_plugin_manager().hook.before_step(context=context, iteration=0, batch=batch)
    assert batch["labels"] == [[-100, 6, 7]]


def test_after_step_extra_metrics_come_back_from_each_plugin(register_plugin, context):
    class Perplexity:
        @hookimpl
        def after_step(self, context, iteration, stats):
            return {"perplexity": math.exp(stats["loss"])}

    class TokensPerSample:
        @hookimpl
        def after_step(self, iteration, stats):  # an implementation may take fewer arguments than the spec
            return {"tokens_per_sample": stats["num_tokens"] / stats["num_samples"]}

    register_plugin(Perplexity(), name="perplexity")
    register_plugin(TokensPerSample(), name="tokens-per-sample")
    stats = {"loss": 0.0, "num_tokens": 12, "num_samples": 4}
    results = get_plugin_manager().hook.after_step(context=context, iteration=0, stats=stats)
    assert sorted(results, key=str) == [{"perplexity": 1.0}, {"tokens_per_sample": 3.0}]


def test_on_iteration_end_returns_metrics_to_merge(register_plugin, context):
    class KeepRatePercent:
        @hookimpl
        def on_iteration_end(self, context, iteration, metrics):
            return {"keep_rate_percent": 100 * metrics["keep_rate"]}

    register_plugin(KeepRatePercent(), name="keep-rate-percent")
    metrics = {"iteration": 2, "keep_rate": 0.25}
    results = get_plugin_manager().hook.on_iteration_end(context=context, iteration=2, metrics=metrics)
    assert results == [{"keep_rate_percent": 25.0}]


def test_registration_hooks_are_called_once_per_plugin(register_plugin):
    from iterframe.plugins import list_components

    calls = []

    class Counting:
        @hookimpl
        def register_generators(self, register):
            calls.append("generators")

        @hookimpl
        def register_rewards(self, register):
            calls.append("rewards")

        @hookimpl
        def register_filters(self, register):
            calls.append("filters")

        @hookimpl
        def register_tokenizers(self, register):
            calls.append("tokenizers")

        @hookimpl
        def register_loggers(self, register):
            calls.append("loggers")

    register_plugin(Counting(), name="counting")
    list_components()
    list_components()
    assert calls == ["generators", "rewards", "filters", "tokenizers", "loggers"]


def test_trace_env_prints_hook_calls_and_results_to_stderr(monkeypatch, capsys, context):
    monkeypatch.setenv("ITERFRAME_TRACE_PLUGINS", "1")
    reset_plugin_manager()

    class Answering:
        @hookimpl
        def on_iteration_end(self, context, iteration, metrics):
            return {"extra": 1}

    plugin = Answering()
    register(plugin, name="answering")
    try:
        capsys.readouterr()
        get_plugin_manager().hook.on_iteration_end(context=context, iteration=7, metrics={"reward_mean": 0.5})
        err = capsys.readouterr().err
    finally:
        unregister(plugin)
        reset_plugin_manager()
    assert "[iterframe trace] on_iteration_end(context=" in err
    assert "iteration=7, metrics={'reward_mean': 0.5}) -> plugins: answering" in err
    assert "[iterframe trace] on_iteration_end returned [{'extra': 1}]" in err


def test_trace_shows_registration_hooks_with_their_plugin(monkeypatch, capsys):
    from iterframe.plugins import list_components

    monkeypatch.setenv("ITERFRAME_TRACE_PLUGINS", "1")
    reset_plugin_manager()
    try:
        list_components()
        err = capsys.readouterr().err
    finally:
        reset_plugin_manager()
    assert "register_rewards(register=<function" in err
    assert "-> plugins: iterframe.builtin.rewards" in err


def test_no_trace_without_the_env_var(monkeypatch, capsys, context, plugin_manager):
    monkeypatch.delenv("ITERFRAME_TRACE_PLUGINS", raising=False)
    reset_plugin_manager()
    get_plugin_manager().hook.on_run_start(context=context)
    assert "[iterframe trace]" not in capsys.readouterr().err


# --- one plugin at a time: failures and wrong answers name the plugin, the hook and the moment ---------------


class Boom:
    @hookimpl
    def after_step(self, context, iteration, stats):
        raise RuntimeError("metrics backend down")


class Listy:
    @hookimpl
    def after_step(self, iteration, stats):
        return ["loss", "tokens", "lr"]


def test_a_raising_hook_names_plugin_hook_and_iteration(register_plugin, context):
    from iterframe.plugins.errors import ComponentError
    from iterframe.plugins.hooks import Hooks

    register_plugin(Boom(), name="boom")
    with pytest.raises(ComponentError) as caught:
        Hooks(context).metrics("after_step", iteration=3, stats={"loss": 1.0})
    error = caught.value
    assert str(error) == "Iteration 3: hook after_step of plugin 'boom' failed: RuntimeError: metrics backend down"
    assert (error.kind, error.name, error.origin, error.iteration) == ("hook", "after_step", "plugin 'boom'", 3)
    assert str(error.__cause__) == "metrics backend down"


def test_a_metrics_hook_returning_a_non_dict_is_named(register_plugin, context):
    from iterframe.plugins.errors import ComponentValueError
    from iterframe.plugins.hooks import Hooks

    register_plugin(Listy(), name="listy")
    with pytest.raises(ComponentValueError) as caught:
        Hooks(context).metrics("after_step", iteration=0, stats={"loss": 1.0})
    assert str(caught.value) == (
        "Iteration 0: hook after_step of plugin 'listy' failed: it returned list ['loss', 'tokens', 'lr']; "
        "it must return None or a dict of metrics, e.g. {'perplexity': 12.5}."
    )


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        ({1: 2.0}, "it returned the metric name 1; metric names are non-empty strings."),
        ({"ok": object()}, "it returned metric 'ok' = object"),
    ],
)
def test_metric_names_must_be_strings_and_values_numbers_or_text(answer, detail):
    from iterframe.plugins.hooks import check_metrics

    with pytest.raises(ValueError, match=re.escape(detail)):
        check_metrics(answer)


def test_metric_values_may_be_numbers_text_none_or_scalars_with_item():
    import torch

    from iterframe.plugins.hooks import check_metrics

    check_metrics({"a": 1, "b": 2.5, "c": True, "d": "text", "e": None, "f": torch.tensor(3.0)})


def test_hook_metrics_may_not_replace_iterframes_own(context):
    from iterframe.plugins.errors import ComponentValueError
    from iterframe.plugins.hooks import HookMetrics

    row = {"iteration": 2, "num_kept": 3, "eval/reward": 0.5}
    metrics = HookMetrics(row, iteration=2)
    with pytest.raises(ComponentValueError) as caught:
        metrics.add("on_iteration_end", [("cheater", {"num_kept": -5, "eval/reward": 99.0, "mine": 1})])
    assert str(caught.value) == (
        "Iteration 2: hook on_iteration_end of plugin 'cheater' failed: it returned 'eval/reward', 'num_kept', "
        "which iterframe's own metrics use; return other names, e.g. 'cheater/eval/reward'."
    )
    assert row == {"iteration": 2, "num_kept": 3, "eval/reward": 0.5}


def test_hook_metrics_may_not_add_the_loops_eval_metrics_to_a_row_without_an_eval():
    """A row without an eval has no ``eval/reward``; a hook adding one would be judged as an eval on resume."""
    from iterframe.plugins.errors import ComponentValueError
    from iterframe.plugins.hooks import HookMetrics

    row = {"iteration": 1, "num_kept": 3}
    metrics = HookMetrics(row, iteration=1)
    for name in ("eval/reward", "eval/initial_reward", "rolled_back", "stopped_early"):
        with pytest.raises(ComponentValueError, match=f"it returned '{name}', which iterframe's own metrics use"):
            metrics.add("on_iteration_end", [("cheater", {name: 99.0})])
    metrics.add("on_iteration_end", [("honest", {"honest/eval_reward": 0.5})])
    assert row == {"iteration": 1, "num_kept": 3, "honest/eval_reward": 0.5}


def test_two_plugins_may_not_return_the_same_metric():
    from iterframe.plugins.errors import ComponentValueError
    from iterframe.plugins.hooks import HookMetrics

    row = {"iteration": 0}
    metrics = HookMetrics(row, iteration=0)
    metrics.add("after_step", [("first", {"perplexity": 9.0})])
    with pytest.raises(
        ComponentValueError,
        match=r"hook on_iteration_end of plugin 'second' failed: it returned "
        r"'perplexity', which plugin 'first' already added",
    ):
        metrics.add("on_iteration_end", [("second", {"perplexity": 1.0})])
    assert row == {"iteration": 0, "perplexity": 9.0}


def test_a_plugin_may_update_its_own_metric():
    from iterframe.plugins.hooks import HookMetrics

    row = {"iteration": 0}
    metrics = HookMetrics(row, iteration=0)
    metrics.add("after_step", [("mine", {"loss_seen": 2.0})])  # first training pass
    metrics.add("after_step", [("mine", {"loss_seen": 1.0})])  # second pass
    metrics.add("on_iteration_end", [("mine", {"loss_seen": 0.5, "done": True})])
    assert row == {"iteration": 0, "loss_seen": 0.5, "done": True}


def test_on_run_end_reaches_every_plugin_then_raises_the_first_failure(register_plugin, context):
    from iterframe.plugins.errors import ComponentError
    from iterframe.plugins.hooks import Hooks

    ended = []

    class Failing:
        @hookimpl
        def on_run_end(self, metrics, error):
            raise OSError("upload failed")

    class Cleaning:
        @hookimpl
        def on_run_end(self, metrics, error):
            ended.append(metrics)

    register_plugin(Cleaning(), name="cleaning")
    register_plugin(Failing(), name="failing")  # called first: pluggy calls the last registered first
    with pytest.raises(
        ComponentError, match=r"^End of the run: hook on_run_end of plugin 'failing' failed: OSError"
    ):
        Hooks(context).run_end(metrics={"iteration": 0}, error=None)
    assert ended == [{"iteration": 0}]


def test_a_raising_registration_hook_names_the_plugin(plugin_manager):
    from iterframe.plugins.errors import ComponentError

    class BrokenRegistration:
        @hookimpl
        def register_filters(self, register):
            raise KeyError("filters table")

    with pytest.raises(
        ComponentError,
        match=r"^Registering components: hook register_filters of plugin "
        r"'broken-registration' failed: KeyError: 'filters table'",
    ):
        register(BrokenRegistration(), name="broken-registration")
    assert plugin_manager.get_plugin("broken-registration") is None


def test_hooks_see_which_components_the_run_uses(context):
    from iterframe.builtin.filters import ThresholdFilter
    from iterframe.plugins import create_component

    context.components = {
        "reward": [create_component("reward", "answer-match")],
        "filter": [create_component("filter", "threshold"), create_component("filter", "dedup")],
    }
    assert context.uses("answer-match") and context.uses("dedup", kind="filter")
    assert context.uses(ThresholdFilter) and context.uses(ThresholdFilter, kind="filter")
    assert not context.uses("answer-match", kind="filter")
    assert not context.uses("keyword")


class Starter:
    """Implements on_iteration_start, writing its name into a shared list."""

    def __init__(self, name, calls, error=None):
        self.name, self.calls, self.error = name, calls, error

    @hookimpl
    def on_iteration_start(self, context, iteration, prompts):
        self.calls.append(self.name)
        if self.error is not None:
            raise self.error


class NewStyleWrapper:
    def __init__(self, calls, fail_after=False, swallow=False):
        self.calls, self.fail_after, self.swallow = calls, fail_after, swallow

    @hookimpl(wrapper=True)
    def on_iteration_start(self, context, iteration, prompts):
        self.calls.append("enter")
        try:
            result = yield
        except Exception:
            if not self.swallow:
                raise
            result = []
        self.calls.append("exit")
        if self.fail_after:
            raise RuntimeError("the wrapper broke")
        return result


class OldStyleWrapper:
    def __init__(self, calls):
        self.calls = calls

    @hookimpl(hookwrapper=True)
    def on_iteration_start(self, context, iteration, prompts):
        self.calls.append("old-enter")
        yield
        self.calls.append("old-exit")


def call_iteration_start(context):
    from iterframe.plugins.hooks import Hooks

    return Hooks(context).call("on_iteration_start", iteration=2, prompts=[])


def test_hook_wrappers_run_once_around_all_implementations(register_plugin, context):
    calls = []
    register_plugin(Starter("a", calls), name="plugin-a")
    register_plugin(Starter("b", calls), name="plugin-b")
    register_plugin(NewStyleWrapper(calls), name="new-wrapper")
    register_plugin(OldStyleWrapper(calls), name="old-wrapper")
    answers = call_iteration_start(context)
    assert calls == ["old-enter", "enter", "b", "a", "exit", "old-exit"]
    assert [name for name, _ in answers] == ["plugin-b", "plugin-a"]


def test_a_failing_hook_wrapper_is_blamed_on_its_own_plugin(register_plugin, context):
    from iterframe.plugins.errors import ComponentError

    calls = []
    register_plugin(Starter("a", calls), name="plugin-a")
    register_plugin(NewStyleWrapper(calls, fail_after=True), name="broken-wrapper")
    with pytest.raises(ComponentError) as caught:
        call_iteration_start(context)
    assert caught.value.origin == "plugin 'broken-wrapper'"
    assert str(caught.value) == (
        "Iteration 2: hook on_iteration_start of plugin 'broken-wrapper' failed: RuntimeError: the wrapper broke"
    )
    assert calls == ["enter", "a", "exit"]


def test_an_implementation_failing_inside_a_wrapper_is_blamed_on_its_plugin_even_when_the_wrapper_swallows_it(
    register_plugin, context
):
    from iterframe.plugins.errors import ComponentError

    calls = []
    register_plugin(Starter("a", calls, error=KeyError("boom")), name="plugin-a")
    register_plugin(NewStyleWrapper(calls, swallow=True), name="swallowing-wrapper")
    with pytest.raises(ComponentError) as caught:
        call_iteration_start(context)
    assert caught.value.origin == "plugin 'plugin-a'" and isinstance(caught.value.__cause__, KeyError)
    assert calls == ["enter", "a", "exit"]
