"""The iteration loop: prompts -> generate -> score -> filter -> train -> eval -> log, with its datasets, prompt
sampler, replay buffer, artifacts, run state, metrics and report."""

from iterframe.loop.config import LoopConfig, PromptRecord
from iterframe.loop.iterative_loop import IterativeLoop
from iterframe.loop.stages import FAILED_REWARD, FunctionReward

__all__ = ["FAILED_REWARD", "FunctionReward", "IterativeLoop", "LoopConfig", "PromptRecord"]
