"""Pooled rewards for the worker-pool tests: each completion says what its scoring does.

This module imports nothing heavy, so a worker process loads it quickly.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

from iterframe.plugins.components import PooledReward


class ScriptedPooledReward(PooledReward):
    """The completion decides: ``"hang"`` sleeps for a minute, ``"boom"`` raises, ``"die"`` ends the worker
    process, ``"none"`` gives no score, ``"pid"`` scores the worker's process id, ``"sid"`` its session id,
    ``"spawn MARKER"`` starts a child process that sleeps with MARKER in its command line (and ``"spawn-and-hang
    MARKER"`` then hangs),
    ``"allocate"`` allocates 2 GiB, ``"open-files"`` opens 100 files, ``"spin"`` spins; any other completion
    scores its length."""

    name = "scripted-pooled"

    def score(self, samples):
        scores = []
        for sample in samples:
            text = sample.completion
            if text.startswith("spawn"):
                command = f"import time; time.sleep(60)  # {text.split()[1]}"
                subprocess.Popen([sys.executable, "-c", command])
                if text.startswith("spawn-and-hang "):
                    time.sleep(60)
                text = "spawned"
            if text == "allocate":
                bytearray(2 * 1024**3)
            if text == "open-files":
                [open(os.devnull) for _ in range(100)]
            while text == "spin":
                pass
            if text == "hang":
                time.sleep(60)
            if text == "boom":
                raise RuntimeError(f"cannot score prompt {sample.prompt_id}")
            if text == "die":
                os._exit(3)
            ids = {"pid": os.getpid, "sid": lambda: os.getsid(0)}
            scores.append(None if text == "none" else float(ids[text]()) if text in ids else float(len(text)))
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


class InfoReward(PooledReward):
    """Scores each completion's length and records it, and the process that scored it, in the sample's ``info``."""

    name = "info"

    def score(self, samples):
        for sample in samples:
            sample.info.update(length=len(sample.completion), scored_in=os.getpid())
        return [float(len(sample.completion)) for sample in samples]


class UnpicklableReward(PooledReward):
    """Holds a lambda, which pickle cannot send to a worker process."""

    name = "unpicklable"

    def setup(self, context):
        self.transform = lambda value: value

    def score(self, samples):
        return [self.transform(1.0) for _ in samples]


def processes_with(marker: str) -> list[int]:
    """Ids of the running processes (zombies aside) whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                command_line = file.read()
            with open(f"/proc/{entry}/stat", "rb") as file:
                state = file.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in command_line and state != b"Z":
            found.append(int(entry))
    return found


def survivors(marker: str, within_s: float = 5.0) -> list[int]:
    """:func:`processes_with` ``marker`` once they had ``within_s`` seconds to die (a killed process ends a moment
    after its signal)."""
    return _settled(marker, within_s, lambda found: not found)


def started(marker: str, within_s: float = 5.0) -> list[int]:
    """:func:`processes_with` ``marker`` once one had ``within_s`` seconds to start."""
    return _settled(marker, within_s, bool)


def _settled(marker: str, within_s: float, done) -> list[int]:
    deadline = time.monotonic() + within_s
    while not done(processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return processes_with(marker)
