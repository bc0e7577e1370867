"""``iterframe-reward-model serve``: the real server process on a free port, scored through with the ``http``
reward, gives the scores the in-process ``reward-model`` reward gives."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext, Sample
from iterframe.plugins.reward_pool import score_outcomes

SAMPLES = [
    Sample(0, 0, "Question: what is 12 + 7? Answer:", " 19"),
    Sample(0, 0, "Question: what is 12 + 7? Answer:", " the lazy dog jumps"),
    Sample(0, 1, "The quick", " brown fox"),
]


@pytest.fixture(scope="module")
def server_url(tiny_reward_model_path):
    """``python -m iterframe_reward_model serve --port 0``: the URL it prints once it listens."""
    command = [sys.executable, "-m", "iterframe_reward_model", "serve", "--path", tiny_reward_model_path]
    process = subprocess.Popen([*command, "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"Serving {tiny_reward_model_path} on http://127.0.0.1:"), line
        yield line.split(" on ", 1)[1].split()[0]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_scores_through_the_server_match_the_model_in_process(plugin_manager, server_url, tiny_reward_model_path):
    from iterframe_reward_model import RewardModelReward

    http = create_component("reward", "http", {"url": f"{server_url}/get_reward", "batch_size": 2})
    http.setup(RunContext(trainer=None, tokenizer=None))
    served = [outcome.score for outcome in score_outcomes("Reward 'http'", http.score(SAMPLES), len(SAMPLES))]
    local = RewardModelReward(RewardModelReward.Options(path=tiny_reward_model_path))
    local.setup(RunContext(trainer=None, tokenizer=None))
    assert served == pytest.approx(local.score(SAMPLES), abs=1e-5)
    assert len(set(served)) == 3


def test_health_answers_ok(server_url):
    with urllib.request.urlopen(f"{server_url}/health", timeout=30) as response:
        assert json.loads(response.read()) == {"status": "ok"}


def test_a_body_outside_the_protocol_gets_400_with_the_reason(server_url):
    request = urllib.request.Request(f"{server_url}/get_reward", data=b'{"queries": ["x"]}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert "must be a JSON object" in json.loads(caught.value.read())["error"]


def test_serve_without_a_model_says_so(tmp_path):
    command = [sys.executable, "-m", "iterframe_reward_model", "serve", "--path", str(tmp_path / "none")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "cannot load a sequence-classification model" in result.stderr


def test_serve_is_also_an_iterframe_command(monkeypatch):
    from click.testing import CliRunner

    from iterframe.cli import cli
    from iterframe.plugins import reset_plugin_manager

    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", "iterframe-reward-model")
    reset_plugin_manager()
    try:
        result = CliRunner().invoke(cli, ["reward-model", "serve", "--help"])
    finally:
        reset_plugin_manager()
    assert result.exit_code == 0, result.output
    assert "OpenRLHF's protocol" in result.output and "--port" in result.output


class LengthReward:
    """Scores a text with its length: a reward for the server that needs no model."""

    def score_texts(self, texts):
        return [float(len(text)) for text in texts]


@pytest.fixture
def local_server():
    """A :class:`RewardModelServer` in this process on a free loopback port; ``token`` as given."""
    from iterframe_reward_model.serve import RewardModelServer

    servers = []

    def start(token=None):
        server = RewardModelServer(("127.0.0.1", 0), LengthReward(), **({"token": token} if token else {}))
        server.verbose = False
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def raw_post(server, head: str, body: bytes = b'{"query": ["ab"]}') -> tuple[int, dict]:
    """POST with the headers ``head`` as written, the socket left open for writing: the status and JSON answer."""
    with socket.create_connection(server.server_address[:2], timeout=5) as connection:
        connection.sendall(f"POST /get_reward HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize(
    "head, status",
    [
        ("Content-Length: -1\r\n", 400),
        ("Content-Length: abc\r\n", 400),
        ("Content-Length: 1_7\r\n", 400),
        ("Content-Length: 17\r\nContent-Length: 3\r\n", 400),
        ("Content-Length: 67108865\r\n", 413),
    ],
    ids=["negative", "not-a-number", "underscores", "two-lengths", "over-64-mib"],
)
def test_a_content_length_that_is_not_a_size_within_the_limit_gets_an_error_reply(local_server, head, status):
    code, answer = raw_post(local_server(), head)
    assert code == status
    assert ("Content-Length must be one number of bytes" if status == 400 else "larger than 67108864") in (
        answer["error"]
    )


def test_a_valid_content_length_is_scored(local_server):
    assert raw_post(local_server(), "Content-Length: 17\r\n") == (200, {"rewards": [2.0], "scores": [2.0]})


def test_with_a_token_only_requests_bearing_it_are_scored(plugin_manager, local_server, monkeypatch):
    server = local_server(token="s3cret")
    url = f"http://127.0.0.1:{server.server_address[1]}/get_reward"

    def scores(**options):
        http = create_component("reward", "http", {"url": url, "retries": 0, **options})
        http.setup(RunContext(trainer=None, tokenizer=None))
        return score_outcomes("Reward 'http'", http.score(SAMPLES[2:]), 1)[0]

    monkeypatch.setenv("REWARD_TOKEN", "s3cret")
    assert scores(token_env="REWARD_TOKEN").score == float(len("The quick brown fox"))
    monkeypatch.setenv("REWARD_TOKEN", "wrong")
    assert "HTTP 401" in scores(token_env="REWARD_TOKEN").message
    assert "HTTP 401" in scores().message


def test_serve_takes_its_token_from_the_flag_or_the_environment(monkeypatch):
    from click.testing import CliRunner
    from iterframe_reward_model import serve as serve_module

    tokens = []

    def no_model(path, host, port, token=None, **options):
        tokens.append(token)
        raise ValueError("no model here")

    monkeypatch.setattr(serve_module, "build_server", no_model)
    monkeypatch.setenv(serve_module.TOKEN_ENV, "from-env")
    CliRunner().invoke(serve_module.cli, ["serve", "--path", "m"])
    CliRunner().invoke(serve_module.cli, ["serve", "--path", "m", "--token", "from-flag"])
    assert tokens == ["from-env", "from-flag"]
