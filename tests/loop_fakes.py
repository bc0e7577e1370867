"""Small, deterministic components and a tiny trainer for the loop tests (no plugins needed)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Optional

from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.engine.batching import IGNORE_INDEX
from iterframe.loop import IterativeLoop, LoopConfig, PromptRecord
from iterframe.plugins.components import Completion, Filter, Generator, Logger, Reward, SampleTokenizer


class ScriptedGenerator(Generator):
    """Completion ``j`` of prompt ``p`` is ``script(p, j)`` (default ``"<p>-<j>"``); records every call."""

    name = "scripted"

    def __init__(self, script: Optional[Callable[[str, int], str]] = None):
        super().__init__()
        self.script = script or (lambda prompt, index: f"{prompt}-{index}")
        self.calls: list[tuple[list, int]] = []
        self.weight_updates = 0

    def generate(self, prompts, num_samples):
        self.calls.append((list(prompts), num_samples))
        return [
            [
                Completion(self.script(prompt, j), num_tokens=j + 1, finish_reason="stop")
                for j in range(num_samples)
            ]
            for prompt in prompts
        ]

    def update_weights(self, model) -> None:
        self.weight_updates += 1


class TableReward(Reward):
    """Reward from a dict ``completion -> score`` (``default`` for others)."""

    name = "table"

    def __init__(self, table: dict[str, float], default: float = 0.0):
        super().__init__()
        self.table = table
        self.default = default

    def score(self, samples):
        return [self.table.get(sample.completion, self.default) for sample in samples]


class MinReward(Filter):
    """Keeps samples whose reward is at least ``minimum``; records what it saw."""

    def __init__(self, minimum: float, name: str = "min-reward"):
        super().__init__()
        self.minimum = minimum
        self.name = name
        self.seen: list[list[str]] = []

    def select(self, samples):
        self.seen.append([sample.completion for sample in samples])
        return [sample.reward >= self.minimum for sample in samples]


class FirstPerPrompt(Filter):
    """Keeps the first surviving sample of each prompt."""

    name = "first-per-prompt"

    def select(self, samples):
        seen, mask = set(), []
        for sample in samples:
            mask.append(sample.prompt_id not in seen)
            seen.add(sample.prompt_id)
        return mask


class PromptCompletionTokenizer(SampleTokenizer):
    """Prompt + completion + eos with the run's tokenizer; the prompt is masked from the loss."""

    name = "prompt-completion"

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []
        self.snapshots: list[dict[str, Any]] = []
        self.snapshot_weights = False

    def setup(self, context):
        self.context = context

    def tokenize(self, samples):
        tokenizer = self.context.tokenizer
        if self.snapshot_weights:
            self.snapshots.append({k: v.detach().clone() for k, v in self.context.model.state_dict().items()})
        self.batches.append(len(samples))
        input_ids, labels = [], []
        for sample in samples:
            prompt_ids = tokenizer(sample.prompt, add_special_tokens=False)["input_ids"]
            completion_ids = tokenizer(sample.completion, add_special_tokens=False)["input_ids"]
            completion_ids = completion_ids + [tokenizer.eos_token_id]
            input_ids.append(prompt_ids + completion_ids)
            labels.append([IGNORE_INDEX] * len(prompt_ids) + completion_ids)
        return {"input_ids": input_ids, "attention_mask": [[1] * len(ids) for ids in input_ids], "labels": labels}


class RecordingLogger(Logger):
    """Keeps every metrics row and samples list it is given."""

    name = "recording"

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self.samples: list[list] = []
        self.closed = False

    def log_metrics(self, metrics, iteration):
        self.rows.append(dict(metrics))

    def log_samples(self, samples, iteration):
        self.samples.append([dataclasses.replace(sample) for sample in samples])

    def close(self):
        self.closed = True


def make_prompts(count: int, prefix: str = "p") -> list[PromptRecord]:
    return [
        PromptRecord(prompt_id=index, prompt=f"{prefix}{index}", reference=str(index)) for index in range(count)
    ]


def make_trainer(model_path: str, output_dir: str, **overrides) -> IterativeSFTTrainer:
    args = dict(
        output_dir=output_dir,
        learning_rate=1e-3,
        per_device_train_batch_size=8,
        report_to="none",
        save_strategy="no",
        logging_steps=1000,
        seed=0,
        use_cpu=True,
    )
    args.update(overrides)
    return IterativeSFTTrainer(model_path, args=IterativeSFTConfig(**args))


def make_loop(model_path: str, output_dir: str, *, trainer=None, prompts=None, **options) -> IterativeLoop:
    """A loop over ``make_prompts(4)`` with scripted components; ``options`` set LoopConfig fields and, by the
    names generator/reward/filters/tokenizer/loggers/eval_prompts, the components."""
    components = {
        "generator": options.pop("generator", None) or ScriptedGenerator(),
        "reward": options.pop("reward", None) or TableReward({}, default=1.0),
        "filters": options.pop("filters", None) or [],
        "tokenizer": options.pop("tokenizer", None) or PromptCompletionTokenizer(),
        "loggers": options.pop("loggers", None) or [],
        "eval_prompts": options.pop("eval_prompts", None),
    }
    settings = dict(iterations=2, prompts_per_iteration=2, samples_per_prompt=2, quiet=True)
    settings.update(options)
    trainer = trainer or make_trainer(model_path, str(output_dir) + "-trainer")
    return IterativeLoop(
        trainer,
        prompts if prompts is not None else make_prompts(4),
        config=LoopConfig(output_dir=str(output_dir), **settings),
        **components,
    )


def is_nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
