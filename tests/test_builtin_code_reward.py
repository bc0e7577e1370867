"""The ``code-tests`` reward: a program runs against its tests in the sandbox; whatever it does (fork, loop,
allocate, write, read secrets, connect, raise, exit early) it is scored with its verdict, and nothing of it
outlives the call."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid

import pytest
from pool_rewards import survivors

from iterframe.loop.artifacts import read_samples, sample_from_row, write_samples
from iterframe.loop.funnel import funnel
from iterframe.loop.metrics import reward_metrics
from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext, Sample
from iterframe.sandbox import isolation_available

ASSERTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]
STDIO = {"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}
CORRECT_FUNCTION = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\n"
CORRECT_PROGRAM = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


@pytest.fixture
def sandbox_root(tmp_path, monkeypatch):
    """Sandbox directories go under a folder of this test's, so the test can look for processes still in it."""
    root = tmp_path / "sandboxes"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return str(root)


def processes_working_in(root: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.readlink(f"/proc/{entry}/cwd").startswith(root):
                found.append(int(entry))
        except OSError:
            continue
    return found


def judge(completion: str, tests, **options) -> Sample:
    reward = create_component("reward", "code-tests", {"timeout_s": 1.0, **options})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    sample = Sample(0, 0, "Write add(a, b).", completion, info={"extra": {"tests": tests}})
    (score,) = reward.score([sample])
    sample.reward = score
    return sample


@pytest.mark.parametrize(("completion", "tests"), [(CORRECT_FUNCTION, ASSERTS), (CORRECT_PROGRAM, STDIO)])
def test_a_correct_program_passes_both_forms_of_tests(sandbox_root, completion, tests):
    sample = judge(completion, tests)
    assert sample.reward == 1.0
    assert (sample.info["verdict"], sample.info["tests_passed"], sample.info["tests_total"]) == (
        "pass",
        len(tests) if isinstance(tests, list) else 2,
        len(tests) if isinstance(tests, list) else 2,
    )


def _spawn_and_hang(marker: str) -> str:
    child = f"import os, time; os.setsid(); time.sleep(60)  # {marker}"
    return f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child!r}])\ntime.sleep(60)\n"


ADVERSARIES = {
    "loops": ("def add(a, b):\n    while True:\n        pass", "timeout", "test 0: ran past its deadline"),
    "allocates": ("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", "crash", "MemoryError"),
    "writes a huge file": (
        "with open('big', 'wb') as out:\n    while True:\n        out.write(bytes(10**6))",
        "crash",
        "File too large",
    ),
    "raises": ("def add(a, b):\n    raise RuntimeError('no')", "crash", "test 0: RuntimeError"),
    "exits before the tests": ("import sys\nsys.exit(0)", "crash", "the program raised SystemExit"),
    "ends the process before the tests": ("import os\nos._exit(0)", "crash", "test 0: exited with code 0"),
    "is wrong": ("def add(a, b):\n    return a - b", "wrong-answer", "test 0: assertion failed"),
    "does not parse": ("def add(a, b) return a + b", "syntax-error", "SyntaxError"),
}


@pytest.mark.parametrize("behaviour", list(ADVERSARIES))
def test_a_program_that_misbehaves_fails_with_its_verdict_and_leaves_nothing_running(sandbox_root, behaviour):
    program, verdict, detail = ADVERSARIES[behaviour]
    # Only the loop meets its deadline; the others get one a slow Python start on a loaded machine cannot reach.
    sample = judge(program, ASSERTS, timeout_s=1.0 if verdict == "timeout" else 10.0)
    assert sample.reward == 0.0 and sample.info["verdict"] == verdict
    assert detail in sample.info["verdict_detail"]
    assert processes_working_in(sandbox_root) == [] and os.listdir(sandbox_root) == []


