"""The ``code-tests`` reward's remote sandbox: each harness runs on a SandboxFusion server, through ``/run_code``.

Each run is one ``POST`` of a JSON object to the server's ``/run_code`` URL::

    {"code": "<the harness>", "language": "python", "stdin": "<input>", "run_timeout": S, "compile_timeout": S,
     "memory_limit_MB": M, "files": {"solution.py": "<base64>", ...}, "fetch_files": ["<the report file>"]}

The server writes ``files`` into a fresh directory, runs ``code`` there and answers::

    {"status": "Success" | "Failed" | "SandboxError", "message": "...", "compile_result": null,
     "run_result": {"status": "Finished" | "TimeLimitExceeded" | "Error", "execution_time": T,
                    "return_code": N, "stdout": "...", "stderr": "..."},
     "files": {"<the report file>": "<base64>"}}

The harness writes its report to a file the server sends back (``fetch_files``), so the verdicts are read as from
a local run: a run past ``run_timeout`` is a timeout, one ended by a signal or an error a crash. ``SandboxError``
(or a run whose status is ``Error``) means the server could not run the program: the sample fails with the
server's message, and the run goes on.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any, Optional

from iterframe.builtin.http_client import JsonService, RewardServerError, short
from iterframe.sandbox import Finished

__all__ = ["REPORT_FILE", "SandboxFusionError", "SandboxFusionRunner"]

#: The file the harness reports to in the server's working directory, fetched with the answer.
REPORT_FILE = "iterframe-report.txt"
# Opens the report file where the harness looks for its report descriptor.
_REPORT_PRELUDE = (
    "import os\n"
    f"os.environ['ITERFRAME_REPORT_FD'] = str(os.open({REPORT_FILE!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))\n"
)
_MESSAGE_LIMIT = 300


class SandboxFusionError(RewardServerError):
    """The sandbox server could not run the program (its ``SandboxError``), or answered outside the protocol."""


@dataclasses.dataclass(frozen=True)
class SandboxFusionRunner:
    """A :data:`~iterframe.builtin.code_tests.Runner` that runs each harness on a SandboxFusion server.

    Args:
        service: the server's ``/run_code`` URL and the rules of asking it (retries, reply cap, token).
        wait_s: seconds a request may take beyond the program's ``run_timeout`` before it is given up.
        memory_limit_mb: the program's memory (``memory_limit_MB``); ``None``: the server's default.
    """

    service: JsonService
    wait_s: float
    memory_limit_mb: Optional[int] = None

    def __call__(self, files: dict[str, str], timeout_s: float, stdin: bytes = b"") -> Finished:
        payload = {
            "code": _REPORT_PRELUDE + files["harness.py"],
            "language": "python",
            "stdin": stdin.decode("utf-8"),
            "run_timeout": timeout_s,
            "compile_timeout": timeout_s,
            "memory_limit_MB": -1 if self.memory_limit_mb is None else int(self.memory_limit_mb),
            "files": {name: _base64(text) for name, text in files.items() if name != "harness.py"},
            "fetch_files": [REPORT_FILE],
        }
        limit = timeout_s + self.wait_s
        deadline = f"{limit:g} s (run_timeout {timeout_s:g} s + sandbox_wait_s {self.wait_s:g} s)"
        return finished_from(self.service.post(payload, limit, deadline), self.service.url)


def finished_from(answer: Any, url: str) -> Finished:
    """How the program ended, from a ``/run_code`` answer.

    Raises:
        SandboxFusionError: the answer is a ``SandboxError`` (the server's message says why), or outside the
            protocol.
    """
    status = answer.get("status") if isinstance(answer, dict) else None
    result = answer.get("run_result") if isinstance(answer, dict) else None
    if status == "SandboxError" or (isinstance(result, dict) and result.get("status") == "Error"):
        said = answer.get("message") or (result or {}).get("stderr") or "no message"
        raise SandboxFusionError(f"{url} could not run the program (SandboxError): {_clip(str(said))}")
    if status not in ("Success", "Failed") or not isinstance(result, dict):
        raise SandboxFusionError(
            f"{url} answered {short(answer)}; /run_code answers an object with 'status' Success, Failed or "
            "SandboxError and the program's 'run_result'."
        )
    run_status, code = result.get("status"), result.get("return_code")
    if run_status == "TimeLimitExceeded":
        code = None
    elif run_status != "Finished" or not isinstance(code, int) or isinstance(code, bool):
        raise SandboxFusionError(
            f"{url} answered a run_result with status {short(run_status)} and return_code {short(code)}; a "
            "finished run has status Finished and an integer return_code (or status TimeLimitExceeded)."
        )
    fetched = answer.get("files") or {}
    report = fetched.get(REPORT_FILE) if isinstance(fetched, dict) else None
    return Finished(
        returncode=code,
        stdout=_text(result.get("stdout"), "stdout", url),
        stderr=_text(result.get("stderr"), "stderr", url),
        report=_decoded(report, url),
        isolated=False,
    )


def _base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _text(value: Any, name: str, url: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise SandboxFusionError(f"{url} answered a {type(value).__name__} as run_result.{name}; it must be text.")
    return value.encode("utf-8")


def _decoded(value: Any, url: str) -> bytes:
    """The report file's bytes from its base64 text (none when the harness wrote none)."""
    if value is None:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise SandboxFusionError(f"{url} answered files[{REPORT_FILE!r}] = {short(value)}, not base64.") from None


def _clip(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."
