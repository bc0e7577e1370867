"""POSTing JSON to a server that answers JSON, with one set of rules for the ``http`` reward and the
``code-tests`` reward's remote sandbox.

A request that times out, cannot connect, gets a 5xx or 429 answer or a malformed reply (not HTTP, cut short) is
tried again (``retries`` times, waiting ``backoff_s``, doubled each time). ``timeout_s`` is a deadline for the
whole request (connecting, the headers and the body: a server trickling bytes cannot hold it past that), replies
are read up to ``max_reply_bytes``, and a redirect to another origin is never followed, so the body and the bearer
token go only to the URL's origin.
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

__all__ = ["JsonService", "RewardServerError", "short"]

_RETRIED_STATUS = {429, 500, 502, 503, 504}
_READ_BYTES = 64 * 1024


class RewardServerError(RuntimeError):
    """The server could not be reached, or answered with an error or something that is not its protocol."""


class _Refused(Exception):
    """A reply that no further attempt would change: a redirect not followed, a body over ``max_reply_bytes``."""


@dataclasses.dataclass(frozen=True)
class JsonService:
    """A URL that takes a JSON ``POST`` and answers JSON, and how to ask it.

    Args:
        url: where to POST.
        retries: further attempts after a request times out, cannot connect, gets 5xx/429 or a malformed reply.
        backoff_s: seconds before the first retry; doubled before each further one.
        max_reply_bytes: the longest reply read; a longer one fails the request (not retried).
        token_env: an environment variable whose value is sent as ``Authorization: Bearer VALUE``.
        url_option, size_option: the names of the caller's options for ``url`` and ``max_reply_bytes``, used in
            error messages.
    """

    url: str
    retries: int = 0
    backoff_s: float = 1.0
    max_reply_bytes: int = 16 * 1024 * 1024
    token_env: Optional[str] = None
    url_option: str = "url"
    size_option: str = "max_reply_bytes"

    def post(self, payload: Any, timeout_s: float, deadline: Optional[str] = None) -> Any:
        """POST ``payload`` (as JSON), retrying what may pass on another try; the decoded JSON answer.

        Args:
            timeout_s: the deadline of each attempt, the whole reply included.
            deadline: how an error names that deadline (default ``"timeout_s=N s"``).

        Raises:
            TimeoutError: the last attempt got no whole answer within ``timeout_s``.
            RewardServerError: the server could not be reached, answered an error, too much, or not JSON.
        """
        body = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.token_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.token_env, '')}"
        attempts, wait_s = self.retries + 1, self.backoff_s
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            watch = _Deadline(timeout_s)
            try:
                data = self._reply(request, watch, timeout_s)
                break
            except Exception as error:  # noqa: BLE001 (whatever the reply was, the request fails, not the run)
                failure, retry = self._failure(error, watch.expired, deadline or f"timeout_s={timeout_s:g} s")
            finally:
                watch.cancel()
            if not retry or attempt == attempts:
                tries = f" ({attempts} attempts)" if attempt > 1 else ""
                raise type(failure)(f"{failure}{tries}") from None
            time.sleep(wait_s)
            wait_s *= 2
        try:
            return json.loads(data)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested beyond what the parser takes
            raise RewardServerError(f"{self.url} answered text that is not JSON: {short(data)}") from None

    def _reply(self, request: urllib.request.Request, deadline: _Deadline, timeout_s: float) -> bytes:
        """The body of the answer to ``request``, read within ``deadline`` and up to ``max_reply_bytes``."""
        opener = urllib.request.build_opener(
            _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline), _SameOriginRedirects(self.url_option)
        )
        limit = self.max_reply_bytes
        too_large = _Refused(
            f"{self.url} answered more than {self.size_option}={limit} bytes; ask for less per request or raise "
            f"{self.size_option}"
        )
        with opener.open(request, timeout=timeout_s) as response:
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

    def _failure(self, error: Exception, timed_out: bool, deadline: str) -> tuple[Exception, bool]:
        """What a failed request means: the error to report, and whether another attempt may pass."""
        url = self.url
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if timed_out or isinstance(reason, TimeoutError):
            return TimeoutError(f"{url} gave no answer within {deadline}"), True
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


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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

    def __init__(self, url_option: str = "url"):
        super().__init__()
        self.url_option = url_option

    def redirect_request(self, request, fp, code, msg, headers, newurl):
        option = self.url_option
        if _origin(newurl) != _origin(request.full_url):
            fp.close()
            raise _Refused(
                f"{request.full_url} redirected (HTTP {code}) to another origin, {newurl}; redirects to another "
                f"origin are not followed (the request and its token stay with {option}'s origin): set {option} "
                "to the address that answers"
            )
        if code not in (307, 308):
            fp.close()
            raise _Refused(
                f"{request.full_url} answered HTTP {code}, a redirect that would turn the POST into a GET; set "
                f"{option} to {newurl}"
            )
        return urllib.request.Request(newurl, data=request.data, headers=request.headers, method="POST")


def _origin(url: str) -> tuple:
    parts = urllib.parse.urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port
