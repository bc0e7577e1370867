"""The worker pool that scores pooled rewards, each batch within a deadline, in sandboxed worker processes.

A :class:`~iterframe.plugins.components.PooledReward` is scored by a :class:`RewardPool`: the reward is pickled
(after its ``setup``) to ``workers`` fresh Python processes (no fork, and the main script is not run again). Each
worker is started by :mod:`iterframe.sandbox` in its own session, under the reward's limits (``cpu_limit_s``,
``memory_limit_mb``, ``open_files_limit``), and scores one batch at a time on its main thread, so a reward may use
``signal.alarm``. A batch is one sample, or for a reward with ``batching = "prompt"`` the samples of one prompt
(with ``workers=0``: every sample of the call, in one ``score`` call). The run's process hands out the batches and
kills the whole process group of a worker whose batch runs past ``timeout_s`` per sample (a fresh worker takes its
place), so nothing the reward started survives it. A batch that runs too long fails its samples; a batch whose
scoring raises or takes its worker down is split in halves and scored again until the failing sample fails alone.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Optional

from iterframe.plugins.components import PooledReward
from iterframe.plugins.outcomes import (
    FAILURE_REASONS,
    BatchScorer,
    ScoreOutcome,
    checked_scores,
    describe_error,
    failure_outcome,
    score_batch,
    score_outcomes,
)
from iterframe.sandbox import Limits, start, stop_group

__all__ = [
    "FAILURE_REASONS",
    "BatchScorer",
    "RewardPool",
    "ScoreOutcome",
    "batches_of",
    "checked_scores",
    "failure_outcome",
    "scorer_for",
    "score_outcomes",
    "worker_main",
]

#: Seconds a new worker may take to import the reward and report ready.
WORKER_START_TIMEOUT_S = 120.0
_WORKER_COMMAND = "from iterframe.plugins.reward_pool import worker_main; worker_main()"


def batches_of(reward, samples: list, in_process: bool) -> list[list[int]]:
    """The indices of ``samples`` scored by one ``score`` call each: one sample per call, or, for a reward with
    ``batching = "prompt"``, the samples of each prompt (all of them at once ``in_process``)."""
    if getattr(reward, "batching", "sample") != "prompt":
        return [[index] for index in range(len(samples))]
    if in_process:
        return [list(range(len(samples)))] if samples else []
    groups: dict = {}
    for index, sample in enumerate(samples):
        groups.setdefault(getattr(sample, "prompt_id", index), []).append(index)
    return list(groups.values())


def _limit_cpu(seconds: Optional[float]) -> None:
    """Let this process use ``seconds`` more CPU seconds (children it starts inherit the limit)."""
    if seconds is None:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(math.ceil(used + seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _work(connection, source: str) -> None:
    """A worker process: take the run's ``sys.path`` and the pickled reward, then score one batch per message
    until told to stop (or the run's end of the connection closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle; it ends the workers itself
    try:
        sys.path[:] = connection.recv()
        reward = pickle.loads(connection.recv_bytes())
    except BaseException as error:
        connection.send(("broken", describe_error(error)))
        return
    cpu_limit_s = getattr(reward.options, "cpu_limit_s", None)
    connection.send(("ready", None))
    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        task_id, samples = task
        _limit_cpu(None if cpu_limit_s is None else cpu_limit_s * len(samples))
        try:
            result = score_batch(reward, source, samples)
        except SystemExit as error:
            result = failure_outcome(error, raised=True)
        connection.send((task_id, result))


def worker_main() -> None:
    """Entry point of a worker process: ``python -c '...worker_main()' FD NAME`` (FD: its end of the socket)."""
    _work(Connection(int(sys.argv[1])), sys.argv[2])


@dataclasses.dataclass
class _Worker:
    process: subprocess.Popen
    connection: Connection
    started: float
    ready: bool = False
    task: Optional[list[int]] = None
    deadline: float = math.inf


def default_workers() -> int:
    """``min(4, CPUs this process may use)``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


class RewardPool:
    """Scores a pooled reward's samples in batches (see :func:`batches_of`), in worker processes, each batch
    within ``timeout_s`` per sample.

    Args:
        reward: a :class:`~iterframe.plugins.components.PooledReward`, already set up.
        name: how messages name the reward, e.g. ``"Reward 'math-verify'"``.

    With ``workers=0`` the samples are scored in this process, without the timeout.
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
        self.limits = Limits(
            cpu_s=None,  # per batch, set by the worker itself
            memory_mb=getattr(options, "memory_limit_mb", None),
            open_files=getattr(options, "open_files_limit", None),
            file_size_mb=None,
            processes=None,
        )
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
                f"{self.name} cannot be sent to its worker processes: pickling it failed "
                f"({describe_error(error)}). "
                "Keep what cannot be pickled out of its state (build it lazily in score), or set its option "
                "workers=0 to score in the run's process."
            ) from error
        self._workers = [self._spawn() for _ in range(self.num_workers)]

    def _spawn(self) -> _Worker:
        """Start a worker: a fresh interpreter (not a fork, and without re-running the main script) in its own
        session under the limits, connected by a socket pair; it gets ``sys.path`` and the reward as its first two
        messages."""
        parent_socket, child_socket = socket.socketpair()
        with parent_socket, child_socket:
            process = start(
                [sys.executable, "-c", _WORKER_COMMAND, str(child_socket.fileno()), self.name],
                self.limits,
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
            outcomes: list[Optional[ScoreOutcome]] = [None] * len(samples)
            for batch in batches_of(self.reward, samples, in_process=True):
                self._score_here(samples, batch, outcomes)
            return outcomes
        self.start()
        outcomes = [None] * len(samples)
        pending = deque(batches_of(self.reward, samples, in_process=False))
        while pending or any(worker.task is not None for worker in self._workers):
            for index, worker in enumerate(self._workers):
                if worker.ready and worker.task is None and pending:
                    batch = pending.popleft()
                    try:
                        worker.connection.send((0, [samples[i] for i in batch]))
                    except OSError:  # it died while idle: its batch goes to the next worker ready
                        pending.appendleft(batch)
                        self._replace(index, outcomes, pending, self._death_message(worker))
                        continue
                    worker.task = batch
                    worker.deadline = time.monotonic() + self.timeout_s * len(batch)
            self._wait_and_collect(outcomes, pending)
        return outcomes

    def _score_here(self, samples: list, batch: list[int], outcomes: list) -> None:
        """Score ``batch`` in this process; a call that fails is split in halves until it fails alone."""
        result = score_batch(self.reward, self.name, [samples[i] for i in batch])
        if isinstance(result, ScoreOutcome) and len(batch) > 1:
            half = len(batch) // 2
            self._score_here(samples, batch[:half], outcomes)
            self._score_here(samples, batch[half:], outcomes)
            return
        for i, outcome in zip(batch, [result] if isinstance(result, ScoreOutcome) else result):
            outcomes[i] = outcome

    @staticmethod
    def _settle(batch: list[int], failure: ScoreOutcome, outcomes: list, pending: deque) -> None:
        """A batch failed as a whole: one sample takes the failure; a larger batch is split to be scored again."""
        if len(batch) == 1:
            outcomes[batch[0]] = failure
        else:
            half = len(batch) // 2
            pending.extendleft([batch[half:], batch[:half]])

    def _wait_and_collect(self, outcomes: list, pending: deque) -> None:
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
                    self._replace(index, outcomes, pending, self._death_message(worker))
                elif message[0] == "ready":
                    worker.ready = True
                elif message[0] == "broken":
                    raise RuntimeError(
                        f"{self.name} could not be loaded in a worker process: {message[1]}. A worker imports the "
                        "reward's class (and the functions it holds) by name: define them in a module rather than "
                        "in the main script, or set the reward's option workers=0 to score in the run's process."
                    )
                else:
                    batch, result = worker.task, message[1]
                    worker.task, worker.deadline = None, math.inf
                    if isinstance(result, ScoreOutcome):
                        self._settle(batch, result, outcomes, pending)
                    else:
                        for i, outcome in zip(batch, result):
                            outcomes[i] = outcome
        now = time.monotonic()
        for index, worker in enumerate(self._workers):
            if worker.task is not None and now >= worker.deadline:
                self._replace(index, outcomes, pending, None)
            elif not worker.ready and now >= worker.started + WORKER_START_TIMEOUT_S:
                raise RuntimeError(
                    f"{self.name}: a worker process did not load the reward within {WORKER_START_TIMEOUT_S:.0f} s."
                )

    def _death_message(self, worker: _Worker) -> str:
        code = stop_group(worker.process, grace_s=5)
        if code == -signal.SIGXCPU:
            limit = getattr(self.reward.options, "cpu_limit_s", None)
            return f"the worker process scoring it ran past cpu_limit_s={limit:g} CPU seconds per sample (SIGXCPU)"
        if code is not None and code < 0:
            return f"the worker process scoring it was killed by signal {signal.Signals(-code).name}"
        return f"the worker process scoring it exited with code {code}"

    def _timeout(self, batch: list[int]) -> ScoreOutcome:
        if len(batch) == 1:
            message = f"scoring took longer than timeout_s={self.timeout_s:g} s"
            return ScoreOutcome(failure="timeout", message=message)
        return ScoreOutcome(
            failure="timeout",
            message=f"scoring its batch of {len(batch)} samples took longer than {len(batch)} x "
            f"timeout_s={self.timeout_s:g} s",
        )

    def _replace(self, index: int, outcomes: list, pending: deque, death: Optional[str]) -> None:
        """End worker ``index`` and its whole process group, and start a fresh one. Its batch fails: every sample
        on a timeout; on a ``death``, the batch is split to find the sample that caused it."""
        worker = self._workers[index]
        stop_group(worker.process)
        worker.connection.close()
        if worker.task is not None:
            if death is None:
                for i in worker.task:
                    outcomes[i] = self._timeout(worker.task)
            else:
                self._settle(worker.task, ScoreOutcome(failure="error", message=death), outcomes, pending)
        elif death is not None and not worker.ready:
            raise RuntimeError(f"{self.name} could not be loaded in a worker process: {death}.")
        self._workers[index] = self._spawn()

    @staticmethod
    def _stop(worker: _Worker, graceful: bool) -> None:
        if graceful and worker.process.returncode is None:
            try:
                worker.connection.send(None)
            except OSError:
                graceful = False
        stop_group(worker.process, grace_s=2 if graceful else 0)
        worker.connection.close()

    def close(self) -> None:
        """Stop every worker and whatever its reward left running (idempotent)."""
        workers, self._workers = self._workers, []
        for worker in workers:
            self._stop(worker, graceful=worker.task is None)


def scorer_for(reward) -> RewardPool | BatchScorer:
    """How the loop scores with ``reward``: a :class:`RewardPool` for a
    :class:`~iterframe.plugins.components.PooledReward`, else a :class:`BatchScorer`."""
    name = f"Reward {getattr(reward, 'name', '') or type(reward).__name__!r}"
    return RewardPool(reward, name) if isinstance(reward, PooledReward) else BatchScorer(reward, name)
