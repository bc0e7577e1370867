"""iterframe plugin: a verifiers taskset's prompts, scored by its own reward functions without a model client."""

import iterframe

from .reward import VerifiersReward, reply_trace
from .source import taskset_rows
from .tasksets import load_taskset

__all__ = [
    "VerifiersReward",
    "load_taskset",
    "register_prompt_sources",
    "register_rewards",
    "reply_trace",
    "taskset_rows",
]
__version__ = "0.1.0"


@iterframe.hookimpl
def register_prompt_sources(register):
    register("verifiers", taskset_rows, "a verifiers taskset's tasks: verifiers:TASKSET_ID?select.limit=N")


@iterframe.hookimpl
def register_rewards(register):
    register(VerifiersReward)
