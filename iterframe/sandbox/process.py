"""A child process in its own session, under resource limits, ended as a whole process group.

:func:`start` starts a program through :mod:`iterframe.sandbox.launcher` in a new session (so its process group is
its own), with the :class:`Limits` applied by ``resource.setrlimit`` and, with ``isolate``, in a new user, network
and PID namespace. :func:`stop_group` ends the whole group, children included. :func:`run` runs a program to
completion in a temporary working directory (removed afterwards) with a clean environment, input from bytes and
output captured, and kills its group at the deadline.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Optional, Union

__all__ = [
    "Finished",
    "Limits",
    "clean_environment",
    "isolation_available",
    "run",
    "start",
    "stop_group",
]

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher.py")
_MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of a sandboxed program, each set by ``resource.setrlimit`` (``None``: the parent's).

    Args:
        cpu_s: CPU seconds of each process (``RLIMIT_CPU``; past it ``SIGXCPU``, one second later ``SIGKILL``).
        memory_mb: address space of each process, MiB (``RLIMIT_AS``; an allocation past it fails).
        open_files: open file descriptors of each process (``RLIMIT_NOFILE``).
        file_size_mb: largest file a process may write, MiB (``RLIMIT_FSIZE``; captured output counts too).
        processes: processes and threads the program may run at once (``RLIMIT_NPROC``). Linux counts them per
            user: inside the isolating namespaces that is the program's own; without them, the user's other
            processes count too, so the limit is set to this many on top of what the user runs at the start.

    Core dumps are always off. The defaults suit a short test program.
    """

    cpu_s: Optional[float] = 10.0
    memory_mb: Optional[int] = 1024
    open_files: Optional[int] = 64
    file_size_mb: Optional[int] = 16
    processes: Optional[int] = 32

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if value is not None and not (number and value > 0):
                raise ValueError(
                    f"sandbox limit {field.name} must be a number > 0 or None (no limit), got {value!r}."
                )

    def rlimits(self, isolated: bool) -> dict[str, list[int]]:
        """The limits as ``{"RLIMIT_NAME": [soft, hard]}`` for the launcher (``-1``: unlimited)."""
        limits = {"RLIMIT_CORE": [0, 0]}
        if self.cpu_s is not None:
            seconds = max(1, int(self.cpu_s + 0.999))
            limits["RLIMIT_CPU"] = [seconds, seconds + 1]
        if self.memory_mb is not None:
            limits["RLIMIT_AS"] = [int(self.memory_mb * _MIB)] * 2
        if self.open_files is not None:
            limits["RLIMIT_NOFILE"] = [int(self.open_files)] * 2
        if self.file_size_mb is not None:
            limits["RLIMIT_FSIZE"] = [int(self.file_size_mb * _MIB)] * 2
        if self.processes is not None:
            count = int(self.processes) + (1 if isolated else _tasks_of_this_user())  # + the namespace's process 1
            limits["RLIMIT_NPROC"] = [count] * 2
        return limits


def _tasks_of_this_user() -> int:
    """Processes and threads running under this process's real user id (what ``RLIMIT_NPROC`` counts)."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


@functools.cache
def isolation_available() -> bool:
    """Whether this machine lets an unprivileged process enter a user, network and PID namespace."""
    try:
        result = subprocess.run(
            [sys.executable, "-I", "-S", LAUNCHER, json.dumps({"isolate": True, "limits": {}}), "/bin/true"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def clean_environment(home: str) -> dict[str, str]:
    """An environment without anything inherited: ``PATH``, a UTF-8 locale, and ``HOME``/``TMPDIR`` at ``home``."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def start(argv: Sequence[str], limits: Limits, isolate: bool = False, **popen_arguments) -> subprocess.Popen:
    """Start ``argv`` (its first item a path) in a new session under ``limits``; with ``isolate``, in a new user,
    network and PID namespace. Other keyword arguments go to :class:`subprocess.Popen` (``cwd``, ``env``,
    ``pass_fds``, ``stdin``, ...). The process id is the group id :func:`stop_group` kills."""
    settings = json.dumps({"isolate": bool(isolate), "limits": limits.rlimits(isolated=bool(isolate))})
    command = [sys.executable, "-I", "-S", LAUNCHER, settings, *argv]
    return subprocess.Popen(command, start_new_session=True, **popen_arguments)


