"""The ``http`` reward against small local servers: the protocol, batches, retries, timeouts and failed samples."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from iterframe.plugins import ComponentOptionError, create_component
from iterframe.plugins.components import RunContext, Sample
from iterframe.plugins.reward_pool import score_outcomes


class ScriptedServer(ThreadingHTTPServer):
    """Answers each POST with the next ``(status, body)`` of ``script`` (the last one repeats); records the
    bodies and headers it got. A body ``"length"`` answers one reward per query: the query's length."""

    daemon_threads = True

    def __init__(self, script):
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.script, self.requests, self.headers_seen = list(script), [], []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/get_reward"


class _ScriptedHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        self.server.headers_seen.append(dict(self.headers))
        status, answer = self.server.script.pop(0) if len(self.server.script) > 1 else self.server.script[0]
        if answer == "length":
            answer = {"rewards": [float(len(query)) for query in body["query"]]}
        data = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(*script):
        server = ScriptedServer(script)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def http_reward(url, **options):
    reward = create_component("reward", "http", {"url": url, "backoff_s": 0, **options})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    return reward


SAMPLES = [Sample(0, 0, "1+1=", "2", reference="2"), Sample(0, 1, "2+2=", "five", reference=None)]


def outcomes(reward, samples=SAMPLES):
    return score_outcomes("Reward 'http'", reward.score(samples), len(samples))


def test_posts_queries_prompts_and_labels_and_reads_rewards(plugin_manager, serve):
    server = serve((200, "length"))
    assert [outcome.score for outcome in outcomes(http_reward(server.url))] == [5.0, 8.0]
    assert server.requests == [
        {"query": ["1+1=2", "2+2=five"], "prompts": ["1+1=", "2+2="], "labels": ["2", None]}
    ]


def test_samples_go_in_batches_of_batch_size(plugin_manager, serve):
    server = serve((200, "length"))
    samples = [Sample(0, index, "p", "x" * index) for index in range(5)]
    assert [outcome.score for outcome in outcomes(http_reward(server.url, batch_size=2), samples)] == [
        1.0,
        2.0,
        3.0,
        4.0,
        5.0,
    ]
    assert [len(request["query"]) for request in server.requests] == [2, 2, 1]


def test_null_rewards_are_samples_without_a_score(plugin_manager, serve):
    server = serve((200, {"rewards": [1.0, None]}))
    result = outcomes(http_reward(server.url))
    assert result[0].score == 1.0 and result[1].failure == "no-score"


def test_server_errors_are_retried(plugin_manager, serve):
    server = serve((503, "busy"), (500, "oops"), (200, "length"))
    assert [outcome.score for outcome in outcomes(http_reward(server.url, retries=2))] == [5.0, 8.0]
    assert len(server.requests) == 3


def test_a_batch_that_keeps_failing_fails_its_samples_and_the_next_batch_is_tried(plugin_manager, serve):
    server = serve((500, "oops"), (500, "oops"), (200, "length"))
    result = outcomes(http_reward(server.url, retries=1, batch_size=1))
    assert result[0].failure == "error"
    assert (
        result[0].message
        == f"RewardServerError: {server.url} answered HTTP 500 Internal Server Error (2 attempts)"
    )
    assert result[1].score == 8.0


def test_a_client_error_is_not_retried(plugin_manager, serve):
    server = serve((404, "no such path"))
    result = outcomes(http_reward(server.url, retries=3))
    assert result[0].failure == "error" and "HTTP 404" in result[0].message
    assert len(server.requests) == 1


def test_an_answer_outside_the_protocol_fails_the_batch(plugin_manager, serve):
    server = serve((200, {"rewards": [1.0]}), (200, "not json"), (200, {"rewards": ["high", 1]}))
    reward = http_reward(server.url)
    first = outcomes(reward)
    assert first[0].failure == "error" and "answered 1 scores for 2 queries" in first[0].message
    assert "answered text that is not JSON" in outcomes(reward)[0].message
    third = outcomes(reward)
    assert third[0].failure == "error" and "scores must be numbers or null" in third[0].message
    assert third[1].score == 1.0


