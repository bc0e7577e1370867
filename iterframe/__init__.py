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
}

__all__ = [
    "Completion",
    "ComponentError",
    "Filter",
    "Generator",
    "IterativeLoop",
    "IterativeSFTConfig",
    "IterativeSFTTrainer",
    "Logger",
    "LoopConfig",
    "PromptRecord",
    "Reward",
    "RunContext",
    "Sample",
    "SampleTokenizer",
    "hookimpl",
]

if TYPE_CHECKING:  # pragma: no cover
    from iterframe.engine.config import IterativeSFTConfig
    from iterframe.engine.trainer import IterativeSFTTrainer
    from iterframe.loop.config import LoopConfig, PromptRecord
    from iterframe.loop.iterative_loop import IterativeLoop
    from iterframe.plugins.components import (
        Completion,
        Filter,
        Generator,
        Logger,
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
