"""iterframe plugin: score completions with a sequence-classification reward model."""

import iterframe

from .reward import RewardModelReward

__all__ = ["RewardModelReward", "register_rewards"]
__version__ = "0.1.0"


@iterframe.hookimpl
def register_rewards(register):
    register(RewardModelReward)
