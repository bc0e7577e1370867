"""Scoring samples: what a reward's answer means per sample, and the worker pool that runs pooled rewards.

A reward returns one entry per sample: a number, ``None`` (no score) or an exception instance. Each entry becomes a
:class:`ScoreOutcome`: a finite score, or a failure with a reason (``timeout``, ``error`` or ``no-score``) and a
message.

A :class:`~iterframe.plugins.components.PooledReward` is scored by a :class:`RewardPool`: the reward is pickled
(after its ``setup``) to ``workers`` fresh Python processes (no fork, and the main script is not run again), and
each worker scores one sample at a time on its main thread, so a reward may use ``signal.alarm``. The run's
process hands out the samples and ends a worker whose sample runs past ``timeout_s`` (a fresh worker takes its
place). A sample whose scoring raises, runs too long or takes its worker down fails alone; the others are scored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any, Optional

from iterframe.plugins.components import PooledReward

__all__ = [
    "FAILURE_REASONS",
    "RewardPool",
    "ScoreOutcome",
    "checked_scores",
    "failure_outcome",
    "BatchScorer",
    "scorer_for",
    "score_outcomes",
    "worker_main",
]

#: Why a sample's scoring failed: it ran past ``timeout_s`` (or raised ``TimeoutError``), it raised, or the reward
#: gave no finite score (``None``, NaN, infinity).
FAILURE_REASONS = ("timeout", "error", "no-score")
#: Seconds a new worker may take to import the reward and report ready.
WORKER_START_TIMEOUT_S = 120.0
_MESSAGE_LIMIT = 500
_WORKER_COMMAND = "from iterframe.plugins.reward_pool import worker_main; worker_main()"


@dataclasses.dataclass
class ScoreOutcome:
    """What scoring one sample gave: a finite ``score``, or a ``failure`` reason and its ``message``."""

    score: Optional[float] = None
    failure: Optional[str] = None
    message: Optional[str] = None


def _describe(error: BaseException, located: bool = False) -> str:
    """``Type: message``; with ``located``, also where it was raised (``at file:line in function``)."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    text = text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."
    frames = traceback.extract_tb(error.__traceback__) if located and error.__traceback__ is not None else []
    return f"{text} (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else text


def failure_outcome(error: BaseException, raised: bool = False) -> ScoreOutcome:
    """The failed outcome of a sample whose scoring gave ``error`` (a ``TimeoutError`` is a timeout); one that was
    ``raised`` out of the reward is a bug, and its message says where."""
    reason = "timeout" if isinstance(error, TimeoutError) else "error"
    return ScoreOutcome(failure=reason, message=_describe(error, located=raised))


def checked_scores(source: str, scores: Any, expected: int) -> list:
    """``scores`` as a list of ``expected`` entries, each a float, ``None`` or an exception instance.

    Raises:
        TypeError: ``scores`` is no list-like, or an entry is neither a number, ``None`` nor an exception.
        ValueError: it has the wrong length.
    """
    if isinstance(scores, (str, bytes, dict)) or not hasattr(scores, "__len__"):
        raise TypeError(
            f"{source} returned a {type(scores).__name__}; it must return a list of {expected} numbers."
        )
    if len(scores) != expected:
        raise ValueError(f"{source} returned {len(scores)} scores for {expected} samples.")
    checked = []
    for index, score in enumerate(scores):
        if score is None or isinstance(score, BaseException):
            checked.append(score)
            continue
        try:
            if isinstance(score, (str, bytes)):
                raise TypeError
            checked.append(float(score))
        except (TypeError, ValueError):
            raise TypeError(
                f"{source} returned {score!r} for sample {index}; scores must be numbers (None for a sample that "
                "could not be scored)."
            ) from None
    return checked


def score_outcomes(source: str, scores: Any, expected: int) -> list[ScoreOutcome]:
    """One :class:`ScoreOutcome` per entry of a reward's answer (checked with :func:`checked_scores`)."""
    outcomes = []
    for score in checked_scores(source, scores, expected):
        if isinstance(score, BaseException):
            outcomes.append(failure_outcome(score))
        elif score is None or not math.isfinite(score):
            outcomes.append(ScoreOutcome(failure="no-score", message=f"{source} returned {score!r}"))
        else:
            outcomes.append(ScoreOutcome(score=score))
    return outcomes


