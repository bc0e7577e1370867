"""iterframe plugin: score completions with a sequence-classification reward model."""

import iterframe

from .reward import RewardModelReward

__all__ = ["RewardModelReward", "register_commands", "register_rewards"]
__version__ = "0.1.0"


@iterframe.hookimpl
def register_rewards(register):
    register(RewardModelReward)


@iterframe.hookimpl
def register_commands(cli):
    """``iterframe reward-model serve``: the same command as ``iterframe-reward-model serve``."""
    from .serve import cli as reward_model_commands

    cli.add_command(reward_model_commands, name="reward-model")
