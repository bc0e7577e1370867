"""What the loop decides from its evals: the baseline (``eval/initial_reward``, the starting model's greedy eval),
rolling back an iteration whose eval reward drops too far (``loop.accept_if_eval_drop_below``), and early stopping
with the best model kept in ``best/`` (``loop.early_stop_patience``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Optional

from iterframe.loop.config import LoopConfig
from iterframe.loop.run_state import read_best, record_in_run_file, save_best_model
from iterframe.plugins.components import Sample

__all__ = ["INITIAL_ITERATION", "EvalGate", "Verdict"]

#: The iteration number of the starting model (its eval is ``eval/initial_reward``).
INITIAL_ITERATION = -1


def _finite(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclasses.dataclass
class Verdict:
    """What an iteration's eval decided: roll it back, keep its model as the new best, stop the run."""

    rolled_back: bool = False
    new_best: bool = False
    stop: bool = False


class EvalGate:
    """Follows the eval rewards of a run and judges each iteration by its eval.

    ``accepted_reward`` is the eval reward of the model the loop goes on from (the initial one, then each accepted
    iteration's); ``best_reward``/``best_iteration`` the best eval so far (iteration -1: the starting model).
    """

    def __init__(self, config: LoopConfig):
        self.drop_limit = config.accept_if_eval_drop_below
        self.patience = config.early_stop_patience
        self.accepted_reward: Optional[float] = None
        self.best_reward: Optional[float] = None
        self.best_iteration: Optional[int] = None
        self.stopped = False

    @property
    def gates(self) -> bool:
        """Whether iterations can be rolled back (the loop then snapshots training state before each)."""
        return self.drop_limit is not None

    @property
    def keeps_best(self) -> bool:
        """Whether early stopping is on (the loop then keeps the best model in ``best/``)."""
        return self.patience > 0

    def start(self, initial_reward: Optional[float]) -> bool:
        """Take the starting model's eval as the baseline; return whether it is the best so far (it is, when
        it has a value)."""
        return self._observe(INITIAL_ITERATION, _finite(initial_reward), rolled_back=False)

    def evaluate_start(
        self, evaluate: Callable[[], tuple[list[Sample], dict[str, Any]]], trainer, output_dir: str
    ) -> tuple[Optional[float], list[Sample]]:
        """The baseline: ``evaluate()`` the starting model, take its eval as the first accepted (and best) one,
        keep it in ``best/`` when early stopping is on, and record ``eval/initial_reward`` in ``run.json``.
        Return the reward (``None`` when every eval sample failed) and the eval samples (iteration -1)."""
        samples, metrics = evaluate()
        for sample in samples:
            sample.iteration = INITIAL_ITERATION
        reward = _finite(metrics["eval/reward"])
        if self.start(reward) and self.keeps_best:
            self.save_best(trainer, output_dir, INITIAL_ITERATION)
        if trainer.args.should_save:
            record_in_run_file(output_dir, {"eval/initial_reward": reward})
        return reward, samples

    def save_best(self, trainer, output_dir: str, iteration: int) -> None:
        """Keep the model as it is now in ``best/``, as the best of ``iteration``."""
        save_best_model(trainer, output_dir, iteration, self.best_reward)

    def resume(self, rows: list[dict[str, Any]], trainer, output_dir: str, checkpoint_iteration: int) -> None:
        """Judge a resumed run as the uninterrupted one would (:meth:`restore`), and rewrite ``best/`` when the run
        stopped after checkpointing a new best but before saving it there (the trainer holds that checkpoint)."""
        self.restore(rows)
        if self.keeps_best and self.best_iteration == checkpoint_iteration:
            best = read_best(output_dir)
            if best is None or best.get("iteration") != checkpoint_iteration:
                self.save_best(trainer, output_dir, checkpoint_iteration)

    def judge(self, iteration: int, row: dict[str, Any]) -> Verdict:
        """Judge an iteration by its ``eval/reward`` (in ``row``, which gets ``rolled_back``, ``eval/best_reward``
        and ``stopped_early`` as they apply)."""
        reward = _finite(row.get("eval/reward"))
        verdict = Verdict()
        if self.gates:
            verdict.rolled_back = bool(
                reward is not None
                and self.accepted_reward is not None
                and reward < self.accepted_reward - self.drop_limit
            )
            row["rolled_back"] = verdict.rolled_back
        verdict.new_best = self._observe(iteration, reward, verdict.rolled_back)
        if self.keeps_best:
            row["eval/best_reward"] = self.best_reward
            verdict.stop = self._patience_spent(iteration)
            row["stopped_early"] = verdict.stop
        self.stopped = verdict.stop
        return verdict

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """Follow the recorded rows of a resumed run again (their ``eval/initial_reward``, ``eval/reward`` and
        ``rolled_back``), so the resumed run judges as the uninterrupted one would."""
        if rows:
            self.start(rows[0].get("eval/initial_reward"))
        for row in rows:
            self._observe(row["iteration"], _finite(row.get("eval/reward")), bool(row.get("rolled_back")))
            self.stopped = self.keeps_best and self._patience_spent(row["iteration"])

    def _observe(self, iteration: int, reward: Optional[float], rolled_back: bool) -> bool:
        if reward is None or rolled_back:
            return False
        self.accepted_reward = reward
        if self.best_reward is not None and reward <= self.best_reward:
            return False
        self.best_reward, self.best_iteration = reward, iteration
        return True

    def _patience_spent(self, iteration: int) -> bool:
        last_best = INITIAL_ITERATION if self.best_iteration is None else self.best_iteration
        return iteration - last_best >= self.patience

    def stop_note(self, output_dir_best: str) -> str:
        """The closing line of a run that stopped early."""
        stopped = f"Stopped early: no new best eval/reward for {self.patience} iteration(s)."
        if self.best_reward is None:
            return f"{stopped} No eval gave a reward."
        best = (
            "the starting model"
            if self.best_iteration == INITIAL_ITERATION
            else f"iteration {self.best_iteration}"
        )
        return f"{stopped} Best: {self.best_reward:.3f} ({best}), kept in {output_dir_best}"
