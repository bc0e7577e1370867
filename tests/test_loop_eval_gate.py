"""The baseline and the gates around evals: ``eval/initial_reward``, rolling back an iteration whose eval drops
(``accept_if_eval_drop_below``), early stopping with the best model in ``best/`` (``early_stop_patience``)."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from loop_fakes import make_loop, make_prompts

from iterframe import hookimpl
from iterframe.loop import LoopConfig
from iterframe.loop.artifacts import iteration_dir, read_samples
from iterframe.loop.report import trend_line
from iterframe.plugins.components import Logger
from iterframe.plugins.errors import ComponentValueError


def eval_rewards(*values):
    """A reward giving training samples 1 and, at the n-th eval pass (the starting model's first), ``values[n]``
    to every eval prompt."""
    passes = []

    def reward(prompts, completions, references):
        if all(prompt.startswith("e") for prompt in prompts):
            passes.append(len(passes))
            return [values[passes[-1]]] * len(prompts)
        return [1.0] * len(prompts)

    return reward


class StateLogger(Logger):
    """Keeps, per logged iteration, a copy of the model's weights and the optimizer state."""

    name = "state"

    def setup(self, context):
        self.context = context
        self.weights, self.optimizer = {}, {}

    def log_metrics(self, metrics, iteration):
        trainer = self.context.trainer
        self.weights[iteration] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        self.optimizer[iteration] = copy.deepcopy(trainer.optimizer.state_dict()["state"])


def same_tensors(left: dict, right: dict) -> bool:
    return left.keys() == right.keys() and all(torch.equal(left[key], right[key]) for key in left)


def gated_run(tiny_llama_path, output_dir, *values, **options):
    logger = StateLogger()
    loop = make_loop(
        tiny_llama_path,
        output_dir,
        reward=eval_rewards(*values),
        eval_prompts=make_prompts(2, "e"),
        loggers=[logger],
        iterations=len(values) - 1,
        **options,
    )
    return loop, loop.run(), logger


def test_the_starting_model_is_evaluated_first(tiny_llama_path, tmp_path, capsys):
    loop, rows, _ = gated_run(tiny_llama_path, tmp_path / "out", 0.25, 0.5, 0.75, quiet=False)
    assert rows[0]["eval/initial_reward"] == 0.25
    assert all("eval/initial_reward" not in row for row in rows[1:])
    with open(tmp_path / "out" / "run.json", encoding="utf-8") as handle:
        assert json.load(handle)["eval/initial_reward"] == 0.25
    initial = read_samples(os.path.join(iteration_dir(tmp_path / "out", 0), "initial_eval_samples.parquet"))
    assert [(row["iteration"], row["prompt"], row["reward"]) for row in initial] == [
        (-1, "e0", 0.25),
        (-1, "e1", 0.25),
    ]
    expected = "eval/reward: 0.250 (initial) -> 0.750 (iteration 1), change +0.500"
    assert trend_line(rows) == expected
    assert expected in capsys.readouterr().out


def test_initial_eval_can_be_turned_off(tiny_llama_path, tmp_path):
    _, rows, _ = gated_run(tiny_llama_path, tmp_path / "out", 0.5, 0.75, initial_eval=False)
    assert "eval/initial_reward" not in rows[0]
    assert trend_line(rows) == (
        "eval/reward: 0.500 (iteration 0, the only value) (initial_eval off: the starting model was not evaluated)"
    )


def test_an_iteration_whose_eval_drops_too_far_is_rolled_back(tiny_llama_path, tmp_path):
    _, rows, logger = gated_run(
        tiny_llama_path, tmp_path / "out", 0.5, 0.6, 0.1, 0.55, accept_if_eval_drop_below=0.2
    )
    assert [row["rolled_back"] for row in rows] == [False, True, False]  # 0.1 < 0.6 - 0.2; 0.55 >= 0.6 - 0.2
    assert same_tensors(logger.weights[1], logger.weights[0])
    assert not same_tensors(logger.weights[2], logger.weights[1])
    exp_avg = [logger.optimizer[iteration][0]["exp_avg"] for iteration in range(2)]
    assert torch.equal(exp_avg[0], exp_avg[1])
    assert [row["global_step"] for row in rows] == [1, 1, 2]
    assert trend_line(rows) == "eval/reward: 0.500 (initial) -> 0.550 (iteration 2), change +0.050"


def test_without_the_gate_the_same_drop_is_trained_on(tiny_llama_path, tmp_path):
    _, rows, logger = gated_run(tiny_llama_path, tmp_path / "out", 0.5, 0.6, 0.1)
    assert "rolled_back" not in rows[1]
    assert not same_tensors(logger.weights[1], logger.weights[0])


@pytest.fixture(scope="module")
def stopped_run(tiny_llama_path, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("stop") / "out"
    loop, rows, logger = gated_run(
        tiny_llama_path, output_dir, 0.5, 0.7, 0.6, 0.7, 0.9, 0.9, early_stop_patience=2, save_every=5
    )
    return loop, rows, logger, output_dir


def test_early_stopping_ends_the_run_after_patience_iterations_without_a_new_best(stopped_run):
    _, rows, _, _ = stopped_run
    assert [row["iteration"] for row in rows] == [0, 1, 2]  # best 0.7 at 0; 0.6 and 0.7 are no new best
    assert [row["stopped_early"] for row in rows] == [False, False, True]
    assert [row["eval/best_reward"] for row in rows] == [0.7, 0.7, 0.7]


def test_the_best_model_is_kept_in_best(stopped_run):
    from transformers import AutoModelForCausalLM

    _, _, logger, output_dir = stopped_run
    with open(output_dir / "best" / "best.json", encoding="utf-8") as handle:
        assert json.load(handle) == {"iteration": 0, "eval/reward": 0.7}
    best = AutoModelForCausalLM.from_pretrained(output_dir / "best").state_dict()
    assert same_tensors({key: best[key] for key in logger.weights[0]}, logger.weights[0])
    assert (output_dir / "final" / "model.safetensors").exists()
    checkpoints = sorted(os.listdir(output_dir / "checkpoints"))
    assert checkpoints == ["iteration-000002"]  # the best iteration's and the stopping one's; the newest kept


def resumed_loop(tiny_llama_path, output_dir, iterations: int, patience: int):
    return make_loop(
        tiny_llama_path,
        output_dir,
        reward=eval_rewards(0.9),
        eval_prompts=make_prompts(2, "e"),
        iterations=iterations,
        early_stop_patience=patience,
        existing_output="resume",
    )


def test_a_stopped_run_resumed_stays_stopped(stopped_run, tiny_llama_path):
    _, _, _, output_dir = stopped_run
    resumed = resumed_loop(tiny_llama_path, output_dir, iterations=5, patience=2)
    assert [row["iteration"] for row in resumed.run()] == [0, 1, 2]
    assert resumed.gate.stopped


def test_resume_rewrites_best_when_the_run_stopped_before_saving_it(tiny_llama_path, tmp_path):
    output_dir = tmp_path / "out"
    _, rows, _ = gated_run(tiny_llama_path, output_dir, 0.1, 0.2, 0.3, early_stop_patience=3)
    with open(output_dir / "best" / "best.json", encoding="utf-8") as handle:
        assert json.load(handle)["iteration"] == 1
    os.remove(output_dir / "best" / "best.json")  # as if stopped between the checkpoint and best/
    resumed_loop(tiny_llama_path, output_dir, iterations=2, patience=3).run()
    with open(output_dir / "best" / "best.json", encoding="utf-8") as handle:
        assert json.load(handle) == {"iteration": 1, "eval/reward": 0.3}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"accept_if_eval_drop_below": 0.1, "eval_every": 2}, "needs an eval after every iteration"),
        ({"accept_if_eval_drop_below": -0.1}, "must be a number >= 0"),
        ({"early_stop_patience": 2, "eval_every": 0}, "early_stop_patience judges iterations by their eval"),
        ({"early_stop_patience": -1}, "early_stop_patience must be an integer >= 0"),
    ],
)
def test_gate_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig(output_dir="out", **options)


