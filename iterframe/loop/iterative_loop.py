"""The iteration engine: prompts -> generate -> score -> filter -> tokenize -> ``trainer.step()`` -> eval -> log.

``IterativeLoop(trainer, prompts, generator, reward, filters, tokenizer, config=LoopConfig(...)).run()`` runs
expert iteration / ReST-EM / RAFT / rejection-sampling fine-tuning with component *instances*, so a notebook
can pass its own objects (a plain function ``f(prompts, completions, references) -> list[float]`` is accepted as
the reward). The sample stages live in :mod:`iterframe.loop.stages`, the artifacts in
:mod:`iterframe.loop.artifacts` and :mod:`iterframe.loop.run_state`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

from iterframe.generation.token_ids import tokenizer_fingerprint
from iterframe.loop.adaptive import AdaptiveSampling
from iterframe.loop.artifacts import SAMPLES_FILE, iteration_dir, write_samples
from iterframe.loop.checks import check_prompt_lengths, check_prompt_records, component_name, require_component
from iterframe.loop.config import LoopConfig, PromptRecord
from iterframe.loop.eval_gate import EvalGate
from iterframe.loop.metrics import reward_metrics, token_metrics
from iterframe.loop.progress import Progress, echo
from iterframe.loop.prompt_sampler import PromptSampler
from iterframe.loop.replay import ReplayBuffer
from iterframe.loop.resume import claim_and_load, loop_state, restore_after_setup
from iterframe.loop.run_state import (
    BEST_DIR,
    complete_loop_checkpoint,
    remove_unfinished_checkpoints,
    save_final_model,
    write_training_state,
)
from iterframe.loop.sample_sets import TrainingSet, prompt_records, recorded_fates
from iterframe.loop.sampling import SampleMaker
from iterframe.loop.stages import FunctionReward, check_failed_rate, filter_samples
from iterframe.loop.training import TrainingSnapshot, reset_to_base, train_on
from iterframe.plugins.components import (
    COMPONENT_KINDS,
    Filter,
    Generator,
    Logger,
    Reward,
    RunContext,
    Sample,
    SampleTokenizer,
)
from iterframe.plugins.errors import blame
from iterframe.plugins.hooks import HookMetrics, Hooks

__all__ = ["IterativeLoop", "LoopConfig", "PromptRecord"]

log = logging.getLogger(__name__)

SAMPLES_FILE_EVAL = "eval_samples.parquet"
#: The starting model's eval completions, saved with iteration 0's samples.
SAMPLES_FILE_INITIAL_EVAL = "initial_eval_samples.parquet"


class IterativeLoop:
    """Runs the generate -> score -> filter -> train loop for ``config.iterations`` iterations.

    Args:
        trainer: the :class:`~iterframe.IterativeSFTTrainer` to train (its model generates).
        prompts: the prompt set, as :class:`PromptRecord` objects.
        generator: turns prompts into completions (:class:`~iterframe.Generator`).
        reward: scores samples (:class:`~iterframe.Reward`, a :class:`~iterframe.PooledReward` in worker processes,
            or a function ``f(prompts, completions, references) -> list[float]``); samples it cannot score fail.
        filters: applied in order, each to the survivors of the previous one.
        tokenizer: turns kept samples into ``step()`` inputs (:class:`~iterframe.SampleTokenizer`).
        loggers: receive each iteration's metrics and samples; a ``jsonl`` logger is added when none is given.
        eval_prompts: held-out prompts scored after training with the same reward (greedy generation).
        config: the loop options; default ``LoopConfig(output_dir=trainer.args.output_dir)``.
        eval_generator: generator for evaluation; default ``generator.eval_copy()`` (for ``hf``, a greedy copy).
        run_config: the resolved run configuration handed to components as ``RunContext.config``.
    """

    def __init__(
        self,
        trainer,
        prompts: list[PromptRecord],
        generator: Generator,
        reward: Union[Reward, Callable],
        filters: Sequence[Filter],
        tokenizer: SampleTokenizer,
        loggers: Sequence[Logger] = (),
        eval_prompts: Optional[list[PromptRecord]] = None,
        config: Optional[LoopConfig] = None,
        eval_generator: Optional[Generator] = None,
        run_config: Optional[dict[str, Any]] = None,
    ):
        self.trainer = trainer
        self.config = config if config is not None else LoopConfig(output_dir=trainer.args.output_dir)
        self.prompts = check_prompt_records(prompts, "prompts")
        self.eval_prompts = check_prompt_records(eval_prompts, "eval_prompts") if eval_prompts else []
        check_prompt_lengths(trainer, self.prompts)
        self.generator = require_component(generator, Generator, "generator", "generator")
        if not isinstance(reward, Reward) and callable(reward):
            reward = FunctionReward(reward)
        self.reward = require_component(reward, Reward, "reward", "reward")
        self.filters = [
            require_component(item, Filter, f"filters[{index}]", "filter") for index, item in enumerate(filters)
        ]
        self.tokenizer = require_component(tokenizer, SampleTokenizer, "tokenizer", "tokenizer")
        self.loggers = [
            require_component(item, Logger, f"loggers[{index}]", "logger") for index, item in enumerate(loggers)
        ]
        if not any(component_name(logger) == "jsonl" for logger in self.loggers):
            from iterframe.plugins.registry import create_component

            self.loggers.append(create_component("logger", "jsonl"))
        if eval_generator is None:
            with blame("generator", self.generator, None):
                eval_generator = require_component(self.generator.eval_copy(), Generator, "eval copy", "generator")
        self.eval_generator = eval_generator
        self.run_config = dict(run_config or {"loop": dataclasses.asdict(self.config)})
        self.sampler = PromptSampler(len(self.prompts), seed=self.config.seed, shuffle=self.config.shuffle_prompts)
        self.replay = ReplayBuffer(self.config.replay_buffer_size, distinct=self.config.replay_distinct)
        self.metrics: list[dict[str, Any]] = []
        self.context = RunContext(
            trainer=trainer,
            tokenizer=trainer.processing_class,
            output_dir=self.config.output_dir,
            seed=self.config.seed,
            config=self.run_config,
            components={kind: [] for kind in COMPONENT_KINDS},
        )
        for kind, component in self._components_with_kinds():
            self.context.components[kind].append(component)
        self.hooks = Hooks(self.context)
        self.is_main_process = bool(trainer.args.should_save)
        self.progress = Progress(disabled=self.config.quiet or not self.is_main_process)
        self._base_state: Optional[dict] = None
        self.gate = EvalGate(self.config)
        if (self.gate.gates or self.gate.keeps_best) and not self.eval_prompts:
            option = "accept_if_eval_drop_below" if self.gate.gates else "early_stop_patience"
            raise ValueError(
                f"loop.{option} judges iterations by their eval: give eval prompts, or leave it unset."
            )
        self.sampling = SampleMaker(self.reward, self.hooks, self.progress, trainer.accelerator)
        self.adaptive = AdaptiveSampling(self.config, self._sample_round, self.filters)
        self.training_set = None
        if self.config.train_from:
            self.training_set = TrainingSet(
                self.config.train_from, tokenizer_fingerprint(trainer.processing_class)
            )
            self.training_set.check_covers(self.config.iterations)
        self._initial_eval: Optional[tuple[Optional[float], list[Sample]]] = None  # reward, samples
        self._initial_eval_s = 0.0

    @property
    def components(self) -> list:
        """Every distinct component, in the order the loop uses them."""
        return [component for _, component in self._components_with_kinds()]

    def _components_with_kinds(self) -> list[tuple[str, Any]]:
        ordered = [
            ("generator", self.generator),
            ("generator", self.eval_generator),
            ("reward", self.reward),
            *(("filter", item) for item in self.filters),
            ("tokenizer", self.tokenizer),
            *(("logger", item) for item in self.loggers),
        ]
        return list({id(component): (kind, component) for kind, component in ordered}.values())

    # --- the run --------------------------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        """Run (or resume) the loop; return the metrics rows of all finished iterations."""
        from iterframe.plugins.manager import check_plugin_load_errors

        check_plugin_load_errors()
        if self.config.restart_from_base:
            self._base_state = {
                key: value.detach().clone() for key, value in self.trainer.model.state_dict().items()
            }
        first_iteration, checkpoint = claim_and_load(self)
        set_up, error = [], None
        try:
            for kind, component in self._components_with_kinds():
                with blame(kind, component, None):
                    component.setup(self.context)
                set_up.append(component)
            with blame("reward", self.reward, None):
                self.sampling.scorer.start()  # a pooled reward's workers start while the first generation runs
            if checkpoint is not None:
                restore_after_setup(self, checkpoint)
            self.hooks.call("on_run_start")
            if first_iteration == 0 and self.eval_prompts and self.config.initial_eval and self.config.eval_every:
                timer = time.perf_counter()
                self.progress.stage(f"evaluating the starting model on {len(self.eval_prompts)} prompts")
                evaluate = functools.partial(self.sampling.evaluate, self.eval_generator, self.eval_prompts, None)
                self._initial_eval = self.gate.evaluate_start(evaluate, self.trainer, self.config.output_dir)
                self._initial_eval_s = time.perf_counter() - timer
            for iteration in self.progress.iterations(first_iteration, self.config.iterations):
                if self.gate.stopped:
                    break
                self._run_iteration(iteration)
            if self.config.iterations > 0:
                save_final_model(self.trainer, self.config.output_dir)
            self._print_summary()
        except BaseException as caught:
            error = caught
            if self.is_main_process:  # the checkpoint of an iteration that failed after its training state
                remove_unfinished_checkpoints(self.config.output_dir)
            raise
        finally:
            try:
                self.hooks.run_end(metrics=self.metrics[-1] if self.metrics else None, error=error)
            finally:
                self.sampling.scorer.close()
                for component in reversed(set_up):
                    component.close()
        return list(self.metrics)

    # --- one iteration --------------------------------------------------------------------------------------

    def _run_iteration(self, iteration: int) -> dict[str, Any]:
        start = time.perf_counter()
        epoch = self.sampler.epoch + (self.sampler.position == self.sampler.num_prompts)
        if self.training_set is not None:  # a recorded set: no prompts to draw, nothing to generate
            recorded = self.training_set.samples(iteration)
            records, epoch = prompt_records(recorded), None
        else:
            records = self.sampler.draw(self.prompts, self.config.prompts_per_iteration)
        self.hooks.call("on_iteration_start", iteration=iteration, prompts=list(records))

        timer, times = time.perf_counter(), self.sampling.stage_times
        times.update(generate=0.0, score=0.0)
        if self.training_set is None:
            count = f"{'up to ' if self.config.until_accepted else ''}{self.config.samples_per_prompt}"
            self.progress.stage(
                f"iteration {iteration}: generating {count} samples for each of {len(records)} prompts"
            )
        if self.training_set is not None:
            samples, sampling_stats = recorded, {}
        elif self.config.until_accepted:
            samples, sampling_stats = self.adaptive.run(records, iteration)
        else:
            counts = [self.config.samples_per_prompt] * len(records)
            samples, sampling_stats = self._sample_round(records, counts, iteration), {}
        if self.training_set is None:  # a recorded set's failures are not this run's reward's
            check_failed_rate(self.reward, samples, self.config.max_failed_rate, iteration)
            if iteration == 0 and self.is_main_process:
                from iterframe.loop.report import top_rewarded_samples

                best = top_rewarded_samples(samples)
                if best:
                    log.info(best)
        sampling_s, timer = time.perf_counter() - timer, time.perf_counter()
        if self.training_set is not None:  # the set's recorded fates stand: no hooks, no filters
            kept_samples, dropped_counts = recorded_fates(samples)
        else:
            kept_samples, dropped_counts = filter_samples(samples, self.filters, self.hooks, iteration)
        filter_s = time.perf_counter() - timer + sampling_s - sum(times.values())
        snapshot = TrainingSnapshot(self.trainer, self.replay) if self.gate.gates else None
        timer = time.perf_counter()
        train_stats, step_metrics = self._train(self.replay.training_samples(kept_samples), iteration)
        self.replay.add(kept_samples)
        train_s, timer = time.perf_counter() - timer, time.perf_counter()

        row: dict[str, Any] = {"iteration": iteration, "global_step": self.trainer.state.global_step}
        row["prompt_epoch"] = epoch
        row["num_prompts"] = len(records)
        row.update(reward_metrics(samples))
        row.update(token_metrics(samples))
        row.update(sampling_stats)
        row["replay/size"] = len(self.replay)
        row.update({f"filter/{name}/dropped": count for name, count in dropped_counts.items()})
        row.update(train_stats)
        if iteration == 0 and self._initial_eval is not None:
            row["eval/initial_reward"] = self._initial_eval[0]
        eval_samples = self._evaluate(iteration, row)
        verdict = self.gate.judge(iteration, row)
        if verdict.rolled_back:
            snapshot.restore(self.trainer, self.replay)
            self._sync_generators(iteration)
            row.update({"global_step": self.trainer.state.global_step, "replay/size": len(self.replay)})
        eval_s, timer = time.perf_counter() - timer, time.perf_counter()
        if self._checkpoint_due(iteration, verdict):  # completed once the row is logged (_finish_iteration)
            self.progress.stage(f"iteration {iteration}: saving a checkpoint")
            write_training_state(self.trainer, self.config.output_dir, iteration)
        row.update(
            {
                "time/generate_s": times["generate"],
                "time/score_s": times["score"],
                "time/filter_s": filter_s,
                "time/train_s": train_s,
                "time/eval_s": eval_s,
                "time/save_s": time.perf_counter() - timer,
            }
        )
        if iteration == 0 and self._initial_eval is not None:
            row["time/initial_eval_s"] = self._initial_eval_s
        row["time/total_s"] = time.perf_counter() - start + row.get("time/initial_eval_s", 0.0)
        hook_metrics = HookMetrics(row, iteration)
        hook_metrics.add("after_step", step_metrics)
        hook_metrics.add(
            "on_iteration_end", self.hooks.metrics("on_iteration_end", iteration=iteration, metrics=dict(row))
        )
        self._finish_iteration(iteration, row, samples, eval_samples, verdict)
        return row

    def _sample_round(self, records: list[PromptRecord], counts: list[int], iteration: int) -> list[Sample]:
        return self.sampling.sample_round(self.generator, records, counts, iteration)

    def _train(self, train_samples: list[Sample], iteration: int) -> tuple[dict[str, Any], list]:
        """Tokenize and train ``config.train_epochs`` passes; sync the generator(s); return ``train/*`` metrics
        and the ``after_step`` hooks' answers."""
        if self._base_state is not None:
            reset_to_base(self.trainer, self._base_state)
        epochs = self.config.train_epochs
        trained = train_on(
            self.trainer, self.tokenizer, self.hooks, self.progress, train_samples, iteration, epochs
        )
        self._sync_generators(iteration)
        return trained

    def _sync_generators(self, iteration: int) -> None:
        for generator in {id(g): g for g in (self.generator, self.eval_generator)}.values():
            with blame("generator", generator, iteration):
                generator.update_weights(self.trainer.model)

    def _evaluate(self, iteration: int, row: dict[str, Any]) -> list[Sample]:
        """Score greedy completions of the eval prompts (when due); add ``eval/*`` to ``row``."""
        every = self.config.eval_every
        due = every > 0 and ((iteration + 1) % every == 0 or iteration == self.config.iterations - 1)
        if not self.eval_prompts or not due:
            return []
        return self._eval_pass(iteration, row)

    def _eval_pass(self, iteration: Optional[int], row: dict[str, Any]) -> list[Sample]:
        self.progress.stage(f"iteration {iteration}: evaluating on {len(self.eval_prompts)} prompts")
        samples, metrics = self.sampling.evaluate(self.eval_generator, self.eval_prompts, iteration)
        row.update(metrics)
        return samples

    def _finish_iteration(self, iteration: int, row, samples: list[Sample], eval_samples: list[Sample], verdict):
        """Write the samples, log the row, record it, checkpoint when due (loop state last), then keep a new best
        model in ``best/``."""
        if self.is_main_process:
            directory = iteration_dir(self.config.output_dir, iteration)
            write_samples(os.path.join(directory, SAMPLES_FILE), samples)
            if eval_samples:
                write_samples(os.path.join(directory, SAMPLES_FILE_EVAL), eval_samples)
            if iteration == 0 and self._initial_eval is not None:
                write_samples(os.path.join(directory, SAMPLES_FILE_INITIAL_EVAL), self._initial_eval[1])
            for logger in self.loggers:
                with blame("logger", logger, iteration):
                    logger.log_metrics(dict(row), iteration)
                    logger.log_samples(samples, iteration)
        self.metrics.append(row)
        if self.is_main_process:
            from iterframe.loop.report import eval_falls_while_reward_rises

            warning = eval_falls_while_reward_rises(self.metrics)
            if warning:
                log.warning(warning)
        if self._checkpoint_due(iteration, verdict):
            path = complete_loop_checkpoint(
                self.trainer,
                self.config.output_dir,
                iteration,
                loop_state(self, iteration),
                keep=self.config.keep_checkpoints,
            )
            self.hooks.call("on_checkpoint_saved", iteration=iteration, path=path)
        if (
            verdict.new_best and self.gate.keeps_best
        ):  # after the checkpoint, so a resume can always rewrite it (see EvalGate.resume)
            self.gate.save_best(self.trainer, self.config.output_dir, iteration)

    def _checkpoint_due(self, iteration: int, verdict) -> bool:
        """Every ``save_every`` iterations, after the last one, and with a new best model to keep."""
        last = iteration == self.config.iterations - 1 or verdict.stop
        new_best = verdict.new_best and self.gate.keeps_best
        return (iteration + 1) % self.config.save_every == 0 or last or new_best

    def _print_summary(self) -> None:
        if not self.is_main_process or not self.metrics:
            return
        from iterframe.loop.report import closing_summary

        notes = [self.gate.stop_note(os.path.join(self.config.output_dir, BEST_DIR))] if self.gate.stopped else []
        echo(closing_summary(self.metrics, self.config.output_dir, notes, table=not self.config.quiet))
