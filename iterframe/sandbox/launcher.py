"""The first program of a sandboxed child: it applies the limits and namespaces, then becomes the program.

Run by :mod:`iterframe.sandbox.process` as ``python -I -S launcher.py SETTINGS_JSON PROGRAM [ARGS...]``, so it
imports the standard library only. ``SETTINGS_JSON`` holds ``limits`` (``{"RLIMIT_NAME": [soft, hard]}``, ``-1``
for unlimited) and ``isolate``. With ``isolate`` it enters a new user, network and PID namespace (no network) and
forks its process 1, which runs the program and reaps what it leaves; when the program ends, process 1 exits and
everything else in the namespace dies with it. The launcher exits as the program did.
"""

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
#: Exit code of a launcher that could not enter its namespaces, or could not set a limit.
SETUP_FAILED = 125


def _fail(message: str) -> None:
    sys.stderr.write(f"iterframe sandbox: {message}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        error = ctypes.get_errno()
        _fail(f"cannot enter a user and network namespace ({os.strerror(error)})")


def _apply_limits(limits: dict) -> None:
    for name, (soft, hard) in limits.items():
        which = getattr(resource, name)
        _, current_hard = resource.getrlimit(which)
        soft = resource.RLIM_INFINITY if soft < 0 else soft
        hard = resource.RLIM_INFINITY if hard < 0 else hard
        if current_hard != resource.RLIM_INFINITY:  # an unprivileged process cannot raise its hard limit
            soft = current_hard if soft == resource.RLIM_INFINITY else min(soft, current_hard)
            hard = current_hard if hard == resource.RLIM_INFINITY else min(hard, current_hard)
        try:
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError) as error:
            _fail(f"cannot set {name} to {soft}/{hard} ({error})")


def _exit_as(status: int) -> None:
    """Exit as a child with wait ``status`` did (ended by the same signal, or with the same code)."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status))


def _run_in_namespace(argv: list) -> None:
    """Fork process 1 of the new PID namespace, which forks the program and reaps every process left to it
    until the program ends; then exit as the program did (process 1's exit kills what is left)."""
    status_reader, status_writer = os.pipe()  # process 1 cannot end itself by a signal: it sends the status
    init = os.fork()
    if init:
        os.close(status_writer)
        status = os.read(status_reader, 32)
        init_status = os.waitpid(init, 0)[1]
        _exit_as(int(status) if status else init_status)
    os.close(status_reader)
    program = os.fork()
    if program == 0:
        try:
            os.execv(argv[0], argv)
        except OSError as error:
            sys.stderr.write(f"iterframe sandbox: cannot run {argv[0]!r} ({error})\n")
            os._exit(127)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(127)
        if pid == program:
            os.write(status_writer, str(status).encode())
            os._exit(0)


def main() -> None:
    settings = json.loads(sys.argv[1])
    argv = sys.argv[2:]
    if settings["isolate"]:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID)
    _apply_limits(settings["limits"])  # after unshare: the process count is then the namespace's own
    if settings["isolate"]:
        _run_in_namespace(argv)
    try:
        os.execv(argv[0], argv)
    except OSError as error:
        _fail(f"cannot run {argv[0]!r} ({error})")


if __name__ == "__main__":
    main()
