"""The ``http`` reward: scores come from a server, in batches, in the protocol of OpenRLHF's remote reward models.

Each batch is one ``POST`` of a JSON object to the URL::

    {"query": ["<prompt + completion>", ...], "prompts": ["<prompt>", ...], "labels": ["<reference>" or null, ...]}

and the answer is a JSON object whose ``rewards`` key (the ``score_key`` option) holds one number per query, or
``null`` for one the server could not score. A request that times out, cannot connect, gets a 5xx or 429 answer or
a malformed reply (not HTTP, cut short) is tried again (``retries`` times, waiting ``backoff_s``, doubled each
time); when every attempt failed, the batch's samples fail (``failed-reward:timeout`` or ``failed-reward:error``)
and the run goes on. ``timeout_s`` is a deadline for the whole request (connecting, the headers and the body),
replies are read up to ``max_reply_bytes``, and a redirect to another origin is never followed, so the bearer token
goes only to ``url``'s origin.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

from iterframe.plugins.components import Reward, RunContext, Sample

__all__ = ["HttpReward", "RewardServerError", "prompt_text", "query_text"]

_RETRIED_STATUS = {429, 500, 502, 503, 504}
_READ_BYTES = 64 * 1024


class RewardServerError(RuntimeError):
    """The reward server could not be reached, or answered with an error or something that is not the protocol."""


class _Refused(Exception):
    """A reply that no further attempt would change: a redirect not followed, a body over ``max_reply_bytes``."""


def query_text(tokenizer, prompt, completion: str) -> str:
    """The text a reward model reads: ``prompt + completion`` for text prompts; for chat prompts, the conversation
    with the completion as the assistant's reply, through the tokenizer's chat template (or the contents joined by
    newlines when there is no template)."""
    if isinstance(prompt, str):
        return prompt + completion
    conversation = [*prompt, {"role": "assistant", "content": completion}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(conversation, tokenize=False)
    return "\n".join(str(message["content"]) for message in conversation)


def prompt_text(tokenizer, prompt) -> str:
    """The prompt as text: itself, or chat messages through the chat template (with the generation prompt)."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "\n".join(str(message["content"]) for message in prompt)


