"""iterframe: iterative fine-tuning of language models with pluggable generators, rewards and filters.

The public names below are imported on first use, so ``import iterframe`` (and the command line's ``--help``)
stays fast; torch and transformers load only when the engine or the loop is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> module that defines it.
_PUBLIC = {
    "ComponentError": "iterframe.plugins.errors",
    "Completion": "iterframe.plugins.components",
    "Filter": "iterframe.plugins.components",
    "Generator": "iterframe.plugins.components",
    "Logger": "iterframe.plugins.components",
    "PooledReward": "iterframe.plugins.components",
    "PooledRewardOptions": "iterframe.plugins.components",
    "Reward": "iterframe.plugins.components",
    "RunContext": "iterframe.plugins.components",
    "Sample": "iterframe.plugins.components",
    "SampleTokenizer": "iterframe.plugins.components",
    "hookimpl": "iterframe.plugins.hookspecs",
    "IterativeSFTConfig": "iterframe.engine.config",
    "IterativeSFTTrainer": "iterframe.engine.trainer",
    "IterativeLoop": "iterframe.loop.iterative_loop",
    "LoopConfig": "iterframe.loop.config",
    "PromptRecord": "iterframe.loop.config",
    # the built-in components, to subclass or to register configured
    "HFGenerator": "iterframe.builtin.generators",
    "PythonReward": "iterframe.builtin.rewards",
    "AnswerMatchReward": "iterframe.builtin.rewards",
    "TrlReward": "iterframe.builtin.trl_reward",
    "MathVerifyReward": "iterframe.builtin.math_verify_reward",
    "HttpReward": "iterframe.builtin.http_reward",
    "ThresholdFilter": "iterframe.builtin.filters",
    "TopFractionFilter": "iterframe.builtin.filters",
    "BestOfNFilter": "iterframe.builtin.filters",
    "DedupFilter": "iterframe.builtin.filters",
    "LengthFilter": "iterframe.builtin.filters",
    "DropUniformFilter": "iterframe.builtin.filters",
    "DropTruncatedFilter": "iterframe.builtin.filters",
    "CompletionOnlyTokenizer": "iterframe.builtin.tokenizers",
    "FullTextTokenizer": "iterframe.builtin.tokenizers",
    "ChatTokenizer": "iterframe.builtin.tokenizers",
    "ConsoleLogger": "iterframe.builtin.loggers",
    "JsonlLogger": "iterframe.builtin.loggers",
    "WandbLogger": "iterframe.builtin.loggers",
    "TensorBoardLogger": "iterframe.builtin.loggers",
    "RunResult": "iterframe.api.runner",
    "run": "iterframe.api.runner",
    "rescore": "iterframe.api.rescore",
}

__all__ = [
    "AnswerMatchReward",
    "BestOfNFilter",
    "ChatTokenizer",
    "Completion",
    "CompletionOnlyTokenizer",
    "ComponentError",
    "ConsoleLogger",
    "DedupFilter",
    "DropTruncatedFilter",
    "DropUniformFilter",
    "Filter",
    "FullTextTokenizer",
    "Generator",
    "HFGenerator",
    "HttpReward",
    "IterativeLoop",
    "IterativeSFTConfig",
    "IterativeSFTTrainer",
    "JsonlLogger",
    "LengthFilter",
    "Logger",
    "LoopConfig",
    "MathVerifyReward",
    "PooledReward",
    "PooledRewardOptions",
    "PromptRecord",
    "PythonReward",
    "Reward",
    "RunContext",
    "RunResult",
    "Sample",
    "SampleTokenizer",
    "TensorBoardLogger",
    "ThresholdFilter",
    "TopFractionFilter",
    "TrlReward",
    "WandbLogger",
    "hookimpl",
    "rescore",
    "run",
]

if TYPE_CHECKING:  # pragma: no cover
    from iterframe.api.rescore import rescore
    from iterframe.api.runner import RunResult, run
    from iterframe.builtin.filters import (
        BestOfNFilter,
        DedupFilter,
        DropTruncatedFilter,
        DropUniformFilter,
        LengthFilter,
        ThresholdFilter,
        TopFractionFilter,
    )
    from iterframe.builtin.generators import HFGenerator
    from iterframe.builtin.http_reward import HttpReward
    from iterframe.builtin.loggers import ConsoleLogger, JsonlLogger, TensorBoardLogger, WandbLogger
    from iterframe.builtin.math_verify_reward import MathVerifyReward
    from iterframe.builtin.rewards import AnswerMatchReward, PythonReward
    from iterframe.builtin.tokenizers import ChatTokenizer, CompletionOnlyTokenizer, FullTextTokenizer
    from iterframe.builtin.trl_reward import TrlReward
    from iterframe.engine.config import IterativeSFTConfig
    from iterframe.engine.trainer import IterativeSFTTrainer
    from iterframe.loop.config import LoopConfig, PromptRecord
    from iterframe.loop.iterative_loop import IterativeLoop
    from iterframe.plugins.components import (
        Completion,
        Filter,
        Generator,
        Logger,
        PooledReward,
        PooledRewardOptions,
        Reward,
        RunContext,
        Sample,
        SampleTokenizer,
    )
    from iterframe.plugins.errors import ComponentError
    from iterframe.plugins.hookspecs import hookimpl


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'iterframe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