def _score_one(reward, source: str, sample) -> ScoreOutcome:
    """Score one sample; whatever it raises (math-verify's timeouts derive from ``BaseException``) fails it."""
    try:
        (outcome,) = score_outcomes(source, reward.score([sample]), 1)
        return outcome
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:
        return failure_outcome(error, raised=True)


def _work(connection, source: str) -> None:
    """A worker process: take the run's ``sys.path`` and the pickled reward, then score one sample per message
    until told to stop (or the run's end of the connection closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle; it ends the workers itself
    try:
        sys.path[:] = connection.recv()
        reward = pickle.loads(connection.recv_bytes())
    except BaseException as error:
        connection.send(("broken", _describe(error)))
        return
    connection.send(("ready", None))
    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        index, sample = task
        try:
            outcome = _score_one(reward, source, sample)
        except SystemExit as error:
            outcome = failure_outcome(error, raised=True)
        connection.send((index, outcome))


def worker_main() -> None:
    """Entry point of a worker process: ``python -c '...worker_main()' FD NAME`` (FD: its end of the socket)."""
    _work(Connection(int(sys.argv[1])), sys.argv[2])


@dataclasses.dataclass
class _Worker:
    process: subprocess.Popen
    connection: Connection
    started: float
    ready: bool = False
    task: Optional[int] = None
    deadline: float = math.inf


def default_workers() -> int:
    """``min(4, CPUs this process may use)``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


