"""The generate and score stages of an iteration: prompt records become scored samples.

With several processes each generates and scores its share of the records, and every process then holds all the
samples, in record order, so the filters see exactly what a one-process run sees.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Optional, Union

from iterframe.loop.checks import check_completions, component_name
from iterframe.loop.config import PromptRecord
from iterframe.loop.distributed import gather_in_order, group, largest_share, shard
from iterframe.loop.metrics import eval_metrics
from iterframe.loop.progress import Progress
from iterframe.loop.stages import failure_reason, samples_from_completions, score_samples
from iterframe.plugins.components import Completion, Generator, Reward, Sample
from iterframe.plugins.errors import blame, describe_origin
from iterframe.plugins.reward_pool import scorer_for

__all__ = ["SampleMaker"]


class SampleMaker:
    """Generates samples of prompt records with a generator and scores them with the run's reward.

    Args:
        reward: the run's reward.
        hooks: the run's :class:`~iterframe.plugins.hooks.Hooks` (``on_samples_generated``).
        progress: the loop's progress bars.
        accelerator: the trainer's accelerator (process index and count).

    ``stage_times`` adds up the seconds spent generating and scoring since it was last reset. ``scorer`` scores
    with the reward (:func:`~iterframe.plugins.reward_pool.scorer_for`: a pooled reward's worker pool); the loop
    starts it after the components' setup and closes it at the end of the run.
    """

    def __init__(self, reward: Reward, hooks, progress: Progress, accelerator):
        self.reward = reward
        self.hooks = hooks
        self.progress = progress
        self.accelerator = accelerator
        self.stage_times = {"generate": 0.0, "score": 0.0}
        self.scorer = scorer_for(reward)

    def local(self, items: list) -> list:
        """This process's share of ``items`` (all of them with one process)."""
        return shard(items, self.accelerator.process_index, self.accelerator.num_processes)

    def sample_round(
        self, generator: Generator, records: list[PromptRecord], counts: list[int], iteration: int
    ) -> list[Sample]:
        """``counts[i]`` scored samples of ``records[i]``, record by record: each process generates and scores its
        share (one generator call per distinct count), then every process gets them all."""
        local_records, local_counts = self.local(records), self.local(counts)
        timer, per_record = time.perf_counter(), [[] for _ in local_records]
        for count in sorted(set(counts)):  # the same calls on every process, even one with no such record
            positions = [position for position, wanted in enumerate(local_counts) if wanted == count]
            with_count = [wanted == count for wanted in counts]
            filler = records[with_count.index(True)]
            generated = self.generate(
                generator,
                [local_records[p] for p in positions],
                count,
                iteration,
                pad_to=largest_share(with_count, self.accelerator.num_processes),
                filler=filler,
            )
            for position, record_samples in zip(positions, group(generated, count)):
                per_record[position] = record_samples
        local_samples = [sample for record_samples in per_record for sample in record_samples]
        self.hooks.call("on_samples_generated", iteration=iteration, samples=local_samples)
        self.stage_times["generate"] += time.perf_counter() - timer
        timer = time.perf_counter()
        self.progress.stage(f"iteration {iteration}: scoring {len(local_samples)} samples")
        samples, _ = self.scored_and_gathered(local_samples, local_counts, iteration)
        self.stage_times["score"] += time.perf_counter() - timer
        return samples

    def evaluate(
        self, generator: Generator, records: list[PromptRecord], iteration: Optional[int]
    ) -> tuple[list[Sample], dict[str, Any]]:
        """One (greedy) sample of each record, scored; return them and ``eval/*``
        (:func:`~iterframe.loop.metrics.eval_metrics`: the mean reward of those scored, failed ones apart)."""
        pad_to = largest_share([True] * len(records), self.accelerator.num_processes) if records else 0
        filler = records[-1] if records else None
        samples = self.generate(generator, self.local(records), 1, iteration, pad_to, filler)
        samples, _ = self.scored_and_gathered(samples, 1, iteration)
        return samples, eval_metrics(samples)

    def scored_and_gathered(
        self, local_samples: list[Sample], num_samples: Union[int, list[int]], iteration: Optional[int]
    ) -> tuple[list[Sample], int]:
        """Score this process's samples (``num_samples`` per record, or a count per record), then gather every
        process's in record order; return them and how many rewards failed."""
        score_samples(self.reward, local_samples, iteration, self.scorer)
        per_prompt = gather_in_order(group(local_samples, num_samples), self.accelerator.num_processes)
        samples = [sample for prompt_samples in per_prompt for sample in prompt_samples]
        return samples, sum(failure_reason(sample) is not None for sample in samples)

    def generate(
        self,
        generator: Generator,
        records: list[PromptRecord],
        num_samples: int,
        iteration: Optional[int],
        pad_to: int = 0,
        filler: Optional[PromptRecord] = None,
    ) -> list[Sample]:
        """``num_samples`` samples per record, in record order (prompts go in chunks, for the progress bar).

        With ``pad_to``, the generator also samples ``filler`` until it has ``pad_to`` prompts, and those samples
        are dropped: every process then makes the same generator calls, as processes sampling together from a
        sharded model must (:mod:`iterframe.generation.lockstep`)."""
        num_own = len(records)
        records = list(records) + [filler] * (pad_to - num_own)
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
        records, completions = records[:num_own], completions[:num_own]
        texts = [completion.text for record_completions in completions for completion in record_completions]
        if records and not any(texts):
            warnings.warn(
                f"Iteration {iteration}: generator {component_name(generator)!r} ({describe_origin(generator)}) "
                f"returned only empty completions for {len(records)} prompts; they are scored and filtered like "
                "any other, but check the generator's settings (max_new_tokens, stop strings).",
                stacklevel=3,
            )
        return samples_from_completions(records, completions, component_name(generator), iteration)
