"""The iteration engine: prompts -> generate -> score -> filter -> tokenize -> ``trainer.step()`` -> eval -> log.

``IterativeLoop(trainer, prompts, generator, reward, filters, tokenizer, config=LoopConfig(...)).run()`` runs
expert iteration / ReST-EM / RAFT / rejection-sampling fine-tuning with component *instances*, so a notebook
can pass its own objects (a plain function ``f(prompts, completions, references) -> list[float]`` is accepted as
the reward). The sample stages live in :mod:`iterframe.loop.stages`, the artifacts in
:mod:`iterframe.loop.artifacts` and :mod:`iterframe.loop.run_state`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

from iterframe.loop.artifacts import SAMPLES_FILE, iteration_dir, write_samples
from iterframe.loop.checks import (
    check_batch,
    check_completions,
    check_prompt_lengths,
    check_prompt_records,
    component_name,
    require_component,
)
from iterframe.loop.config import LoopConfig, PromptRecord
from iterframe.loop.distributed import gather_in_order, group, shard
from iterframe.loop.metrics import reward_metrics, training_metrics
from iterframe.loop.progress import Progress
from iterframe.loop.prompt_sampler import PromptSampler
from iterframe.loop.replay import ReplayBuffer
from iterframe.loop.run_state import (
    FINAL_DIR,
    claim_output_dir,
    latest_checkpoint,
    read_loop_state,
    save_final_model,
    save_loop_checkpoint,
    truncate_run,
)
from iterframe.loop.stages import (
    FAILED_REWARD,
    FunctionReward,
    filter_samples,
    samples_from_completions,
    score_samples,
)
from iterframe.plugins.components import (
    COMPONENT_KINDS,
    Completion,
    Filter,
    Generator,
    Logger,
    Reward,
    RunContext,
    Sample,
    SampleTokenizer,
)
from iterframe.plugins.errors import blame, describe_origin
from iterframe.plugins.hooks import HookMetrics, Hooks

__all__ = ["FAILED_REWARD", "FunctionReward", "IterativeLoop", "LoopConfig", "PromptRecord"]

SAMPLES_FILE_EVAL = "eval_samples.parquet"
LOOP_STATE_VERSION = 1


class IterativeLoop:
    """Runs the generate -> score -> filter -> train loop for ``config.iterations`` iterations.

    Args:
        trainer: the :class:`~iterframe.IterativeSFTTrainer` to train (its model generates).
        prompts: the prompt set, as :class:`PromptRecord` objects.
        generator: turns prompts into completions (:class:`~iterframe.Generator`).
        reward: scores samples (:class:`~iterframe.Reward`, or a function
            ``f(prompts, completions, references) -> list[float]``); NaN/inf marks a failed sample.
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
        self.replay = ReplayBuffer(self.config.replay_buffer_size)
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
        first_iteration = self._claim_output_dir()
        set_up, error = [], None
        try:
            for kind, component in self._components_with_kinds():
                with blame(kind, component, None):
                    component.setup(self.context)
                set_up.append(component)
            self.hooks.call("on_run_start")
            for iteration in self.progress.iterations(first_iteration, self.config.iterations):
                self._run_iteration(iteration)
            if self.config.iterations > 0:
                save_final_model(self.trainer, self.config.output_dir)
            self._print_summary()
        except BaseException as caught:
            error = caught
            raise
        finally:
            try:
                self.hooks.run_end(metrics=self.metrics[-1] if self.metrics else None, error=error)
            finally:
                for component in reversed(set_up):
                    component.close()
        return list(self.metrics)

    def _claim_output_dir(self) -> int:
        """Claim the output directory (error / resume / overwrite); return the first iteration to run."""
        if self.is_main_process:
            claim_output_dir(self.config.output_dir, self.config.existing_output, dataclasses.asdict(self.config))
        self.trainer.accelerator.wait_for_everyone()
        if self.config.existing_output != "resume":
            return 0
        checkpoint = latest_checkpoint(self.config.output_dir)
        if checkpoint is None:  # the run stopped before its first checkpoint: start it over
            if self.is_main_process:
                truncate_run(self.config.output_dir, -1)
            return 0
        state = read_loop_state(checkpoint)
        self.trainer.load_checkpoint(checkpoint)
        self.sampler.load_state_dict(state["prompt_sampler"])
        self.replay.load_state_dict(state["replay_buffer"])
        self.metrics = list(state["metrics"])
        if self.is_main_process:
            truncate_run(self.config.output_dir, state["iteration"])
        return state["iteration"] + 1

    def _loop_state(self, iteration: int) -> dict[str, Any]:
        return {
            "version": LOOP_STATE_VERSION,
            "iteration": iteration,
            "global_step": self.trainer.state.global_step,
            "prompt_sampler": self.sampler.state_dict(),
            "replay_buffer": self.replay.state_dict(),
            "metrics": self.metrics,
            "config": dataclasses.asdict(self.config),
        }

    # --- one iteration --------------------------------------------------------------------------------------

    def _run_iteration(self, iteration: int) -> dict[str, Any]:
        start = time.perf_counter()
        epoch = self.sampler.epoch + (self.sampler.position == self.sampler.num_prompts)
        records = self.sampler.draw(self.prompts, self.config.prompts_per_iteration)
        self.hooks.call("on_iteration_start", iteration=iteration, prompts=list(records))

        timer = time.perf_counter()
        samples = self._generate(self.generator, self._local(records), self.config.samples_per_prompt, iteration)
        self.hooks.call("on_samples_generated", iteration=iteration, samples=samples)
        generate_s, timer = time.perf_counter() - timer, time.perf_counter()
        samples, num_failed = self._scored_and_gathered(samples, self.config.samples_per_prompt, iteration)
        score_s, timer = time.perf_counter() - timer, time.perf_counter()
        kept_samples, dropped_counts = filter_samples(samples, self.filters, self.hooks, iteration)
        filter_s, timer = time.perf_counter() - timer, time.perf_counter()
        train_stats, step_metrics = self._train(kept_samples + self.replay.samples, iteration)
        self.replay.add(kept_samples)
        train_s, timer = time.perf_counter() - timer, time.perf_counter()

        row: dict[str, Any] = {"iteration": iteration, "global_step": self.trainer.state.global_step}
        row["prompt_epoch"] = epoch
        row["num_prompts"] = len(records)
        row.update(reward_metrics(samples, num_failed))
        row["replay/size"] = len(self.replay)
        row.update({f"filter/{name}/dropped": count for name, count in dropped_counts.items()})
        row.update(train_stats)
        eval_samples = self._evaluate(iteration, row)
        eval_s = time.perf_counter() - timer
        row.update(
            {
                "time/generate_s": generate_s,
                "time/score_s": score_s,
                "time/filter_s": filter_s,
                "time/train_s": train_s,
                "time/eval_s": eval_s,
                "time/total_s": time.perf_counter() - start,
            }
        )
        hook_metrics = HookMetrics(row, iteration)
        hook_metrics.add("after_step", step_metrics)
        hook_metrics.add(
            "on_iteration_end", self.hooks.metrics("on_iteration_end", iteration=iteration, metrics=dict(row))
        )
        self._finish_iteration(iteration, row, samples, eval_samples)
        return row

    # --- several processes: each works on its share, every one sees the whole iteration -------------------------

    @property
    def _num_processes(self) -> int:
        return self.trainer.accelerator.num_processes

    def _local(self, items: list) -> list:
        """This process's share of ``items`` (all of them with one process)."""
        return shard(items, self.trainer.accelerator.process_index, self._num_processes)

    def _scored_and_gathered(self, local_samples: list[Sample], num_samples: int, iteration: int):
        """Score this process's samples, then gather every process's in prompt order; return them and how many
        rewards failed."""
        score_samples(self.reward, local_samples, iteration)
        per_prompt = gather_in_order(group(local_samples, num_samples), self._num_processes)
        samples = [sample for prompt_samples in per_prompt for sample in prompt_samples]
        return samples, sum(sample.dropped_by == FAILED_REWARD for sample in samples)

    def _generate(self, generator: Generator, records: list[PromptRecord], num_samples: int, iteration: int):
        """``num_samples`` samples per record, in record order (prompts go in chunks, for the progress bar)."""
        chunk = generator.prompts_per_call or max(len(records), 1)
        completions: list[list[Completion]] = []
        with self.progress.bar(len(records), "generate") as bar:
            for start in range(0, len(records), chunk):
                batch = records[start : start + chunk]
                with blame("generator", generator, iteration):
                    generated = generator.generate([record.prompt for record in batch], num_samples)
                    check_completions(generator, generated, len(batch), num_samples)
                completions.extend(generated)
                bar.update(len(batch))
        texts = [completion.text for record_completions in completions for completion in record_completions]
        if records and not any(texts):
            warnings.warn(
                f"Iteration {iteration}: generator {component_name(generator)!r} ({describe_origin(generator)}) "
                f"returned only empty completions for {len(records)} prompts; they are scored and filtered like "
                "any other, but check the generator's settings (max_new_tokens, stop strings).",
                stacklevel=2,
            )
        return samples_from_completions(records, completions, component_name(generator), iteration)

    def _train(self, train_samples: list[Sample], iteration: int) -> tuple[dict[str, Any], list]:
        """Tokenize and train ``config.train_epochs`` passes; sync the generator(s); return ``train/*`` metrics
        and the ``after_step`` hooks' answers."""
        if self._base_state is not None:
            self._reset_to_base()
        stats_per_epoch, step_metrics = [], []
        # every process trains on its share; with fewer samples than processes, none trains (all agree)
        if train_samples and len(train_samples) >= self._num_processes:
            local_samples = self._local(train_samples)
            with blame("tokenizer", self.tokenizer, iteration):
                batch = self.tokenizer.tokenize(local_samples)
                check_batch(self.tokenizer, batch, len(local_samples))
            self.hooks.call("before_step", iteration=iteration, batch=batch)
            with self.progress.bar(self.config.train_epochs, "train") as bar:
                for _ in range(self.config.train_epochs):
                    stats = self.trainer.step(
                        input_ids=batch["input_ids"],
                        attention_mask=batch.get("attention_mask"),
                        labels=batch.get("labels"),
                    )
                    stats_per_epoch.append(stats)
                    step_metrics.extend(self.hooks.metrics("after_step", iteration=iteration, stats=stats))
                    bar.update(1)
        for generator in {id(g): g for g in (self.generator, self.eval_generator)}.values():
            with blame("generator", generator, iteration):
                generator.update_weights(self.trainer.model)
        return training_metrics(stats_per_epoch, len(train_samples)), step_metrics

    def _reset_to_base(self) -> None:
        """ReST-EM: load the base weights and start a fresh optimizer and learning-rate schedule."""
        self.trainer.model.load_state_dict(self._base_state)
        self.trainer.optimizer.state.clear()
        self.trainer.lr_scheduler = None
        self.trainer.create_scheduler(num_training_steps=max(self.trainer.args.max_steps, 0))

    def _evaluate(self, iteration: int, row: dict[str, Any]) -> list[Sample]:
        """Score greedy completions of the eval prompts (when due); add ``eval/*`` to ``row``."""
        every = self.config.eval_every
        due = every > 0 and ((iteration + 1) % every == 0 or iteration == self.config.iterations - 1)
        if not self.eval_prompts or not due:
            return []
        samples = self._generate(self.eval_generator, self._local(self.eval_prompts), 1, iteration)
        samples, num_failed = self._scored_and_gathered(samples, 1, iteration)
        rewards = [0.0 if math.isnan(sample.reward) else sample.reward for sample in samples]
        row["eval/reward"] = sum(rewards) / len(rewards)
        row["eval/num_prompts"] = len(samples)
        row["eval/num_failed"] = num_failed
        return samples

    def _finish_iteration(self, iteration: int, row, samples: list[Sample], eval_samples: list[Sample]) -> None:
        """Write the samples, log the row, record it, and checkpoint when due (loop state last)."""
        if self.is_main_process:
            directory = iteration_dir(self.config.output_dir, iteration)
            write_samples(os.path.join(directory, SAMPLES_FILE), samples)
            if eval_samples:
                write_samples(os.path.join(directory, SAMPLES_FILE_EVAL), eval_samples)
            for logger in self.loggers:
                with blame("logger", logger, iteration):
                    logger.log_metrics(dict(row), iteration)
                    logger.log_samples(samples, iteration)
        self.metrics.append(row)
        last = iteration == self.config.iterations - 1
        if (iteration + 1) % self.config.save_every == 0 or last:
            path = save_loop_checkpoint(
                self.trainer,
                self.config.output_dir,
                iteration,
                self._loop_state(iteration),
                keep=self.config.keep_checkpoints,
            )
            self.hooks.call("on_checkpoint_saved", iteration=iteration, path=path)

    def _print_summary(self) -> None:
        if self.config.quiet or not self.is_main_process or not self.metrics:
            return
        from iterframe.loop.report import summary_table, trend_line

        lines = ["", summary_table(self.metrics)]
        trend = trend_line(self.metrics)
        if trend:
            lines.append(trend)
        lines.append(
            f"Artifacts: {self.config.output_dir} (final model: {os.path.join(self.config.output_dir, FINAL_DIR)})"
        )
        print("\n".join(lines), flush=True)