class RewardPool:
    """Scores a pooled reward's samples one at a time, in worker processes, each within ``timeout_s``.

    Args:
        reward: a :class:`~iterframe.plugins.components.PooledReward`, already set up.
        name: how messages name the reward, e.g. ``"Reward 'math-verify'"``.

    With ``workers=0`` the samples are scored in this process, one at a time, without the timeout.
    """

    def __init__(self, reward, name: str):
        options = reward.options
        if not hasattr(options, "timeout_s") or not hasattr(options, "workers"):
            raise TypeError(
                f"{name} is a PooledReward, but its Options have no timeout_s and workers; declare them as a "
                "subclass of iterframe.PooledRewardOptions (class Options(PooledReward.Options): ...)."
            )
        self.reward = reward
        self.name = name
        self.timeout_s = float(options.timeout_s)
        self.num_workers = default_workers() if options.workers is None else int(options.workers)
        self._workers: list[_Worker] = []
        self._payload: Optional[bytes] = None

    def start(self) -> None:
        """Pickle the reward and start the workers (they report ready while the run goes on)."""
        if self.num_workers == 0 or self._workers:
            return
        try:
            self._payload = pickle.dumps(self.reward)
        except Exception as error:
            raise TypeError(
                f"{self.name} cannot be sent to its worker processes: pickling it failed ({_describe(error)}). "
                "Keep what cannot be pickled out of its state (build it lazily in score), or set its option "
                "workers=0 to score in the run's process."
            ) from error
        self._workers = [self._spawn() for _ in range(self.num_workers)]

    def _spawn(self) -> _Worker:
        """Start a worker: a fresh interpreter (not a fork, and without re-running the main script) connected by a
        socket pair; it gets ``sys.path`` and the reward as its first two messages."""
        parent_socket, child_socket = socket.socketpair()
        with parent_socket, child_socket:
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_COMMAND, str(child_socket.fileno()), self.name],
                pass_fds=(child_socket.fileno(),),
                stdin=subprocess.DEVNULL,
            )
            connection = Connection(os.dup(parent_socket.fileno()))
        connection.send(list(sys.path))
        connection.send_bytes(self._payload)
        return _Worker(process, connection, started=time.monotonic())

    def score(self, samples: list) -> list[ScoreOutcome]:
        """One outcome per sample, in order."""
        if self.num_workers == 0:
            return [_score_one(self.reward, self.name, sample) for sample in samples]
        self.start()
        outcomes: list[Optional[ScoreOutcome]] = [None] * len(samples)
        pending = deque(range(len(samples)))
        while pending or any(worker.task is not None for worker in self._workers):
            for worker in self._workers:
                if worker.ready and worker.task is None and pending:
                    worker.task = pending.popleft()
                    worker.deadline = time.monotonic() + self.timeout_s
                    worker.connection.send((worker.task, samples[worker.task]))
            self._wait_and_collect(outcomes)
        return outcomes

    def _wait_and_collect(self, outcomes: list) -> None:
        """Wait for the next answer, death or deadline, and handle what happened."""
        now = time.monotonic()
        deadlines = [worker.deadline for worker in self._workers if worker.task is not None]
        deadlines += [worker.started + WORKER_START_TIMEOUT_S for worker in self._workers if not worker.ready]
        connections = [worker.connection for worker in self._workers]
        ready = set(wait(connections, timeout=max(0.0, min(deadlines, default=now + 1.0) - now)))
        for index, worker in enumerate(self._workers):
            if worker.connection in ready:
                try:
                    message = worker.connection.recv()
                except (EOFError, OSError):  # the worker died: its end of the socket closed
                    message = None
                if message is None:
                    self._replace(index, outcomes, self._death_message(worker))
                elif message[0] == "ready":
                    worker.ready = True
                elif message[0] == "broken":
                    raise RuntimeError(
                        f"{self.name} could not be loaded in a worker process: {message[1]}. A worker imports the "
                        "reward's class (and the functions it holds) by name: define them in a module rather than "
                        "in the main script, or set the reward's option workers=0 to score in the run's process."
                    )
                else:
                    task, outcome = message
                    outcomes[task], worker.task, worker.deadline = outcome, None, math.inf
        now = time.monotonic()
        for index, worker in enumerate(self._workers):
            if worker.task is not None and now >= worker.deadline:
                self._replace(index, outcomes, None)
            elif not worker.ready and now >= worker.started + WORKER_START_TIMEOUT_S:
                raise RuntimeError(
                    f"{self.name}: a worker process did not load the reward within {WORKER_START_TIMEOUT_S:.0f} s."
                )

    def _death_message(self, worker: _Worker) -> str:
        try:
            code = worker.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            return f"the worker process scoring it was killed by signal {signal.Signals(-code).name}"
        return f"the worker process scoring it exited with code {code}"

    def _replace(self, index: int, outcomes: list, death: Optional[str]) -> None:
        """End worker ``index`` (its sample fails: a timeout, or ``death`` when it died) and start a fresh one."""
        worker = self._workers[index]
        if worker.task is not None:
            outcomes[worker.task] = (
                ScoreOutcome(failure="timeout", message=f"scoring took longer than timeout_s={self.timeout_s:g} s")
                if death is None
                else ScoreOutcome(failure="error", message=death)
            )
        elif death is not None and not worker.ready:
            raise RuntimeError(f"{self.name} could not be loaded in a worker process: {death}.")
        self._stop(worker, graceful=False)
        self._workers[index] = self._spawn()

    @staticmethod
    def _stop(worker: _Worker, graceful: bool) -> None:
        if graceful and worker.process.poll() is None:
            try:
                worker.connection.send(None)
                worker.process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
        worker.connection.close()

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        workers, self._workers = self._workers, []
        for worker in workers:
            self._stop(worker, graceful=worker.task is None)


class BatchScorer:
    """Scores a reward that is not pooled: one ``score`` call with all the samples, in this process."""

    def __init__(self, reward, name: str):
        self.reward = reward
        self.name = name

    def start(self) -> None:
        """Nothing to start."""

    def score(self, samples: list) -> list[ScoreOutcome]:
        """One outcome per sample, in order; a wrong answer shape raises (see :func:`checked_scores`)."""
        return score_outcomes(self.name, self.reward.score(samples), len(samples))

    def close(self) -> None:
        """Nothing to stop."""


def scorer_for(reward) -> RewardPool | BatchScorer:
    """How the loop scores with ``reward``: a :class:`RewardPool` for a
    :class:`~iterframe.plugins.components.PooledReward`, else a :class:`BatchScorer`."""
    name = f"Reward {getattr(reward, 'name', '') or type(reward).__name__!r}"
    return RewardPool(reward, name) if isinstance(reward, PooledReward) else BatchScorer(reward, name)
