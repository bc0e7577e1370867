"""iterframe: iterative fine-tuning of language models with pluggable generators, rewards and filters."""

from .component_errors import ComponentError
from .components import (
    Completion,
    Filter,
    Generator,
    Logger,
    Reward,
    RunContext,
    Sample,
    SampleTokenizer,
)
from .config import IterativeSFTConfig
from .hookspecs import hookimpl
from .trainer import IterativeSFTTrainer

__version__ = "0.1.0"

__all__ = [
    "ComponentError",
    "Completion",
    "Filter",
    "Generator",
    "IterativeSFTConfig",
    "IterativeSFTTrainer",
    "Logger",
    "Reward",
    "RunContext",
    "Sample",
    "SampleTokenizer",
    "hookimpl",
]
