"""The separately installed ``iterframe-reward-model`` package: found through its entry point, listed, blocked by
the allow-list, and scoring with a tiny sequence-classification model built from a config.

It must be installed first: ``pip install -e plugins/iterframe-reward-model --no-deps`` (tox does this).
"""

from __future__ import annotations

import importlib.metadata
import json

import pytest
import torch
from click.testing import CliRunner

from iterframe.cli import cli
from iterframe.plugins import (
    ComponentOptionError,
    UnknownComponentError,
    create_component,
    get_component_class,
    list_components,
    reset_plugin_manager,
)
from iterframe.plugins.components import RunContext, Sample

DISTRIBUTION = "iterframe-reward-model"


@pytest.fixture(scope="module", autouse=True)
def installed_distribution():
    try:
        return importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{DISTRIBUTION} is not installed; run `pip install -e plugins/{DISTRIBUTION} --no-deps`.")


@pytest.fixture
def plugin_loaded(monkeypatch):
    """The plugin manager as a user has it: only this distribution allowed from the installed entry points."""
    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", DISTRIBUTION)
    reset_plugin_manager()
    try:
        yield
    finally:
        reset_plugin_manager()


SAMPLES = [
    Sample(iteration=0, prompt_id=0, prompt="Question: what is 12 + 7? Answer:", completion=" 19"),
    Sample(iteration=0, prompt_id=0, prompt="Question: what is 12 + 7? Answer:", completion=" the lazy dog jumps"),
    Sample(iteration=0, prompt_id=1, prompt="The quick", completion=" brown fox"),
]


