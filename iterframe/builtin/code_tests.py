"""Running a program against its tests in the sandbox: what the ``code-tests`` reward judges with.

Two forms of tests, as code datasets give them: assert statements (MBPP, HumanEval: a list of strings, or one
string of statements) run after the program in one process; and stdin -> expected stdout pairs (APPS,
CodeContests, LiveCodeBench: ``{"inputs": [...], "outputs": [...]}`` or ``[{"input": ..., "output": ...}]``), one
process per pair. Each run starts ``harness.py`` beside the program and its tests and reads its verdicts from the
report it writes: by default an :func:`iterframe.sandbox.run` (its own process group, killed at the deadline, under
limits, in a temporary directory, with a clean environment and, where the OS allows, no network), or any other
:data:`Runner` (a remote sandbox, :mod:`iterframe.builtin.sandbox_fusion`).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import sys
from collections.abc import Callable
from typing import Any, Optional

from iterframe.sandbox import Finished, Limits, run

__all__ = ["VERDICTS", "Judgement", "Runner", "extract_program", "judge", "local_runner", "parse_tests"]

#: Runs ``harness.py`` of ``files`` (name -> text) within ``timeout_s`` seconds with ``stdin`` as its input; how it
#: ended, with what it wrote to its report (the file descriptor named by ``$ITERFRAME_REPORT_FD``).
Runner = Callable[[dict[str, str], float, bytes], Finished]

#: A program's verdict: every test passed; a test's output or assertion was wrong; it ran past its deadline or CPU
#: limit; it raised, exited with an error or was killed (memory, output size); it does not parse.
VERDICTS = ("pass", "wrong-answer", "timeout", "crash", "syntax-error")
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)  # a block cut off by max_new_tokens counts
_DETAIL_LIMIT = 300

# The harness of assert tests: compile the program (a syntax error is reported as such), run it, then each test in
# its namespace, reporting one line per test on the report file descriptor.
_ASSERT_HARNESS = """\
import json, os, sys
report = os.fdopen(int(os.environ.pop("ITERFRAME_REPORT_FD")), "w", buffering=1)
def say(*words):
    report.write(" ".join(str(word) for word in words).replace("\\n", " ") + "\\n")
def described(error):
    return "%s: %s" % (type(error).__name__, error) if str(error) else type(error).__name__
source = open("solution.py", encoding="utf-8").read()
try:
    code = compile(source, "solution.py", "exec")
except (SyntaxError, ValueError) as error:
    say("syntax-error", type(error).__name__)
    sys.exit(0)
namespace = {"__name__": "solution"}
try:
    exec(code, namespace)
except BaseException as error:
    say("crash", "the program raised", described(error), "before the tests")
    sys.exit(0)
for index, test in enumerate(json.load(open("tests.json", encoding="utf-8"))):
    try:
        exec(compile(test, "test %d" % index, "exec"), namespace)
        say("pass", index)
    except AssertionError:
        say("wrong-answer", index)
    except BaseException as error:
        say("crash", index, described(error))
"""

# The harness of stdin -> stdout tests: a syntax error is reported as such, then the program runs as __main__.
_IO_HARNESS = """\
import os, sys
report = os.fdopen(int(os.environ.pop("ITERFRAME_REPORT_FD")), "w", buffering=1)
source = open("solution.py", encoding="utf-8").read()
try:
    code = compile(source, "solution.py", "exec")
except (SyntaxError, ValueError) as error:
    report.write("syntax-error " + type(error).__name__ + "\\n")
    sys.exit(0)
report.close()
sys.argv = ["solution.py"]
exec(code, {"__name__": "__main__"})
"""


@dataclasses.dataclass
class Judgement:
    """How a program did: ``passed`` of ``total`` tests, its ``verdict`` (one of :data:`VERDICTS`) and, when it
    did not pass, a ``detail`` saying where."""

    passed: int
    total: int
    verdict: str
    detail: Optional[str] = None


def extract_program(completion: str, last_code_block: bool = True) -> str:
    """The program in ``completion``: its last fenced code block (```` ```python ... ``` ````, or one left open at
    the end) when ``last_code_block`` and it has one, else the whole completion."""
    blocks = _FENCE.findall(completion) if last_code_block else []
    return blocks[-1] if blocks else completion


def parse_tests(value: Any) -> tuple[str, list]:
    """``("asserts", [statement, ...])`` or ``("io", [(stdin, expected stdout), ...])`` from a dataset cell (a
    JSON string of either form is read first).

    Raises:
        ValueError: the cell holds neither form, or no test.
    """
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if isinstance(value, dict) and "inputs" in value and "outputs" in value:
        pairs = list(zip(value["inputs"], value["outputs"]))
        if len(value["inputs"]) != len(value["outputs"]):
            raise ValueError(f"tests have {len(value['inputs'])} inputs but {len(value['outputs'])} outputs.")
        kind, tests = "io", [(_text(stdin), _text(stdout)) for stdin, stdout in pairs]
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        if not all("input" in item and "output" in item for item in value):
            raise ValueError("stdin/stdout tests must be objects with 'input' and 'output'.")
        kind, tests = "io", [(_text(item["input"]), _text(item["output"])) for item in value]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        kind, tests = "asserts", list(value)
    elif isinstance(value, str):
        kind, tests = "asserts", _statements(value)
    else:
        raise ValueError(
            "tests must be assert statements (a list of strings, or one string) or stdin/stdout pairs "
            "({'inputs': [...], 'outputs': [...]} or [{'input': ..., 'output': ...}]); got "
            f"{type(value).__name__}."
        )
    if not tests:
        raise ValueError("the sample's tests are empty.")
    return kind, tests


def _text(value: Any) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _statements(source: str) -> list[str]:
    """A string of test code as tests: its setup (every statement that is no assert) before each assert."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ValueError(f"the sample's tests do not parse as Python ({error}).") from None
    setup = [ast.get_source_segment(source, node) for node in tree.body if not isinstance(node, ast.Assert)]
    asserts = [ast.get_source_segment(source, node) for node in tree.body if isinstance(node, ast.Assert)]
    if not asserts:
        return ["\n".join(setup)]  # a check() that raises AssertionError itself: one test
    return ["\n".join([*setup, statement]) for statement in asserts]


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_LIMIT else "..." + text[-_DETAIL_LIMIT:]


