"""iterframe: iterative fine-tuning of language models with pluggable generators, rewards and filters.

The public names below are imported on first use, so ``import iterframe`` (and the command line's ``--help``)
stays fast; torch and transformers load only when the engine or the loop is touched.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Modules that moved into the layers, old name -> new: the old name still imports (as the new module) for one
#: release, with a DeprecationWarning. See CHANGELOG.md.
MOVED_MODULES = {
    f"iterframe.{old}": f"iterframe.{new}"
    for old, new in {
        "adapters": "engine.adapters",
        "batching": "engine.batching",
        "config": "engine.config",
        "model_card": "engine.model_card",
        "model_support": "engine.model_support",
        "packing": "engine.packing",
        "peft_settings": "engine.peft_settings",
        "trainer": "engine.trainer",
        "builtin.decoding": "generation.decoding",
        "builtin.kv_buffers": "generation.kv_buffers",
        "builtin.prompt_cache": "generation.prompt_cache",
        "builtin.prompts": "generation.prompt_encoding",
        "artifacts": "loop.artifacts",
        "component_checks": "loop.checks",
        "loop_config": "loop.config",
        "prompts": "loop.datasets",
        "distributed": "loop.distributed",
        "iteration_metrics": "loop.metrics",
        "progress": "loop.progress",
        "prompt_sampler": "loop.prompt_sampler",
        "replay": "loop.replay",
        "report": "loop.report",
        "run_state": "loop.run_state",
        "components": "plugins.components",
        "component_errors": "plugins.errors",
        "lifecycle": "plugins.hooks",
        "hookspecs": "plugins.hookspecs",
        "options": "plugins.options",
    }.items()
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name of :data:`MOVED_MODULES` as the module now at its new name (the same object),
    warning that the old name is deprecated."""

    specs: dict[str, Any] = {}

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec):
        new_name = MOVED_MODULES[spec.name]
        warnings.warn(  # stacklevel 2: the import statement (warnings skips the import system's frames)
            f"{spec.name} is deprecated and goes in the next release: import {new_name} instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new_name)
        self.specs[new_name] = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.specs.pop(module.__name__)  # the import system gave it the old name's spec


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())

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
    "VerlReward": "iterframe.builtin.framework_rewards",
    "OpenRlhfReward": "iterframe.builtin.framework_rewards",
    "MathVerifyReward": "iterframe.builtin.math_verify_reward",
    "HttpReward": "iterframe.builtin.http_reward",
    "CodeTestsReward": "iterframe.builtin.code_reward",
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
    "CodeTestsReward",
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
    "OpenRlhfReward",
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
    "VerlReward",
    "WandbLogger",
    "hookimpl",
    "rescore",
    "run",
]

if TYPE_CHECKING:  # pragma: no cover
    from iterframe.api.rescore import rescore
    from iterframe.api.runner import RunResult, run
    from iterframe.builtin.code_reward import CodeTestsReward
    from iterframe.builtin.filters import (
        BestOfNFilter,
        DedupFilter,
        DropTruncatedFilter,
        DropUniformFilter,
        LengthFilter,
        ThresholdFilter,
        TopFractionFilter,
    )
    from iterframe.builtin.framework_rewards import OpenRlhfReward, VerlReward
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
