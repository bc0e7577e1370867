"""The built-in demo: what ``iterframe run`` does with no arguments.

Expert iteration teaches a tiny model single-digit addition from a verifier's signal alone, offline on a CPU:
the model (built on first use from the shipped ``model_config.json``, see :mod:`iterframe.demo.model`) samples
answers to ``"a+b="`` prompts, ``answer-match`` scores them against the reference sum, ``threshold`` + ``dedup``
keep each distinct correct answer, and the model is fine-tuned on every verified answer found so far (a distinct
replay buffer). ``eval/reward`` is greedy accuracy on 20 held-out problems that are never trained on; it climbs
from chance to 0.8 and more (numbers in ``docs/loop.md``).
"""

from __future__ import annotations

import os
from typing import Any

from iterframe.demo.model import build_demo_model, demo_model_path

__all__ = ["DEMO_EVAL_PROMPTS", "DEMO_TRAIN_PROMPTS", "build_demo_model", "demo_model_path", "demo_run_spec"]

_HERE = os.path.dirname(__file__)
DEMO_TRAIN_PROMPTS = os.path.join(_HERE, "addition_train.jsonl")
DEMO_EVAL_PROMPTS = os.path.join(_HERE, "addition_eval.jsonl")
DEFAULT_OUTPUT_DIR = "iterframe-demo"

#: Metrics the console logger prints per iteration in the demo.
_CONSOLE_METRICS = ["reward/mean", "keep_rate", "num_kept", "train/loss", "eval/reward", "time/total_s"]


def demo_run_spec() -> dict[str, Any]:
    """The embedded default run, shaped like a run config file (see ``docs/config.md``).

    ``model`` is the cached demo model's folder; preparing the run builds it there on first use (a few seconds).
    """
    return {
        "model": demo_model_path(build=False),
        "dataset": {
            "path": DEMO_TRAIN_PROMPTS,
            "prompt_column": "prompt",
            "reference_column": "answer",
            "eval_dataset": DEMO_EVAL_PROMPTS,
        },
        "generator": {
            "name": "hf",
            "options": {"max_new_tokens": 3, "temperature": 1.0, "batch_size": 80, "seed": 0},
        },
        "reward": {"name": "answer-match", "options": {"pattern": r"^\d+$"}},
        "filters": [{"name": "threshold", "options": {"min_reward": 1.0}}, "dedup"],
        "tokenizer": "completion-only",
        "loggers": [{"name": "console", "options": {"metrics": list(_CONSOLE_METRICS)}}],
        "loop": {
            "iterations": 20,
            "prompts_per_iteration": 80,
            "samples_per_prompt": 64,  # enough tries that a problem the model gets wrong is still solved sometimes
            "train_epochs": 12,
            "replay_buffer_size": 80,  # one verified answer per training problem ...
            "replay_distinct": True,  # ... each held and trained on once, so every solved problem weighs the same
            "seed": 0,
        },
        "train": {
            "learning_rate": 5e-4,
            "weight_decay": 0.1,
            "per_device_train_batch_size": 32,
            "group_by_length": False,  # micro-batches drawn afresh each epoch, not the same 1- and 2-digit groups
            "save_strategy": "no",
            "logging_strategy": "no",
            "use_cpu": True,
        },
        "output_dir": DEFAULT_OUTPUT_DIR,
    }
