"""iterframe plugin: reasoning-gym's procedurally generated tasks as prompts, scored by reasoning-gym itself."""

import iterframe

from .reward import ReasoningGymReward
from .source import load_reasoning_gym

__all__ = ["ReasoningGymReward", "load_reasoning_gym", "register_prompt_sources", "register_rewards"]
__version__ = "0.1.0"


@iterframe.hookimpl
def register_prompt_sources(register):
    register("reasoning-gym", load_reasoning_gym, "reasoning-gym tasks: reasoning-gym:TASK?size=N&seed=S")


@iterframe.hookimpl
def register_rewards(register):
    register(ReasoningGymReward)
