"""The ``code-tests`` reward with ``sandbox: sandbox-fusion``, against a local server that follows SandboxFusion's
``/run_code`` protocol: it checks every request's fields and runs the code it gets, as SandboxFusion does (its
files in a fresh directory, the code as a script there, stdin in, stdout and stderr out, killed at run_timeout,
the fetched files sent back in base64)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from iterframe.builtin.sandbox_fusion import REPORT_FILE
from iterframe.cli import cli
from iterframe.plugins import ComponentOptionError, create_component
from iterframe.plugins.components import RunContext, Sample
from iterframe.plugins.reward_pool import score_outcomes

ASSERTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
STDIO = {"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}
CORRECT_FUNCTION = "```python\ndef add(a, b):\n    return a + b\n```"
CORRECT_PROGRAM = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"

# The fields of a /run_code request and the types SandboxFusion accepts for each (code and language required).
REQUEST_FIELDS = {
    "code": str,
    "language": str,
    "stdin": (str, type(None)),
    "run_timeout": (int, float),
    "compile_timeout": (int, float),
    "memory_limit_MB": int,
    "files": dict,
    "fetch_files": list,
    "args": list,
}


def protocol_problem(request) -> str | None:
    """What in ``request`` SandboxFusion's /run_code would refuse (it answers 422), or None."""
    if not isinstance(request, dict):
        return "the body is not an object"
    unknown = set(request) - set(REQUEST_FIELDS)
    missing = {"code", "language"} - set(request)
    wrong = [
        name for name, kinds in REQUEST_FIELDS.items() if name in request and not isinstance(request[name], kinds)
    ]
    if unknown or missing or wrong:
        return f"unknown {sorted(unknown)}, missing {sorted(missing)}, wrong types {wrong}"
    try:
        for content in request.get("files", {}).values():
            base64.b64decode(content, validate=True)
    except (TypeError, ValueError):
        return "files must map names to base64 text"
    return None


def run_code(request) -> dict:
    """Run a /run_code request as SandboxFusion's python runner does: the answer it gives."""
    with tempfile.TemporaryDirectory() as work:
        for name, content in request.get("files", {}).items():
            with open(os.path.join(work, name), "wb") as file:
                file.write(base64.b64decode(content))
        script = os.path.join(work, "tmp_code.py")
        with open(script, "w", encoding="utf-8") as file:
            file.write(request["code"])
        started = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, script],
                cwd=work,
                input=(request.get("stdin") or "").encode(),
                capture_output=True,
                timeout=request.get("run_timeout", 10),
                env={"PATH": os.environ.get("PATH", "")},
            )
            result = {
                "status": "Finished",
                "return_code": done.returncode,
                "stdout": done.stdout,
                "stderr": done.stderr,
            }
        except subprocess.TimeoutExpired as expired:
            result = {"status": "TimeLimitExceeded", "return_code": None, "stdout": expired.stdout, "stderr": b""}
        result["execution_time"] = time.monotonic() - started
        for stream in ("stdout", "stderr"):
            result[stream] = (result[stream] or b"").decode("utf-8", "replace")
        fetched = {}
        for name in request.get("fetch_files", []):
            if os.path.isfile(os.path.join(work, name)):
                with open(os.path.join(work, name), "rb") as file:
                    fetched[name] = base64.b64encode(file.read()).decode()
    passed = result["status"] == "Finished" and result["return_code"] == 0
    return {
        "status": "Success" if passed else "Failed",
        "message": "",
        "compile_result": None,
        "run_result": result,
        "executor_pod_name": None,
        "files": fetched,
    }


class RunCodeServer(ThreadingHTTPServer):
    """A SandboxFusion stand-in on 127.0.0.1: records each request (and its headers); ``answer(request)`` may give
    the answer itself (a dict, or ``(status, headers, body)``), else the code is run."""

    daemon_threads = True

    def __init__(self, answer=lambda request: None):
        super().__init__(("127.0.0.1", 0), _RunCodeHandler)
        self.answer, self.requests, self.headers_seen, self.problems = answer, [], [], []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/run_code"


