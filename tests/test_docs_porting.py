"""docs/plugins.md, "Porting from TRL, ms-swift, verl and OpenRLHF": its reward files score as they say through the
trl, verl and openrlhf rewards, and its commands run as written (with a tiny model, one short iteration each)."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from iterframe.cli import cli
from iterframe.loop.stages import score_samples
from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext, Sample

DOCS = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
SECTION = DOCS[DOCS.index("## Porting from TRL, ms-swift, verl and OpenRLHF") :]
SECTION = SECTION[: SECTION.index("\n## ", 1)]
REWARDS = re.search(r'^```python title="my_rewards.py"\n(.*?)^```$', SECTION, re.M | re.S).group(1)
OTHER_REWARDS = re.search(r'^```python title="other_rewards.py"\n(.*?)^```$', SECTION, re.M | re.S).group(1)
COMMANDS = [
    shlex.split(command.replace("\\\n", " "))
    for command in re.search(r"^```bash\n(.*?)^```$", SECTION, re.M | re.S).group(1).split("\niterframe ")
]


@pytest.fixture
def rewards_module(tmp_path, monkeypatch):
    """The documented my_rewards.py, importable as ``my_rewards``."""
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("my_rewards", None)


def samples(prompt, *completions, solution="19"):
    return [
        Sample(iteration=0, prompt_id=0, prompt=prompt, completion=text, info={"extra": {"solution": solution}})
        for text in completions
    ]


def score(function: str, batch) -> list:
    reward = create_component("reward", "trl", {"function": f"my_rewards:{function}"})
    reward.setup(RunContext(trainer=None, tokenizer=None, config={"dataset": {"reference_column": None}}))
    return list(reward.score(batch))


COMPLETIONS = ("12 + 7 = 19\n#### 19", "#### 20", "no answer")


@pytest.mark.parametrize(
    "prompt", ["12 + 7 = ?", [{"role": "user", "content": "12 + 7 = ?"}]], ids=["text", "chat"]
)
def test_the_documented_trl_and_ms_swift_rewards_score_through_the_trl_reward(
    plugin_manager, rewards_module, prompt
):
    batch = samples(prompt, *COMPLETIONS)
    assert score("exact_answer", batch) == [1.0, 0.0, None]
    assert score("weighted", batch) == [1.1, 0.1, None]
    assert score("exact_answer_orm", batch) == [1.0, 0.0, 0.0]


def test_the_documented_verl_openrlhf_and_async_trl_rewards_score_through_their_rewards(
    plugin_manager, rewards_module
):
    (rewards_module / "other_rewards.py").write_text(OTHER_REWARDS)
    batch = samples("12 + 7 = ?", *COMPLETIONS)
    for sample in batch:
        sample.reference = "19"

    def scored(kind, function):
        reward = create_component("reward", kind, {"function": function, "workers": 0})
        reward.setup(RunContext(trainer=None, tokenizer=None))
        score_samples(reward, batch, iteration=0)
        return [sample.reward for sample in batch], [sample.info.get("reward_metrics") for sample in batch]

    rewards, metrics = scored("verl", "other_rewards.py:compute_score")
    assert rewards == [1.0, 0.0, 0.0]
    assert [m["formatted"] for m in metrics] == [True, True, False]
    rewards, metrics = scored("openrlhf", "other_rewards.py:reward_func")
    assert rewards == [1.0, 0.0, 0.0]
    assert [m["score"] for m in metrics] == [1.0, 0.0, 0.0]
    assert [m["accuracy"] for m in metrics] == pytest.approx([1 / 3] * 3)
    assert scored("trl", "other_rewards.py:judged_answer")[0] == [1.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory) -> str:
    """A tiny causal LM whose tokenizer has a chat template (the documented prompts are chat messages)."""
    from iterframe.testing import build_tiny_causal_lm, train_bpe_tokenizer

    template = (
        "{% for message in messages %}<{{ message['role'] }}>{{ message['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    path = str(tmp_path_factory.mktemp("models") / "tiny-chat")
    build_tiny_causal_lm(path, train_bpe_tokenizer(chat_template=template))
    return path


def test_the_documented_commands_run(plugin_manager, rewards_module, tiny_chat_model):
    rows = [
        {"messages": [{"role": "user", "content": f"What is {a} + 1?"}], "solution": str(a + 1)} for a in range(2)
    ]
    (rewards_module / "math.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert [args[0] for args in COMMANDS] == ["iterframe", "rescore", "run"]
    COMMANDS[0] = COMMANDS[0][1:]
    shortened = ["--iterations", "1", "--prompts-per-iteration", "2", "--set", "generator.max_new_tokens=4"]
    for args in COMMANDS:
        args = [tiny_chat_model if arg.startswith("Qwen/") else arg for arg in args]
        if args[0] == "run":
            args += [*shortened, "--quiet"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, f"iterframe {shlex.join(args)}:\n{result.output}"
    assert json.loads((rewards_module / "runs" / "rft-exact" / "run.json").read_text())["rescored_from"]
    assert (rewards_module / "runs" / "offline" / "metrics.jsonl").read_text().count("\n") == 1