def direct_scores(path, texts):
    """Scores computed one text at a time (no padding) straight from the saved model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    with torch.inference_mode():
        return [model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item() for text in texts]


def test_the_entry_point_is_declared_in_the_iterframe_group(installed_distribution):
    entry_points = [ep for ep in installed_distribution.entry_points if ep.group == "iterframe"]
    assert [(ep.name, ep.value) for ep in entry_points] == [("reward_model", "iterframe_reward_model")]


def test_discovered_through_its_entry_point(plugin_loaded):
    component_class = get_component_class("reward", "reward-model")
    assert component_class.__module__ == "iterframe_reward_model.reward"
    (entry,) = [entry for entry in list_components("reward") if entry["name"] == "reward-model"]
    assert (entry["plugin"], entry["distribution"], entry["version"]) == (DISTRIBUTION, DISTRIBUTION, "0.1.0")
    options = [option["name"] for option in entry["options"]]
    assert options == ["path", "label", "batch_size", "max_length", "device"]


def test_listed_by_iterframe_plugins(plugin_loaded):
    result = CliRunner().invoke(cli, ["plugins", "--json"], catch_exceptions=False)
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert listed[DISTRIBUTION]["version"] == "0.1.0"
    assert listed[DISTRIBUTION]["hooks"] == ["register_rewards", "register_commands"]
    assert listed[DISTRIBUTION]["provides"] == {"reward": [{"name": "reward-model", "aliases": []}]}
    shown = CliRunner().invoke(cli, ["plugins", "show", "reward-model"], catch_exceptions=False).stdout
    assert shown.startswith("reward 'reward-model' from iterframe-reward-model 0.1.0")
    assert "  path (str, required)" in shown


@pytest.mark.parametrize("allow_list", ["", "some-other-plugin"])
def test_blocked_by_the_allow_list(monkeypatch, allow_list):
    monkeypatch.setenv("ITERFRAME_LOAD_PLUGINS", allow_list)
    reset_plugin_manager()
    try:
        with pytest.raises(UnknownComponentError, match="No reward named 'reward-model'"):
            get_component_class("reward", "reward-model")
        listed = json.loads(CliRunner().invoke(cli, ["plugins", "--json"], catch_exceptions=False).stdout)
        assert DISTRIBUTION not in [entry["name"] for entry in listed]
    finally:
        reset_plugin_manager()


def test_scores_samples_with_the_model_loaded_from_the_path(plugin_loaded, tiny_reward_model_path):
    reward = create_component("reward", "reward-model", {"path": tiny_reward_model_path, "batch_size": "2"})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    scores = reward.score(SAMPLES)
    expected = direct_scores(tiny_reward_model_path, [sample.prompt + sample.completion for sample in SAMPLES])
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(scores)) == 3


def test_scores_do_not_depend_on_batching(plugin_loaded, tiny_reward_model_path):
    scores = []
    for batch_size in (1, 3):
        reward = create_component(
            "reward", "reward-model", {"path": tiny_reward_model_path, "batch_size": batch_size}
        )
        reward.setup(RunContext(trainer=None, tokenizer=None))
        scores.append(reward.score(SAMPLES))
    assert scores[0] == pytest.approx(scores[1], abs=1e-5)


def test_chat_prompts_are_scored_with_contents_joined_when_there_is_no_template(
    plugin_loaded, tiny_reward_model_path
):
    reward = create_component("reward", "reward-model", {"path": tiny_reward_model_path})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    chat = Sample(
        iteration=0, prompt_id=0, prompt=[{"role": "user", "content": "what is 12 + 7?"}], completion="19"
    )
    (score,) = reward.score([chat])
    assert score == pytest.approx(direct_scores(tiny_reward_model_path, ["what is 12 + 7?\n19"])[0], abs=1e-5)


def test_a_label_the_model_does_not_have_is_an_error(plugin_loaded, tiny_reward_model_path):
    reward = create_component("reward", "reward-model", {"path": tiny_reward_model_path, "label": 1})
    with pytest.raises(ValueError, match=r"label=1 but the model .* has 1 label\(s\); use 0..0"):
        reward.setup(RunContext(trainer=None, tokenizer=None))


def test_a_path_without_a_model_is_an_error(plugin_loaded, tmp_path):
    reward = create_component("reward", "reward-model", {"path": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="reward-model: cannot load a sequence-classification model from path="):
        reward.setup(RunContext(trainer=None, tokenizer=None))


def test_path_is_required(plugin_loaded):
    with pytest.raises(ComponentOptionError, match=r"reward 'reward-model': required option\(s\) 'path' not set"):
        create_component("reward", "reward-model")


def test_max_length_keeps_the_end_of_the_text(plugin_loaded, tiny_reward_model_path):
    same_ending = [
        Sample(iteration=0, prompt_id=0, prompt="Question: what is 12 + 7?", completion=" Answer: 19"),
        Sample(iteration=0, prompt_id=1, prompt="The quick brown fox.", completion=" Answer: 19"),
    ]
    scores = {}
    for max_length in (None, 4):
        reward = create_component(
            "reward", "reward-model", {"path": tiny_reward_model_path, "max_length": max_length}
        )
        reward.setup(RunContext(trainer=None, tokenizer=None))
        scores[max_length] = reward.score(same_ending)
    assert scores[None][0] != pytest.approx(scores[None][1], abs=1e-4)
    assert scores[4][0] == pytest.approx(scores[4][1], abs=1e-5)


def test_with_pad_equal_to_eos_each_text_is_scored_at_its_last_token(
    plugin_loaded, tiny_reward_model_path, tmp_path
):
    """A reward model whose pad token is its eos: a text ending in eos is scored at that eos, padded or not, as
    the model scores the text alone at its last token."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model_path)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_path).eval()
    tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.eos_token_id
    tokenizer.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    texts = [
        f"The quick brown fox{tokenizer.eos_token}",
        f"12 + 7 = 19{tokenizer.eos_token} and more",
        "The quick",
    ]

    model.config.pad_token_id = None  # one text, no padding: the score at its last token
    with torch.inference_mode():
        alone = [model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item() for text in texts]
    reward = create_component("reward", "reward-model", {"path": str(tmp_path), "batch_size": 3})
    reward.setup(RunContext(trainer=None, tokenizer=None))
    assert reward.score_texts(texts) == pytest.approx(alone, abs=1e-5)
    assert reward.model.config.pad_token_id == tokenizer.eos_token_id