class _RunCodeHandler(BaseHTTPRequestHandler):
    timeout = 10  # a client that stops sending cannot hold a handler

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != "/run_code" or not 0 < length <= 4_000_000:
            return self._send(404 if self.path != "/run_code" else 413, {}, {"detail": "not /run_code"})
        request = json.loads(self.rfile.read(length))
        self.server.requests.append(request)
        self.server.headers_seen.append(dict(self.headers))
        problem = protocol_problem(request)
        if problem:
            self.server.problems.append(problem)
            return self._send(422, {}, {"detail": problem})
        answer = self.server.answer(request)
        if isinstance(answer, tuple):
            return self._send(*answer)
        self._send(200, {}, answer if answer is not None else run_code(request))

    def _send(self, status, headers, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Length": str(len(data)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(answer=lambda request: None):
        server = RunCodeServer(answer)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def code_reward(sandbox: str, url: str | None = None, **options):
    remote = {"sandbox_url": url, "sandbox_retries": 0} if sandbox == "sandbox-fusion" else {}
    reward = create_component("reward", "code-tests", {"timeout_s": 2.0, "sandbox": sandbox, **remote, **options})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    return reward


def judged(reward, *cases):
    """Score ``(completion, tests)`` cases in one call: the samples and their outcomes."""
    samples = [
        Sample(0, index, "Write add(a, b).", completion, info={"extra": {"tests": tests}})
        for index, (completion, tests) in enumerate(cases)
    ]
    return samples, score_outcomes("Reward 'code-tests'", reward.score(samples), len(samples))


def decoded_files(request) -> dict:
    return {name: base64.b64decode(content).decode() for name, content in request["files"].items()}


@pytest.mark.parametrize(("completion", "tests"), [(CORRECT_FUNCTION, ASSERTS), (CORRECT_PROGRAM, STDIO)])
def test_a_correct_program_passes_through_run_code_requests_in_the_protocol(serve, completion, tests):
    server = serve()
    (sample,), (outcome,) = judged(
        code_reward("sandbox-fusion", server.url, memory_limit_mb=512), (completion, tests)
    )
    assert outcome.score == 1.0 and sample.info["verdict"] == "pass" and sample.info["tests_passed"] == 2
    assert server.problems == []
    program = completion.split("\n", 1)[1].rsplit("```", 1)[0]
    for request in server.requests:
        assert request["language"] == "python" and request["memory_limit_MB"] == 512
        assert request["fetch_files"] == [REPORT_FILE] and "harness" not in "".join(request["files"])
        assert decoded_files(request)["solution.py"] == program
    if isinstance(tests, list):  # the assert tests run in one process, within timeout_s per test
        (request,) = server.requests
        assert json.loads(decoded_files(request)["tests.json"]) == ASSERTS and request["run_timeout"] == 4.0
    else:  # one request per stdin -> stdout pair
        assert [request["stdin"] for request in server.requests] == STDIO["inputs"]
        assert [request["run_timeout"] for request in server.requests] == [2.0, 2.0]


VERDICT_CASES = {
    "wrong answer": ("def add(a, b):\n    return a - b", ASSERTS),
    "raises": ("def add(a, b):\n    raise RuntimeError('no')", ASSERTS),
    "exits before the tests": ("import sys\nsys.exit(3)", ASSERTS),
    "does not parse": ("def add(a, b) return a + b", ASSERTS),
    "prints the wrong output": ("print(4)", STDIO),
    "crashes on its input": ("a, b = map(int, input().split())\nprint(a + b + c)", STDIO),
    "half right": ("def add(a, b):\n    return 3", ASSERTS),
}


def test_verdicts_from_the_remote_sandbox_are_those_of_the_local_one(serve):
    server, cases = serve(), list(VERDICT_CASES.values())
    remote_samples, remote = judged(code_reward("sandbox-fusion", server.url), *cases)
    local_samples, local = judged(code_reward("local"), *cases)
    keys = ("verdict", "tests_passed", "tests_total", "verdict_detail")
    assert [[sample.info[key] for key in keys] for sample in remote_samples] == [
        [sample.info[key] for key in keys] for sample in local_samples
    ]
    assert [outcome.score for outcome in remote] == [outcome.score for outcome in local]
    assert [sample.info["verdict"] for sample in remote_samples] == [
        "wrong-answer",
        "crash",
        "crash",
        "syntax-error",
        "wrong-answer",
        "crash",
        "wrong-answer",
    ]


def test_a_program_past_run_timeout_is_a_timeout_verdict(serve):
    server = serve()
    looping = "def add(a, b):\n    while True:\n        pass"
    (sample,), (outcome,) = judged(
        code_reward("sandbox-fusion", server.url, timeout_s=0.5), (looping, ASSERTS[:1])
    )
    assert outcome.score == 0.0 and sample.info["verdict"] == "timeout"
    assert sample.info["verdict_detail"].startswith("test 0: ran past its deadline")
    assert server.requests[0]["run_timeout"] == 0.5


def test_a_sandbox_error_fails_its_sample_with_the_servers_message_and_the_others_are_judged(serve):
    def answer(request):
        if "broken" in decoded_files(request)["solution.py"]:
            run_result = {"status": "Error", "execution_time": None, "return_code": None, "stdout": None}
            return {"status": "SandboxError", "message": "no space left on device", "run_result": run_result}
        return None

    server = serve(answer)
    samples, outcomes = judged(
        code_reward("sandbox-fusion", server.url, sandbox_retries=2),
        (CORRECT_FUNCTION.replace("return", "# broken\n    return"), ASSERTS),
        (CORRECT_FUNCTION, ASSERTS),
    )
    assert outcomes[0].failure == "error" and "verdict" not in samples[0].info
    assert outcomes[0].message == (
        f"SandboxFusionError: {server.url} could not run the program (SandboxError): no space left on device"
    )
    assert outcomes[1].score == 1.0 and samples[1].info["verdict"] == "pass"
    assert len(server.requests) == 2  # a SandboxError is the server's verdict on the request: not retried


@pytest.mark.parametrize(
    "answer, message",
    [
        ({"status": "Success", "message": ""}, "/run_code answers an object with 'status'"),
        ({"status": "Success", "run_result": {"status": "Finished"}}, "an integer return_code"),
        (
            {
                "status": "Success",
                "run_result": {"status": "Finished", "return_code": 0},
                "files": {REPORT_FILE: "%"},
            },
            "not base64",
        ),
        ([1, 2], "/run_code answers an object"),
    ],
    ids=["no-run-result", "no-return-code", "report-not-base64", "not-an-object"],
)
def test_an_answer_outside_the_protocol_fails_the_sample(serve, answer, message):
    server = serve(lambda request: answer)
    _, (outcome,) = judged(code_reward("sandbox-fusion", server.url), (CORRECT_FUNCTION, ASSERTS))
    assert outcome.failure == "error" and message in outcome.message


def test_an_unreachable_sandbox_fails_the_sample_not_the_run():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/run_code"  # bound, not listening: refused
        _, outcomes = judged(
            code_reward("sandbox-fusion", url), (CORRECT_FUNCTION, ASSERTS), (CORRECT_PROGRAM, STDIO)
        )
    assert [outcome.failure for outcome in outcomes] == ["error", "error"]
    assert f"cannot reach {url}" in outcomes[0].message


def test_a_sandbox_that_does_not_answer_fails_the_sample_at_run_timeout_plus_sandbox_wait_s():
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts connections but never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/run_code"
        started = time.monotonic()
        reward = code_reward("sandbox-fusion", url, timeout_s=0.2, sandbox_wait_s=0.3)
        _, (outcome,) = judged(reward, (CORRECT_FUNCTION, ASSERTS[:1]))
    assert time.monotonic() - started < 2.0
    assert outcome.failure == "timeout"
    assert (
        outcome.message
        == f"TimeoutError: {url} gave no answer within 0.5 s (run_timeout 0.2 s + sandbox_wait_s 0.3 s)"
    )


def test_a_reply_over_sandbox_max_reply_bytes_fails_the_sample(serve):
    server = serve()
    _, (outcome,) = judged(
        code_reward("sandbox-fusion", server.url, sandbox_max_reply_bytes=100), (CORRECT_FUNCTION, ASSERTS)
    )
    assert outcome.failure == "error"
    assert "answered more than sandbox_max_reply_bytes=100 bytes" in outcome.message


def test_the_token_goes_to_sandbox_url_and_never_through_a_redirect_to_another_origin(serve, monkeypatch):
    monkeypatch.setenv("SANDBOX_TOKEN", "s3cret")
    elsewhere = serve()
    server = serve(lambda request: (307, {"Location": elsewhere.url}, {}))
    reward = code_reward("sandbox-fusion", server.url, sandbox_token_env="SANDBOX_TOKEN", sandbox_retries=2)
    _, (outcome,) = judged(reward, (CORRECT_FUNCTION, ASSERTS))
    assert server.headers_seen[0]["Authorization"] == "Bearer s3cret"
    assert elsewhere.requests == [] and len(server.requests) == 1
    assert outcome.failure == "error" and "redirected (HTTP 307) to another origin" in outcome.message
    assert "set sandbox_url to the address that answers" in outcome.message


def test_sandbox_options_are_checked(monkeypatch):
    with pytest.raises(ComponentOptionError, match="sandbox must be 'local' or 'sandbox-fusion'"):
        create_component("reward", "code-tests", {"sandbox": "docker"})
    with pytest.raises(ComponentOptionError, match="sandbox: sandbox-fusion needs sandbox_url"):
        create_component("reward", "code-tests", {"sandbox": "sandbox-fusion"})
    with pytest.raises(ComponentOptionError, match="sandbox_url is set but sandbox is 'local'"):
        create_component("reward", "code-tests", {"sandbox_url": "http://127.0.0.1:8080/run_code"})
    monkeypatch.delenv("SANDBOX_TOKEN", raising=False)
    with pytest.raises(ValueError, match="sandbox_token_env='SANDBOX_TOKEN', but that environment variable"):
        code_reward("sandbox-fusion", "http://127.0.0.1:1/run_code", sandbox_token_env="SANDBOX_TOKEN")


def test_iterframe_plugins_lists_the_reward_and_its_sandbox_options(plugin_manager):
    from click.testing import CliRunner

    listed = json.loads(CliRunner().invoke(cli, ["plugins", "--all", "--json"]).stdout)
    rewards = [item["name"] for entry in listed for item in entry["provides"].get("reward", [])]
    assert "code-tests" in rewards
    (shown,) = json.loads(CliRunner().invoke(cli, ["plugins", "show", "code-tests", "--json"]).stdout)
    options = {option["name"]: option for option in shown["options"]}
    for name in ("sandbox", "sandbox_url", "sandbox_token_env", "sandbox_wait_s", "sandbox_retries"):
        assert options[name]["help"], name
    assert options["sandbox"]["default"] == "local" and "sandbox-fusion" in options["sandbox"]["help"]