@pytest.mark.skipif(not isolation_available(), reason="no user+network namespace here: a setsid child can escape")
def test_a_program_that_forks_a_detached_child_leaves_nothing_running(sandbox_root):
    marker = f"iterframe-test-{uuid.uuid4().hex}"
    sample = judge(_spawn_and_hang(marker), ASSERTS)
    assert sample.info["verdict"] == "timeout" and sample.reward == 0.0
    assert survivors(marker) == [] and processes_working_in(sandbox_root) == []


def test_a_program_cannot_read_the_runs_secrets(sandbox_root, monkeypatch):
    monkeypatch.setenv("ITERFRAME_TEST_SECRET", "hunter2")
    program = "import os\nprint(os.environ.get('ITERFRAME_TEST_SECRET'))"
    sample = judge(program, [{"input": "", "output": "hunter2"}])
    assert sample.info["verdict"] == "wrong-answer" and "got b'None\\n'" in sample.info["verdict_detail"]


@pytest.mark.skipif(not isolation_available(), reason="this OS does not let an unprivileged process drop network")
def test_a_program_cannot_open_a_connection(sandbox_root):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')"
        sample = judge(program, [{"input": "", "output": "connected"}])
    assert sample.info["verdict"] == "crash" and "Network is unreachable" in sample.info["verdict_detail"]
    allowed = judge(program.replace(str(port), str(port)), [{"input": "", "output": "x"}], network=True)
    assert "Network is unreachable" not in (allowed.info["verdict_detail"] or "")


def test_scoring_is_the_fraction_passed_or_all_or_nothing(sandbox_root):
    half_right = "def add(a, b):\n    return 4 if a == 2 else a - b"
    assert judge(half_right, ASSERTS).reward == pytest.approx(1 / 3)
    assert judge(half_right, ASSERTS, scoring="all").reward == 0.0
    one_of_two = "a, b = map(int, input().split())\nprint(3)"
    assert judge(one_of_two, STDIO).reward == 0.5


def test_tests_in_one_string_or_as_json_text_are_read(sandbox_root):
    code = "def check(f):\n    assert f(1, 2) == 3\n\nassert add(2, 2) == 4\nassert add(0, 0) == 0"
    assert judge(CORRECT_FUNCTION, code).info["tests_total"] == 2
    assert judge(CORRECT_PROGRAM, '{"inputs": ["1 1"], "outputs": ["2"]}').reward == 1.0


def test_a_sample_without_tests_fails_naming_the_column():
    reward = create_component("reward", "code-tests", {"tests_column": "test_list"})
    (error,) = reward.score([Sample(0, 3, "p", "pass", info={"extra": {"tests": ["assert True"]}})])
    assert isinstance(error, ValueError) and "has no tests column 'test_list' (its columns: tests)" in str(error)


def test_verdicts_reach_the_metrics_the_funnel_and_the_saved_samples(sandbox_root, tmp_path):
    samples = [judge(CORRECT_FUNCTION, ASSERTS), judge("def add(a, b) return", ASSERTS)]
    row = reward_metrics(samples)
    assert row["reward/verdict/pass"] == 1 and row["reward/verdict/syntax-error"] == 1
    stages = dict(funnel({"iteration": 0, **row}))
    assert stages["verdict pass"] == 1 and stages["verdict syntax-error"] == 1
    path = tmp_path / "samples.parquet"
    write_samples(path, samples)
    saved = [sample_from_row(row) for row in read_samples(path)]
    assert [sample.info["verdict"] for sample in saved] == ["pass", "syntax-error"]
    assert saved[1].info["tests_passed"] == 0 and saved[1].info["tests_total"] == 3


def test_options_are_checked():
    with pytest.raises(ValueError, match="scoring must be 'fraction' or 'all'"):
        create_component("reward", "code-tests", {"scoring": "most"})
    with pytest.raises(ValueError, match="sandbox limit memory_mb must be a number > 0"):
        create_component("reward", "code-tests", {"memory_limit_mb": 0})