def _wait_unreaped(process: subprocess.Popen, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``process`` to exit without reaping it (its id stays its group's while it is
    unreaped, so killing the group cannot reach a stranger that reused the id). Whether it exited."""
    if process.returncode is not None:
        return True
    try:
        descriptor = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # no pidfd: look every 10 ms, without reaping
        deadline = time.monotonic() + timeout_s
        while os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True
    try:
        poller = select.poll()
        poller.register(descriptor, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout_s * 1000))))
    finally:
        os.close(descriptor)


def stop_group(process: subprocess.Popen, grace_s: float = 0.0) -> Optional[int]:
    """Give ``process`` up to ``grace_s`` seconds to exit, then kill its whole process group (children it left
    behind too) and reap it. Its exit status (negative: the signal that ended it). A process already reaped was
    stopped before: its id may belong to someone else now, so nothing is killed."""
    if process.returncode is not None:
        return process.returncode
    _wait_unreaped(process, grace_s)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    status = process.wait()
    _wait_group_ended(process.pid)
    return status


def _running_in_group(group: int) -> list[int]:
    """Ids of the processes of ``group`` that have not exited yet (zombies have: they hold no memory or files)."""
    running = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as file:
                state, _, process_group = file.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(process_group) == group and state not in ("Z", "X"):
            running.append(int(entry))
    return running


def _wait_group_ended(group: int, timeout_s: float = 10.0) -> None:
    """Wait up to ``timeout_s`` until every process of ``group``, killed, has exited: a killed process still
    runs (freeing its memory, in its directory) until the kernel schedules its exit, which on a loaded machine
    takes a while after the group's leader was reaped. Without ``/proc``, returns at once."""
    if not os.path.isdir("/proc"):
        return
    deadline = time.monotonic() + timeout_s
    while _running_in_group(group) and time.monotonic() < deadline:
        time.sleep(0.005)


@dataclasses.dataclass
class Finished:
    """How a program given to :func:`run` ended.

    Args:
        returncode: its exit status (negative: the signal that ended it); ``None`` when the deadline ended it.
        stdout: what it wrote to standard output (at most ``Limits.file_size_mb``).
        stderr: what it wrote to standard error (the same limit).
        report: what it wrote to the file descriptor named by ``$ITERFRAME_REPORT_FD``.
        isolated: whether it ran without network, in its own namespaces.
    """

    returncode: Optional[int]
    stdout: bytes
    stderr: bytes
    report: bytes
    isolated: bool

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def signal_name(self) -> Optional[str]:
        """The signal that ended it (``SIGXCPU`` past its CPU limit, ``SIGXFSZ`` past its file size), if any."""
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


def run(
    argv: Sequence[str],
    timeout_s: float,
    limits: Limits = Limits(),
    stdin: bytes = b"",
    files: Optional[Mapping[str, Union[str, bytes]]] = None,
    isolate: Optional[bool] = None,
) -> Finished:
    """Run ``argv`` to completion in a fresh temporary working directory holding ``files`` (name -> content),
    with a clean environment (:func:`clean_environment`), ``stdin`` as its input and its output captured. At
    ``timeout_s`` seconds (wall clock) its whole process group is killed; whatever of it is left when it exits is
    killed too, and the directory is removed. ``isolate`` (default: where :func:`isolation_available`) runs it
    without network, as process 1 of its own namespaces."""
    isolate = isolation_available() if isolate is None else isolate
    with tempfile.TemporaryDirectory(prefix="iterframe-sandbox-") as private:
        work = os.path.join(private, "work")
        os.mkdir(work, 0o700)
        for name, content in (files or {}).items():
            path = os.path.join(work, name)
            if os.path.dirname(os.path.normpath(path)) != work:
                raise ValueError(f"sandbox file name {name!r} must be a plain file name.")
            with open(path, "wb") as file:
                file.write(content.encode("utf-8") if isinstance(content, str) else content)
        paths = {name: os.path.join(private, name) for name in ("stdin", "stdout", "stderr", "report")}
        with open(paths["stdin"], "wb") as file:
            file.write(stdin)
        with (
            open(paths["stdin"], "rb") as given,
            open(paths["stdout"], "wb") as out,
            open(paths["stderr"], "wb") as err,
            open(paths["report"], "wb") as report,
        ):
            environment = clean_environment(work)
            environment["ITERFRAME_REPORT_FD"] = str(report.fileno())
            process = start(
                list(argv),
                limits,
                isolate=isolate,
                cwd=work,
                env=environment,
                stdin=given,
                stdout=out,
                stderr=err,
                pass_fds=(report.fileno(),),
            )
            exited = _wait_unreaped(process, timeout_s)
            code = stop_group(process)
        cap = None if limits.file_size_mb is None else int(limits.file_size_mb * _MIB)
        captured = {}
        for name in ("stdout", "stderr", "report"):
            with open(paths[name], "rb") as file:
                captured[name] = file.read(-1 if cap is None else cap)
    return Finished(returncode=code if exited else None, isolated=isolate, **captured)
