"""``iterframe-reward-model serve``: the real server process on a free port, scored through with the ``http``
reward, gives the scores the in-process ``reward-model`` reward gives."""

from __future__ import annotations

import json
import subprocess
import sys
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
