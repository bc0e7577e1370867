"""Pooled rewards for the worker-pool tests: each completion says what its scoring does.

This module imports nothing heavy, so a worker process loads it quickly.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time

from iterframe.plugins.components import PooledReward


class ScriptedPooledReward(PooledReward):
    """The completion decides: ``"hang"`` sleeps for a minute, ``"boom"`` raises, ``"die"`` ends the worker
    process, ``"none"`` gives no score, ``"pid"`` scores the worker's process id; any other completion scores its
    length."""

    name = "scripted-pooled"

    def score(self, samples):
        scores = []
        for sample in samples:
            text = sample.completion
            if text == "hang":
                time.sleep(60)
            if text == "boom":
                raise RuntimeError(f"cannot score prompt {sample.prompt_id}")
            if text == "die":
                os._exit(3)
            scores.append(None if text == "none" else float(os.getpid()) if text == "pid" else float(len(text)))
        return scores


class AlarmReward(PooledReward):
    """Bounds its own work with ``signal.alarm`` (as math-verify does): ``"slow"`` is cut off by the alarm and
    reported as a ``TimeoutError``; any other completion scores 1.0 while the alarm is armed."""

    name = "alarm"

    @dataclasses.dataclass
    class Options(PooledReward.Options):
        alarm_s: int = 1

    def score(self, samples):
        def on_alarm(signum, frame):
            raise TimeoutError(f"gave up after {self.options.alarm_s} s (signal.alarm)")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(self.options.alarm_s)
        try:
            scores = []
            for sample in samples:
                while sample.completion == "slow":
                    time.sleep(0.05)
                scores.append(1.0)
            return scores
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


class UnpicklableReward(PooledReward):
    """Holds a lambda, which pickle cannot send to a worker process."""

    name = "unpicklable"

    def setup(self, context):
        self.transform = lambda value: value

    def score(self, samples):
        return [self.transform(1.0) for _ in samples]