def _ended(finished, limits: Limits) -> Optional[tuple[str, str]]:
    """``(verdict, detail)`` for a run that did not end on its own: past its deadline or CPU limit, killed."""
    if finished.timed_out or finished.signal_name == "SIGXCPU":
        return "timeout", "ran past its deadline" if finished.timed_out else f"used over {limits.cpu_s:g} CPU s"
    if finished.signal_name is not None:
        return "crash", f"killed by {finished.signal_name}"
    return None


def local_runner(limits: Limits, isolate: Optional[bool] = None) -> Runner:
    """A :data:`Runner` that runs the harness here, in :func:`iterframe.sandbox.run` under ``limits``."""

    def run_here(files: dict[str, str], timeout_s: float, stdin: bytes = b"") -> Finished:
        argv = [sys.executable, "-I", "harness.py"]
        return run(argv, timeout_s, limits, stdin=stdin, files=files, isolate=isolate)

    return run_here


def _judge_asserts(program: str, tests: list[str], timeout_s: float, limits: Limits, runner: Runner) -> Judgement:
    files = {"solution.py": program, "tests.json": json.dumps(tests), "harness.py": _ASSERT_HARNESS}
    finished = runner(files, timeout_s * len(tests), b"")
    lines = [line.split() for line in finished.report.decode("utf-8", "replace").splitlines() if line.strip()]
    if lines and lines[0][0] in ("syntax-error", "crash") and (len(lines[0]) < 2 or not lines[0][1].isdigit()):
        return Judgement(0, len(tests), lines[0][0], _clip(" ".join(lines[0][1:])))
    reports = {int(words[1]): words for words in lines if len(words) > 1 and words[1].isdigit()}
    verdicts = {index: words[0] for index, words in reports.items()}
    passed = sum(verdict == "pass" for verdict in verdicts.values())
    if passed == len(tests):
        return Judgement(passed, len(tests), "pass")
    first = min(index for index in range(len(tests)) if verdicts.get(index) != "pass")
    if first not in verdicts:  # the run ended before this test reported
        verdict, detail = _ended(finished, limits) or ("crash", f"exited with code {finished.returncode}")
        stderr = finished.stderr.decode("utf-8", "replace").strip()
        return Judgement(passed, len(tests), verdict, _clip(f"test {first}: {detail}. {stderr}".strip()))
    reason = " ".join(reports[first][2:]) or ("assertion failed" if verdicts[first] == "wrong-answer" else "")
    return Judgement(passed, len(tests), verdicts[first], _clip(f"test {first}: {reason}".strip()))


def _judge_io(program: str, tests: list, timeout_s: float, limits: Limits, runner: Runner, stop_early: bool):
    files = {"solution.py": program, "harness.py": _IO_HARNESS}
    passed, first = 0, None
    for index, (stdin, expected) in enumerate(tests):
        finished = runner(files, timeout_s, stdin.encode("utf-8"))
        report = finished.report.decode("utf-8", "replace").split()
        if report and report[0] == "syntax-error":
            return Judgement(0, len(tests), "syntax-error", _clip(" ".join(report[1:])))
        outcome = _ended(finished, limits)
        if outcome is None and finished.returncode != 0:
            stderr = finished.stderr.decode("utf-8", "replace").strip().splitlines()
            outcome = ("crash", stderr[-1] if stderr else f"exited with code {finished.returncode}")
        if outcome is None and finished.stdout.decode("utf-8", "replace").split() != expected.split():
            outcome = ("wrong-answer", f"expected {expected.strip()[:80]!r}, got {finished.stdout[:80]!r}")
        if outcome is None:
            passed += 1
        elif first is None:
            first = (outcome[0], _clip(f"test {index}: {outcome[1]}"))
            if stop_early:
                break
    if first is None:
        return Judgement(passed, len(tests), "pass")
    return Judgement(passed, len(tests), *first)


def judge(
    program: str,
    tests: tuple[str, list],
    timeout_s: float,
    limits: Limits,
    isolate: Optional[bool] = None,
    stop_early: bool = False,
    runner: Optional[Runner] = None,
) -> Judgement:
    """Run ``program`` against ``tests`` (from :func:`parse_tests`), each test within ``timeout_s``; with
    ``stop_early``, stdin/stdout tests stop at the first that fails. ``runner`` runs each harness (default: here,
    under ``limits``, isolated as ``isolate`` says).

    Raises:
        Exception: whatever ``runner`` raises (a remote sandbox that could not run the program).
    """
    kind, cases = tests
    runner = runner or local_runner(limits, isolate)
    if kind == "asserts":
        return _judge_asserts(program, cases, timeout_s, limits, runner)
    return _judge_io(program, cases, timeout_s, limits, runner, stop_early)