def test_a_server_that_does_not_answer_times_out(plugin_manager):
    with socket.socket() as listener:  # accepts connections (the backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        result = outcomes(http_reward(url, timeout_s=0.3, retries=1))
    assert result[0].failure == "timeout"
    assert result[0].message == f"TimeoutError: {url} gave no answer within timeout_s=0.3 s (2 attempts)"


def test_a_server_that_is_not_there_is_an_error(plugin_manager):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/"  # bound, not listening: connections are refused
        result = outcomes(http_reward(url, retries=0))
    assert result[0].failure == "error" and f"cannot reach {url}" in result[0].message


def test_a_token_is_sent_from_the_environment(plugin_manager, serve, monkeypatch):
    server = serve((200, "length"))
    monkeypatch.setenv("REWARD_TOKEN", "s3cret")
    outcomes(http_reward(server.url, token_env="REWARD_TOKEN"))
    assert server.headers_seen[0]["Authorization"] == "Bearer s3cret"


def test_a_missing_token_variable_is_refused_at_setup(plugin_manager, monkeypatch):
    monkeypatch.delenv("REWARD_TOKEN", raising=False)
    reward = create_component("reward", "http", {"url": "http://127.0.0.1:1/", "token_env": "REWARD_TOKEN"})
    with pytest.raises(ValueError, match="token_env='REWARD_TOKEN', but that environment variable is not set"):
        reward.setup(RunContext(trainer=None, tokenizer=None))


def test_the_url_must_be_http(plugin_manager):
    with pytest.raises(ComponentOptionError, match="url must start with http:// or https://"):
        create_component("reward", "http", {"url": "localhost:5000"})


