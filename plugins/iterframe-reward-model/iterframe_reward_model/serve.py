"""``iterframe-reward-model serve``: a sequence-classification reward model behind an HTTP endpoint, in the
protocol of OpenRLHF's remote reward models (which iterframe's ``http`` reward speaks):

    POST (any path, e.g. /get_reward)  {"query": ["<prompt + completion>", ...], ...}
    ->                                 {"rewards": [<score>, ...], "scores": [<score>, ...]}

``GET /health`` answers ``{"status": "ok"}``. A body that is not such an object gets HTTP 400 with
``{"error": "..."}``. Requests are answered one at a time by one model.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import click

__all__ = ["RewardModelServer", "cli", "main"]

#: Largest request body accepted, in bytes.
MAX_BODY_BYTES = 64 * 1024 * 1024


class RewardModelServer(ThreadingHTTPServer):
    """An HTTP server scoring queries with a set-up :class:`~iterframe_reward_model.RewardModelReward`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], reward):
        super().__init__(address, _Handler)
        self.reward = reward
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
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._answer(413, {"error": f"the body is larger than {MAX_BODY_BYTES} bytes; send smaller batches"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"null")
            scores = self.server.scores(body)
        except (ValueError, UnicodeDecodeError) as error:
            self._answer(400, {"error": str(error)})
            return
        self._answer(200, {"rewards": scores, "scores": scores})

    def log_message(self, format: str, *args) -> None:  # one quiet line per request is enough  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)


def build_server(path: str, host: str, port: int, **options) -> RewardModelServer:
    """Load the reward model at ``path`` (options as the ``reward-model`` reward's) and bind the server."""
    from iterframe.plugins.components import RunContext

    from .reward import RewardModelReward

    reward = RewardModelReward(RewardModelReward.Options(path=path, **options))
    reward.setup(RunContext(trainer=None, tokenizer=None))
    server = RewardModelServer((host, port), reward)
    server.verbose = False
    return server


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
@click.option("--verbose", is_flag=True, help="Log every request.")
def serve(path: str, host: str, port: int, verbose: bool, **options: Optional[Any]) -> None:
    """Serve a reward model: POST {"query": [texts]} -> {"rewards": [scores]} (OpenRLHF's protocol)."""
    try:
        server = build_server(path, host, port, **options)
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
