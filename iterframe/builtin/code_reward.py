"""The ``code-tests`` reward: run the program in a completion against the sample's tests, in the sandbox.

Each sample's program runs in fresh sandboxed processes (:mod:`iterframe.sandbox`): its own process group, killed
at the deadline, under resource limits, in a temporary directory removed afterwards, with a clean environment and,
where the OS allows it without root, no network. The score is the fraction of tests passed (or 1.0 only when all
pass). Each sample's verdict (``pass``, ``wrong-answer``, ``timeout``, ``crash``, ``syntax-error``) goes to its
``info`` (``verdict``, ``tests_passed``, ``tests_total``, ``verdict_detail``), so the saved samples hold it and the
metrics count it (``reward/verdict/VERDICT``). A program that fails scores 0 for the tests it failed: it is the
model's answer, not a failure of the reward. A sample without tests, or tests that do not read, fails
(``failed-reward:error``).

With ``sandbox: sandbox-fusion`` the programs run on a SandboxFusion server instead
(:mod:`iterframe.builtin.sandbox_fusion`), with the same verdicts; a request the server cannot serve fails its
sample (``failed-reward:error``, or ``failed-reward:timeout`` past the request's deadline), never the run.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from iterframe.builtin.code_tests import Runner, extract_program, judge, local_runner, parse_tests
from iterframe.builtin.http_client import JsonService, RewardServerError
from iterframe.builtin.sandbox_fusion import SandboxFusionRunner
from iterframe.plugins.components import Reward, Sample
from iterframe.plugins.reward_pool import default_workers
from iterframe.sandbox import Limits, isolation_available

__all__ = ["CodeTestsReward"]

SANDBOXES = ("local", "sandbox-fusion")
#: Samples judged at once on a remote sandbox, by default.
REMOTE_WORKERS = 16


class CodeTestsReward(Reward):
    """Scores the program in each completion by running the sample's tests in the sandbox."""

    name = "code-tests"
    description = (
        "Runs the program in the completion (its last ``` block) against the sample's tests (assert statements, "
        "or stdin -> stdout pairs) in a sandbox; scores the fraction passed, with a verdict per sample."
    )

    @dataclasses.dataclass
    class Options:
        tests_column: str = dataclasses.field(
            default="tests",
            metadata={
                "help": "Dataset column with each prompt's tests: assert statements (a list of strings, or one "
                "string), or stdin/stdout pairs ({'inputs': [...], 'outputs': [...]} or [{'input', 'output'}])."
            },
        )
        extract: str = dataclasses.field(
            default="last-block",
            metadata={"help": "'last-block': the last fenced code block (else the whole completion); 'whole'."},
        )
        scoring: str = dataclasses.field(
            default="fraction",
            metadata={"help": "'fraction': the share of tests passed; 'all': 1.0 when every test passes, else 0."},
        )
        timeout_s: float = dataclasses.field(
            default=5.0,
            metadata={
                "help": "Wall-clock seconds per test (assert tests run in one process, within timeout_s x tests); "
                "past it the program's process group is killed and it fails the test (timeout)."
            },
        )
        cpu_limit_s: Optional[float] = dataclasses.field(
            default=10.0, metadata={"help": "CPU seconds per process."}
        )
        memory_limit_mb: Optional[int] = dataclasses.field(
            default=1024, metadata={"help": "Address space per process, MiB."}
        )
        file_size_limit_mb: Optional[int] = dataclasses.field(
            default=16, metadata={"help": "Largest file a process may write, MiB (its output included)."}
        )
        processes_limit: Optional[int] = dataclasses.field(
            default=32, metadata={"help": "Processes and threads a program may run (not enforced for root)."}
        )
        open_files_limit: Optional[int] = dataclasses.field(
            default=64, metadata={"help": "Open file descriptors per process."}
        )
        network: bool = dataclasses.field(
            default=False,
            metadata={
                "help": "Let programs use the network. Off: they run in a user+network namespace where the OS "
                "allows it without root (else with the network, and a warning says so)."
            },
        )
        workers: Optional[int] = dataclasses.field(
            default=None,
            metadata={
                "help": f"Samples judged at once (default: min(4, CPUs); {REMOTE_WORKERS} with sandbox-fusion)."
            },
        )
        sandbox: str = dataclasses.field(
            default="local",
            metadata={
                "help": "'local': programs run here, in iterframe's sandbox; 'sandbox-fusion': on a SandboxFusion "
                "server (POST /run_code at sandbox_url), which isolates them its own way: timeout_s and "
                "memory_limit_mb go with each request, the other limits and network apply only locally."
            },
        )
        sandbox_url: Optional[str] = dataclasses.field(
            default=None,
            metadata={"help": "The server's /run_code URL, e.g. http://localhost:8080/run_code (sandbox-fusion)."},
        )
        sandbox_token_env: Optional[str] = dataclasses.field(
            default=None,
            metadata={
                "help": "Name of an environment variable holding a token, sent to sandbox_url as 'Authorization: "
                "Bearer TOKEN' (for a server behind a gateway that asks for one; the token never goes into the "
                "run's config)."
            },
        )
        sandbox_wait_s: float = dataclasses.field(
            default=30.0,
            metadata={
                "help": "Seconds a request to sandbox_url may take beyond the program's own deadline (queueing, "
                "start-up, the whole reply); past it the request is given up (and retried)."
            },
        )
        sandbox_retries: int = dataclasses.field(
            default=2,
            metadata={
                "help": "Further attempts after a request to sandbox_url times out, cannot connect, or gets "
                "5xx/429 (waiting 1 s, doubled each time)."
            },
        )
        sandbox_max_reply_bytes: int = dataclasses.field(
            default=16 * 1024 * 1024,
            metadata={"help": "Largest answer read from sandbox_url; a longer one fails its sample (16 MiB)."},
        )

        def __post_init__(self):
            if self.extract not in ("last-block", "whole"):
                raise ValueError(f"extract must be 'last-block' or 'whole', got {self.extract!r}.")
            if self.scoring not in ("fraction", "all"):
                raise ValueError(f"scoring must be 'fraction' or 'all', got {self.scoring!r}.")
            if isinstance(self.timeout_s, bool) or not self.timeout_s > 0:
                raise ValueError(f"timeout_s must be a number of seconds > 0, got {self.timeout_s!r}.")
            if self.workers is not None and self.workers < 1:
                raise ValueError(f"workers must be >= 1, got {self.workers!r}.")
            self.limits()  # each limit is checked there
            self._check_sandbox()

        def _check_sandbox(self) -> None:
            if self.sandbox not in SANDBOXES:
                raise ValueError(f"sandbox must be 'local' or 'sandbox-fusion', got {self.sandbox!r}.")
            remote_only = [name for name in ("sandbox_url", "sandbox_token_env") if getattr(self, name)]
            if self.sandbox == "local" and remote_only:
                raise ValueError(
                    f"{remote_only[0]} is set but sandbox is 'local'; set sandbox: sandbox-fusion to run the "
                    "programs on that server."
                )
            if self.sandbox == "sandbox-fusion" and not str(self.sandbox_url or "").startswith(
                ("http://", "https://")
            ):
                raise ValueError(
                    "sandbox: sandbox-fusion needs sandbox_url, the server's /run_code URL starting with http:// "
                    f"or https:// (e.g. http://localhost:8080/run_code); got {self.sandbox_url!r}."
                )
            if isinstance(self.sandbox_wait_s, bool) or not self.sandbox_wait_s > 0:
                raise ValueError(f"sandbox_wait_s must be a number of seconds > 0, got {self.sandbox_wait_s!r}.")
            for name, minimum in (("sandbox_retries", 0), ("sandbox_max_reply_bytes", 1)):
                if getattr(self, name) < minimum:
                    raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)!r}.")

        def limits(self) -> Limits:
            return Limits(
                cpu_s=self.cpu_limit_s,
                memory_mb=self.memory_limit_mb,
                open_files=self.open_files_limit,
                file_size_mb=self.file_size_limit_mb,
                processes=self.processes_limit,
            )

    def setup(self, context) -> None:
        token_env = self.options.sandbox_token_env
        if token_env and not os.environ.get(token_env):
            raise ValueError(
                f"sandbox_token_env={token_env!r}, but that environment variable is not set; export it or leave "
                "sandbox_token_env out."
            )
        if self.options.sandbox == "local" and not self.options.network and not isolation_available():
            warnings.warn(
                "code-tests: this OS does not let an unprivileged process enter a user and network namespace, so "
                "programs run with the network (and a process that leaves its group with setsid can outlive its "
                "deadline). Run in a container without network to isolate them.",
                stacklevel=2,
            )

    def _tests_of(self, sample: Sample):
        extra = sample.info.get("extra") or {}
        column = self.options.tests_column
        value = extra.get(column, sample.reference if column == "reference" else None)
        if value is None:
            columns = ", ".join(sorted(extra)) or "none"
            raise ValueError(
                f"the sample of prompt {sample.prompt_id} has no tests column {column!r} (its columns: "
                f"{columns}); set the reward's tests_column."
            )
        return parse_tests(value)

    def _score_one(self, sample: Sample):
        try:
            tests = self._tests_of(sample)
        except ValueError as error:
            return error
        options = self.options
        program = extract_program(sample.completion, last_code_block=options.extract == "last-block")
        try:
            judgement = judge(
                program,
                tests,
                options.timeout_s,
                options.limits(),
                stop_early=options.scoring == "all",
                runner=self._runner(),
            )
        except (TimeoutError, RewardServerError) as error:  # the remote sandbox failed: this sample fails
            return error
        sample.info.update(
            verdict=judgement.verdict,
            tests_passed=judgement.passed,
            tests_total=judgement.total,
            verdict_detail=judgement.detail,
        )
        if options.scoring == "all":
            return 1.0 if judgement.verdict == "pass" else 0.0
        return judgement.passed / judgement.total

    def _runner(self) -> Runner:
        options = self.options
        if options.sandbox == "local":
            return local_runner(options.limits(), isolate=None if not options.network else False)
        service = JsonService(
            options.sandbox_url,
            retries=options.sandbox_retries,
            max_reply_bytes=options.sandbox_max_reply_bytes,
            token_env=options.sandbox_token_env,
            url_option="sandbox_url",
            size_option="sandbox_max_reply_bytes",
        )
        return SandboxFusionRunner(service, options.sandbox_wait_s, options.memory_limit_mb)

    def score(self, samples: list[Sample]) -> list:
        remote = self.options.sandbox != "local"
        workers = self.options.workers or (REMOTE_WORKERS if remote else default_workers())
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self._score_one, samples))
