"""``iterframe-reward-model serve``: a sequence-classification reward model behind an HTTP endpoint, in the
protocol of OpenRLHF's remote reward models (which iterframe's ``http`` reward speaks):

    POST (any path, e.g. /get_reward)  {"query": ["<prompt + completion>", ...], ...}
    ->                                 {"rewards": [<score>, ...], "scores": [<score>, ...]}

``GET /health`` answers ``{"status": "ok"}``. A body that is not such an object, or a ``Content-Length`` that is
not one number of bytes, gets HTTP 400 with ``{"error": "..."}``; a body over 64 MiB gets 413. With a token, a
``POST`` without ``Authorization: Bearer TOKEN`` gets 401 (the ``http`` reward sends it from ``token_env``).
Requests are answered one at a time by one model.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import click

__all__ = ["RewardModelServer", "cli", "main"]

#: Largest request body accepted, in bytes.
MAX_BODY_BYTES = 64 * 1024 * 1024

#: The environment variable ``serve --token`` is read from when the flag is left out.
TOKEN_ENV = "ITERFRAME_REWARD_MODEL_TOKEN"


class RewardModelServer(ThreadingHTTPServer):
    """An HTTP server scoring queries with a set-up :class:`~iterframe_reward_model.RewardModelReward`."""

    daemon_threads = True
    verbose = False

    def __init__(self, address: tuple[str, int], reward, token: Optional[str] = None):
        super().__init__(address, _Handler)
        self.reward = reward
        self.token = token
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def scores(self, body: Any) -> list[float]:
        """The scores of a request body, or ``ValueError`` saying what is wrong with it."""
        queries = body.get("query") if isinstance(body, dict) else None
        if not isinstance(queries, list) or not all(isinstance(query, str) for query in queries):
            raise ValueError('the body must be a JSON object {"query": [text, ...]} (a list of strings)')
        with self.lock:
            return self.reward.score_texts(queries) if queries else []


class _Handler(BaseHTTPRequestHandler):
    server: RewardModelServer

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        if self.path.rstrip("/") == "/health":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {"error": 'POST {"query": [...]} to score; GET /health to check the server'})

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            self._answer(401, {"error": "send the server's token as 'Authorization: Bearer TOKEN'"})
            return
        try:
            length = _body_length(self.headers.get_all("Content-Length") or [])
            body = json.loads(self.rfile.read(length) or b"null")
            scores = self.server.scores(body)
        except _TooLarge as error:
            self._answer(413, {"error": str(error)})
            return
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            self._answer(400, {"error": str(error)})
            return
        self._answer(200, {"rewards": scores, "scores": scores})

    def _authorized(self) -> bool:
        if self.server.token is None:
            return True
        expected = f"Bearer {self.server.token}".encode()
        return hmac.compare_digest(self.headers.get("Authorization", "").encode(), expected)

    def log_message(self, format: str, *args) -> None:  # one quiet line per request is enough  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)


class _TooLarge(Exception):
    pass


def _body_length(values: list[str]) -> int:
    """The body's length from the request's ``Content-Length`` values (none: an empty body); ``ValueError`` for
    anything but one number of bytes, ``_TooLarge`` past ``MAX_BODY_BYTES``."""
    if not values:
        return 0
    if len(values) > 1 or not re.fullmatch(r"[0-9]{1,20}", values[0].strip()):
        raise ValueError(f"Content-Length must be one number of bytes, got {', '.join(map(repr, values))}")
    length = int(values[0])
    if length > MAX_BODY_BYTES:
        raise _TooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes; send smaller batches")
    return length


def build_server(path: str, host: str, port: int, token: Optional[str] = None, **options) -> RewardModelServer:
    """Load the reward model at ``path`` (options as the ``reward-model`` reward's) and bind the server; with a
    ``token``, only requests that send it as a bearer token are scored."""
    from iterframe.plugins.components import RunContext

    from .reward import RewardModelReward

    reward = RewardModelReward(RewardModelReward.Options(path=path, **options))
    reward.setup(RunContext(trainer=None, tokenizer=None))
    return RewardModelServer((host, port), reward, token=token or None)


@click.group()
def cli() -> None:
    """The iterframe-reward-model plugin's commands."""


@cli.command()
@click.option("--path", required=True, metavar="PATH", help="Folder or Hub id of the reward model.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535), help="0: a free port.")
@click.option("--label", default=0, show_default=True, help="Index of the logit used as the score.")
@click.option("--batch-size", default=8, show_default=True, help="Texts per forward pass.")
@click.option(
    "--max-length", type=int, default=None, help="Truncate longer texts to this many tokens (the end kept)."
)
@click.option("--device", default=None, help="cpu, cuda, cuda:1... [cpu]")
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    default=None,
    help=f"Score only requests sending 'Authorization: Bearer TOKEN' (the http reward's token_env). Prefer "
    f"setting {TOKEN_ENV}: a flag shows in the process list.",
)
@click.option("--verbose", is_flag=True, help="Log every request.")
def serve(path: str, host: str, port: int, verbose: bool, token: Optional[str], **options: Optional[Any]) -> None:
    """Serve a reward model: POST {"query": [texts]} -> {"rewards": [scores]} (OpenRLHF's protocol)."""
    try:
        server = build_server(path, host, port, token=token, **options)
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    server.verbose = verbose
    click.echo(f'Serving {path} on {server.url} (POST {{"query": [...]}} -> {{"rewards": [...]}})', nl=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    cli()
