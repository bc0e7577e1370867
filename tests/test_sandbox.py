"""The process sandbox: a program runs in its own session under resource limits, in a temporary directory with a
clean environment, and nothing it started outlives its deadline or its end."""

from __future__ import annotations

import os
import sys
import uuid

import pytest
from pool_rewards import processes_with, survivors

from iterframe.sandbox import Limits, isolation_available, run

PYTHON = sys.executable
needs_isolation = pytest.mark.skipif(
    not isolation_available(), reason="this OS does not let an unprivileged process enter a user+network namespace"
)


def python(code: str, **arguments):
    return run([PYTHON, "-c", code], **{"timeout_s": 2.0, **arguments})


def _lingering_child(marker: str, detach: bool) -> str:
    """A program that starts a child sleeping with ``marker`` in its command line (``detach``: in a session of its
    own), then spins."""
    child = f"import time; time.sleep(60)  # {marker}"
    return (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}], start_new_session={detach})\n"
        "while True: pass\n"
    )


@pytest.mark.parametrize("isolate", [False, pytest.param(True, marks=needs_isolation)])
def test_a_program_past_its_deadline_is_killed_with_the_processes_it_started(isolate):
    marker = f"iterframe-test-{uuid.uuid4().hex}"
    finished = python(_lingering_child(marker, detach=False), isolate=isolate, timeout_s=1.5)
    assert finished.timed_out and finished.returncode is None
    assert survivors(marker) == []


@pytest.mark.parametrize("isolate", [False, pytest.param(True, marks=needs_isolation)])
def test_run_returns_only_once_every_process_of_the_killed_group_has_exited(isolate):
    marker = f"iterframe-test-{uuid.uuid4().hex}"
    child = (
        f"import time; memory = bytearray(100 * 2**20); memory[::4096] = bytes(25600); time.sleep(60)  # {marker}"
    )
    code = (
        f"import subprocess, sys, time\nfor _ in range(3): subprocess.Popen([sys.executable, '-c', {child!r}])\n"
    )
    finished = python(code + "time.sleep(60)", isolate=isolate, timeout_s=3.0)
    assert finished.timed_out
    assert processes_with(marker) == []  # at once: a killed process that still frees its memory is still running


@needs_isolation
def test_an_isolated_program_cannot_leave_a_detached_process_behind():
    marker = f"iterframe-test-{uuid.uuid4().hex}"
    finished = python(_lingering_child(marker, detach=True), isolate=True, timeout_s=1.5)
    assert finished.timed_out
    assert survivors(marker) == []


def test_what_a_program_leaves_running_when_it_exits_is_killed():
    marker = f"iterframe-test-{uuid.uuid4().hex}"
    child = f"import time; time.sleep(60)  # {marker}"
    code = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {child!r}])"
    finished = python(code, isolate=False)
    assert finished.returncode == 0 and not finished.timed_out
    assert survivors(marker) == []


def test_the_program_gets_a_clean_environment_and_a_temporary_directory_removed_afterwards(monkeypatch):
    monkeypatch.setenv("ITERFRAME_TEST_SECRET", "hunter2")
    code = "import os; print(os.getcwd(), os.environ.get('ITERFRAME_TEST_SECRET'), open('given').read(), sep='|')"
    finished = python(code, files={"given": "a file"})
    directory, secret, given = finished.stdout.decode().strip().split("|")
    assert secret == "None" and given == "a file"
    assert "iterframe-sandbox-" in directory and not os.path.exists(directory)


def test_input_and_output_and_the_exit_status_are_the_programs():
    finished = python("import sys; data = sys.stdin.read(); print(data.upper()); sys.exit(3)", stdin=b"abc")
    assert (finished.returncode, finished.stdout, finished.timed_out) == (3, b"ABC\n", False)


@pytest.mark.parametrize(
    ("code", "limits", "error"),
    [
        ("bytearray(2 * 1024**3)", Limits(memory_mb=256), b"MemoryError"),
        ("[open('/dev/null') for _ in range(100)]", Limits(open_files=16), b"Too many open files"),
        ("open('big', 'wb').write(bytes(4 * 1024 * 1024))", Limits(file_size_mb=1), b"File too large"),
    ],
)
def test_a_program_past_a_limit_fails(code, limits, error):
    finished = python(code, limits=limits)
    assert finished.returncode == 1 and error in finished.stderr


def test_a_program_past_its_cpu_limit_is_ended_by_sigxcpu():
    finished = python("while True: pass", limits=Limits(cpu_s=1), timeout_s=30)
    assert finished.signal_name == "SIGXCPU"


def test_output_past_the_file_size_limit_is_cut():
    finished = python("import sys\nwhile True: sys.stdout.write('x' * 65536)", limits=Limits(file_size_mb=1))
    assert not finished.timed_out and finished.returncode != 0 and len(finished.stdout) <= 1024 * 1024


@pytest.mark.skipif(os.geteuid() == 0, reason="Linux applies no process limit (RLIMIT_NPROC) to root")
def test_a_program_cannot_start_more_processes_than_its_limit():
    code = "import os\nfor _ in range(50):\n    if os.fork() == 0:\n        import time; time.sleep(5)"
    finished = python(code, limits=Limits(processes=8))
    assert b"BlockingIOError" in finished.stderr


@needs_isolation
def test_an_isolated_program_has_no_network():
    code = "import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)"
    finished = python(code, isolate=True)
    assert finished.isolated and b"Network is unreachable" in finished.stderr


def test_limits_are_checked():
    with pytest.raises(ValueError, match="sandbox limit memory_mb must be a number > 0 or None"):
        Limits(memory_mb=0)


def test_a_file_name_that_leaves_the_working_directory_is_refused():
    with pytest.raises(ValueError, match="must be a plain file name"):
        python("pass", files={"../escape": "x"})