@pytest.mark.parametrize("option", [{"accept_if_eval_drop_below": 0.1}, {"early_stop_patience": 1}])
def test_gates_need_eval_prompts(tiny_llama_path, tmp_path, option):
    with pytest.raises(ValueError, match="judges iterations by their eval: give eval prompts"):
        make_loop(tiny_llama_path, tmp_path / "out", **option)
    assert not (tmp_path / "out").exists()


class EvalRewardForger:
    @hookimpl
    def on_iteration_end(self, iteration, metrics):
        return {"eval/reward": 99.0} if "eval/reward" not in metrics else None


def test_a_plugin_adding_eval_reward_to_an_iteration_without_eval_stops_the_run(
    tiny_llama_path, tmp_path, register_plugin
):
    register_plugin(EvalRewardForger(), name="forger")
    loop = make_loop(
        tiny_llama_path, tmp_path / "out", eval_prompts=make_prompts(2, "e"), iterations=2, eval_every=2
    )
    with pytest.raises(ComponentValueError) as caught:
        loop.run()
    assert str(caught.value).startswith(
        "Iteration 0: hook on_iteration_end of plugin 'forger' failed: it returned 'eval/reward', which "
        "iterframe's own metrics use"
    )
    assert not os.path.exists(tmp_path / "out" / "metrics.jsonl")  # no row holds the forged eval


def _diverging_run(tiny_llama_path, tmp_path, train, caplog):
    from iterframe.plugins.components import Reward

    class Diverging(Reward):
        name = "diverging"

        def score(self, samples):  # eval prompts (e*) score lower each iteration
            return [
                0.9 - 0.2 * sample.iteration if sample.prompt.startswith("e") else train(sample.iteration)
                for sample in samples
            ]

    loop = make_loop(
        tiny_llama_path, tmp_path / "out", reward=Diverging(), eval_prompts=make_prompts(2, "e"), iterations=3,
        initial_eval=False,
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="iterframe"):
        loop.run()
    return [
        record.getMessage() for record in caplog.records if "fell two iterations in a row" in record.getMessage()
    ]


def test_a_run_warns_when_eval_falls_two_iterations_in_a_row_while_training_reward_rises(
    tiny_llama_path, tmp_path, caplog
):
    warnings = _diverging_run(tiny_llama_path, tmp_path, lambda iteration: 0.2 + 0.2 * iteration, caplog)
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "eval/reward fell two iterations in a row (0.900 -> 0.700 -> 0.500, iteration 2) while the training "
        "reward rose (0.200 -> 0.400 -> 0.600)"
    )
    assert "train.learning_rate" in warnings[0] and "loop.accept_if_eval_drop_below" in warnings[0]


def test_no_warning_when_eval_and_training_reward_fall_together(tiny_llama_path, tmp_path, caplog):
    assert _diverging_run(tiny_llama_path, tmp_path, lambda iteration: 0.8 - 0.2 * iteration, caplog) == []