class RawServer:
    """A loopback server writing raw bytes: the n-th connection gets ``replies[n]`` (the last one repeats), its
    bytes from ``trickle_from`` on one at a time ``delay_s`` apart; records each request's head and body."""

    def __init__(self, *replies, trickle_from=None, delay_s=0.05):
        self.replies, self.trickle_from, self.delay_s = list(replies), trickle_from, delay_s
        self.requests = []  # (request line and headers, body)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def origin(self):
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self):
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                self._answer(connection, self.replies.pop(0) if len(self.replies) > 1 else self.replies[0])

    def _answer(self, connection, reply):
        data = b""
        while b"\r\n\r\n" not in data:
            data += connection.recv(65536)
        head, body = data.split(b"\r\n\r\n", 1)
        length = int(
            next((line.split(b":")[1] for line in head.split(b"\r\n") if b"content-length" in line.lower()), 0)
        )
        while len(body) < length:
            body += connection.recv(65536)
        self.requests.append((head.decode(), body))
        cut = len(reply) if self.trickle_from is None else self.trickle_from
        try:
            connection.sendall(reply[:cut])
            for index in range(cut, len(reply)):
                if self.stopped.wait(self.delay_s):
                    return
                connection.sendall(reply[index : index + 1])
        except OSError:  # the client gave up
            pass

    def close(self):
        self.stopped.set()
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def raw_server():
    servers = []

    def start(*replies, **options):
        servers.append(RawServer(*replies, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def reply(body: bytes, status: str = "200 OK", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


SCORES = json.dumps({"rewards": [1.0, 2.0]}).encode()


@pytest.mark.parametrize(
    "answer, attempts, message",
    [
        (b"garbage\r\n\r\n", 2, "malformed reply: BadStatusLine"),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"rewards"', 2, "malformed reply: IncompleteRead"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", 2, "malformed reply: IncompleteRead"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: nonsense\r\n\r\n", 1, "answered text that is not JSON"),
        (reply(b"\x80\x81\x82\x83"), 1, "answered text that is not JSON"),
        (reply(b"[" * 100_000), 1, "answered text that is not JSON"),
    ],
    ids=["bad-status-line", "incomplete-read", "no-body", "bad-length", "not-utf8", "nested-too-deep"],
)
def test_a_malformed_reply_fails_its_batch_after_retries_and_never_the_run(
    plugin_manager, raw_server, answer, attempts, message
):
    server = raw_server(answer)
    result = outcomes(http_reward(server.origin + "/get_reward", retries=1, timeout_s=5))
    assert [outcome.failure for outcome in result] == ["error", "error"]
    assert message in result[0].message
    assert len(server.requests) == attempts


@pytest.mark.parametrize("trickle_from", [0, len(reply(SCORES)) - len(SCORES)], ids=["headers", "body"])
def test_timeout_s_is_a_deadline_for_the_whole_request_not_for_each_read(plugin_manager, raw_server, trickle_from):
    server = raw_server(reply(SCORES), trickle_from=trickle_from, delay_s=0.05)  # the whole reply takes > 1 s
    started = time.monotonic()
    result = outcomes(http_reward(server.origin + "/get_reward", timeout_s=0.4, retries=0))
    assert time.monotonic() - started < 1.0
    assert result[0].failure == "timeout" and "gave no answer within timeout_s=0.4 s" in result[0].message


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "read-until-close"])
def test_a_reply_longer_than_max_reply_bytes_fails_its_batch(plugin_manager, raw_server, announced):
    body = json.dumps({"rewards": [1.0, 2.0], "padding": "x" * 5000}).encode()
    answer = reply(body) if announced else b"HTTP/1.0 200 OK\r\n\r\n" + body
    server = raw_server(answer)
    result = outcomes(http_reward(server.origin + "/get_reward", max_reply_bytes=4096, retries=2))
    assert result[0].failure == "error" and "answered more than max_reply_bytes=4096 bytes" in result[0].message
    assert len(server.requests) == 1
    assert [o.score for o in outcomes(http_reward(server.origin + "/get_reward", max_reply_bytes=6000))] == [1, 2]


@pytest.mark.parametrize(
    "status", ["301 Moved Permanently", "302 Found", "303 See Other", "307 Temporary Redirect"]
)
def test_a_redirect_to_another_origin_is_not_followed_and_never_gets_the_token(
    plugin_manager, raw_server, monkeypatch, status
):
    elsewhere = raw_server(reply(SCORES))
    server = raw_server(reply(b"", status, f"Location: {elsewhere.origin}/steal\r\n"))
    monkeypatch.setenv("REWARD_TOKEN", "s3cret")
    result = outcomes(http_reward(server.origin + "/get_reward", token_env="REWARD_TOKEN", retries=2))
    assert elsewhere.requests == []
    assert result[0].failure == "error"
    assert f"redirected (HTTP {status[:3]}) to another origin, {elsewhere.origin}/steal" in result[0].message
    assert len(server.requests) == 1


def test_a_same_origin_307_redirect_is_followed_with_the_same_post_and_token(
    plugin_manager, raw_server, monkeypatch
):
    server = raw_server(reply(b"", "307 Temporary Redirect", "Location: /v2/get_reward\r\n"), reply(SCORES))
    monkeypatch.setenv("REWARD_TOKEN", "s3cret")
    result = outcomes(http_reward(server.origin + "/get_reward", token_env="REWARD_TOKEN"))
    assert [outcome.score for outcome in result] == [1.0, 2.0]
    (first_head, first_body), (second_head, second_body) = server.requests
    assert second_head.startswith("POST /v2/get_reward ") and second_body == first_body
    assert "Authorization: Bearer s3cret" in second_head


def test_a_redirect_that_would_turn_the_post_into_a_get_is_not_followed(plugin_manager, raw_server):
    server = raw_server(reply(b"", "302 Found", "Location: /v2/get_reward\r\n"), reply(SCORES))
    result = outcomes(http_reward(server.origin + "/get_reward"))
    assert result[0].failure == "error" and "would turn the POST into a GET" in result[0].message
    assert len(server.requests) == 1