class HttpReward(Reward):
    """Posts batches of samples to a reward server and reads one score per sample back."""

    name = "http"
    description = "Scores from a reward server: POST {'query': [...]} -> {'rewards': [...]} (OpenRLHF's protocol)."

    @dataclasses.dataclass
    class Options:
        url: str = dataclasses.field(
            metadata={"help": "The server's scoring URL, e.g. http://host:5000/get_reward."}
        )
        batch_size: int = dataclasses.field(default=32, metadata={"help": "Samples per request."})
        timeout_s: float = dataclasses.field(
            default=60.0,
            metadata={
                "help": "Seconds one request may take, connecting and the whole reply included, before it is "
                "given up (and retried)."
            },
        )
        retries: int = dataclasses.field(
            default=2,
            metadata={"help": "Further attempts after a request times out, cannot connect, or gets 5xx/429."},
        )
        backoff_s: float = dataclasses.field(
            default=1.0, metadata={"help": "Seconds before the first retry; doubled before each further one."}
        )
        score_key: str = dataclasses.field(
            default="rewards", metadata={"help": "Key of the answer's list of scores."}
        )
        max_reply_bytes: int = dataclasses.field(
            default=16 * 1024 * 1024,
            metadata={"help": "Largest reply read; a longer one fails its batch (16 MiB)."},
        )
        token_env: Optional[str] = dataclasses.field(
            default=None,
            metadata={
                "help": "Name of an environment variable holding a token, sent as 'Authorization: Bearer TOKEN' "
                "(the token itself never goes into the run's config)."
            },
        )

        def __post_init__(self):
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url must start with http:// or https://, got {self.url!r}.")
            for name, minimum in (("batch_size", 1), ("retries", 0), ("max_reply_bytes", 1)):
                if getattr(self, name) < minimum:
                    raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)}.")
            if not self.timeout_s > 0 or self.backoff_s < 0:
                raise ValueError(
                    f"timeout_s must be > 0 and backoff_s >= 0, got {self.timeout_s}, {self.backoff_s}."
                )

    def setup(self, context: RunContext) -> None:
        self.tokenizer = context.tokenizer
        if self.options.token_env and not os.environ.get(self.options.token_env):
            raise ValueError(
                f"token_env={self.options.token_env!r}, but that environment variable is not set; export it or "
                "leave token_env out."
            )

    def score(self, samples: list[Sample]) -> list:
        scores: list = []
        for start in range(0, len(samples), self.options.batch_size):
            batch = samples[start : start + self.options.batch_size]
            try:
                scores.extend(self._scored_batch(batch))
            except (TimeoutError, RewardServerError) as error:  # the batch fails; the next one is tried
                scores.extend([error] * len(batch))
        return scores

    def _payload(self, samples: list[Sample]) -> dict[str, Any]:
        tokenizer = getattr(self, "tokenizer", None)
        return {
            "query": [query_text(tokenizer, sample.prompt, sample.completion) for sample in samples],
            "prompts": [prompt_text(tokenizer, sample.prompt) for sample in samples],
            "labels": [None if sample.reference is None else str(sample.reference) for sample in samples],
        }

    def _scored_batch(self, samples: list[Sample]) -> list:
        answer = self._post(self._payload(samples))
        key = self.options.score_key
        rewards = answer.get(key) if isinstance(answer, dict) else None
        if not isinstance(rewards, list) or len(rewards) != len(samples):
            got = f"{len(rewards)} scores" if isinstance(rewards, list) else f"{_short(answer)}"
            raise RewardServerError(
                f"{self.options.url} answered {got} for {len(samples)} queries; the protocol wants an object "
                f"whose {key!r} holds one number (or null) per query."
            )
        return [_number_or_failure(value, self.options.url) for value in rewards]

    def _post(self, payload: dict[str, Any]) -> Any:
        """POST ``payload``, retrying what may pass on another try; the decoded JSON answer."""
        body = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.options.token_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.options.token_env, '')}"
        attempts, wait_s = self.options.retries + 1, self.options.backoff_s
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(self.options.url, data=body, headers=headers, method="POST")
            deadline = _Deadline(self.options.timeout_s)
            try:
                data = self._reply(request, deadline)
                break
            except Exception as error:  # noqa: BLE001 (whatever the reply was, the batch fails, not the run)
                failure, retry = self._failure(error, deadline.expired)
            finally:
                deadline.cancel()
            if not retry or attempt == attempts:
                tries = f" ({attempts} attempts)" if attempt > 1 else ""
                raise type(failure)(f"{failure}{tries}") from None
            time.sleep(wait_s)
            wait_s *= 2
        try:
            return json.loads(data)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested beyond what the parser takes
            raise RewardServerError(f"{self.options.url} answered text that is not JSON: {_short(data)}") from None

    def _reply(self, request: urllib.request.Request, deadline: _Deadline) -> bytes:
        """The body of the answer to ``request``, read within ``deadline`` and up to ``max_reply_bytes``."""
        opener = urllib.request.build_opener(
            _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline), _SameOriginRedirects()
        )
        limit = self.options.max_reply_bytes
        too_large = _Refused(
            f"{self.options.url} answered more than max_reply_bytes={limit} bytes; send smaller batches or raise "
            "max_reply_bytes"
        )
        with opener.open(request, timeout=self.options.timeout_s) as response:
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > limit:
                raise too_large
            data = bytearray()
            while chunk := response.read(min(_READ_BYTES, limit + 1 - len(data))):
                data += chunk
                if len(data) > limit:
                    raise too_large
            if response.length:  # read(amt) ends quietly where the server closed short of its Content-Length
                raise http.client.IncompleteRead(bytes(data), response.length)
        if deadline.expired:  # the deadline shut the socket: what was read may be cut short
            raise TimeoutError
        return bytes(data)

    def _failure(self, error: Exception, timed_out: bool) -> tuple[Exception, bool]:
        """What a failed request means: the error to report, and whether another attempt may pass."""
        url = self.options.url
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if timed_out or isinstance(reason, TimeoutError):
            return TimeoutError(f"{url} gave no answer within timeout_s={self.options.timeout_s:g} s"), True
        if isinstance(error, urllib.error.HTTPError):
            return RewardServerError(
                f"{url} answered HTTP {error.code} {error.reason}"
            ), error.code in _RETRIED_STATUS
        if isinstance(error, _Refused):
            return RewardServerError(str(error)), False
        if isinstance(reason, http.client.HTTPException):  # before OSError: RemoteDisconnected is both
            return RewardServerError(f"{url} sent a malformed reply: {type(reason).__name__}: {reason!r}"), True
        if isinstance(reason, OSError):
            return RewardServerError(f"cannot reach {url}: {reason}"), True
        return RewardServerError(f"{url}: the request failed with {type(error).__name__}: {error}"), True


class _Deadline:
    """A request's deadline: when it passes, every socket it watches is shut, which ends the read in progress (a
    server trickling bytes cannot hold a request past it)."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


def _watched(base: type, deadline: _Deadline) -> type:
    """``base`` (an HTTP(S) connection class) whose socket ``deadline`` shuts when it passes (urllib lets go of
    the connection once the headers are in; the reply still reads from that socket)."""

    class Connection(base):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    return Connection


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, request):
        return self.do_open(_watched(http.client.HTTPConnection, self.deadline), request)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, request):
        return self.do_open(_watched(http.client.HTTPSConnection, self.deadline), request, context=self._context)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a 307/308 redirect to the same origin with the same POST; refuses every other redirect, so the
    body and the bearer token never go to another server."""

    def redirect_request(self, request, fp, code, msg, headers, newurl):
        if _origin(newurl) != _origin(request.full_url):
            fp.close()
            raise _Refused(
                f"{request.full_url} redirected (HTTP {code}) to another origin, {newurl}; redirects to another "
                "origin are not followed (the request and its token stay with url's origin): set url to the "
                "address that answers"
            )
        if code not in (307, 308):
            fp.close()
            raise _Refused(
                f"{request.full_url} answered HTTP {code}, a redirect that would turn the POST into a GET; set "
                f"url to {newurl}"
            )
        return urllib.request.Request(newurl, data=request.data, headers=request.headers, method="POST")


def _origin(url: str) -> tuple:
    parts = urllib.parse.urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port


def _number_or_failure(value: Any, url: str) -> Any:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    return RewardServerError(f"{url} answered {_short(value)} for a query; scores must be numbers or null")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
