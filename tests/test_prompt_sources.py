"""Prompt sources: a plugin's ``register_prompt_sources`` hook makes ``--dataset NAME:SPEC`` load its rows."""

from __future__ import annotations

import pytest

from iterframe import hookimpl
from iterframe.loop.datasets import DatasetSettings, PromptSetError, load_prompt_sets
from iterframe.plugins.prompt_sources import find_prompt_source, prompt_sources

SPECS: list[str] = []


def counting(spec: str):
    """``count:N`` -> N prompts ``"1+0="``... with references; ``count:bad`` is refused."""
    SPECS.append(spec)
    if not spec.isdigit():
        raise ValueError(f"{spec!r} is not a number of prompts")
    return [{"prompt": f"{index}+0=", "reference": str(index), "level": index % 2} for index in range(int(spec))]


class CountingSource:
    @hookimpl
    def register_prompt_sources(self, register):
        register("count", counting, "N addition prompts")
        register("split-count", lambda spec: {"train": counting(spec), "test": counting("2")})
        register("broken", lambda spec: "not rows")


def load(path: str, **settings):
    return load_prompt_sets(DatasetSettings(path=path, **settings))


def test_a_registered_source_loads_its_rows_as_prompts(register_plugin):
    register_plugin(CountingSource(), name="counting")
    train, eval_prompts = load("count:3")
    assert [(r.prompt, r.reference, r.extra) for r in train] == [
        ("0+0=", "0", {"level": 0}),
        ("1+0=", "1", {"level": 1}),
        ("2+0=", "2", {"level": 0}),
    ]
    assert eval_prompts is None and SPECS[-1] == "3"


def test_a_source_may_return_splits(register_plugin):
    register_plugin(CountingSource(), name="counting")
    train, held_out = load("split-count:4", eval_split="test")
    assert len(train) == 4 and len(held_out) == 2


def test_a_source_that_refuses_its_spec_is_named(register_plugin):
    register_plugin(CountingSource(), name="counting")
    with pytest.raises(PromptSetError, match=r"prompt source 'count' \(plugin 'counting'\) cannot load 'bad'"):
        load("count:bad")


def test_a_source_that_returns_no_rows_is_named(register_plugin):
    register_plugin(CountingSource(), name="counting")
    with pytest.raises(PromptSetError, match=r"prompt source 'broken' .* returned str for split 'train'"):
        load("broken:x")


def test_sources_are_listed_and_found_only_by_registered_name(register_plugin):
    register_plugin(CountingSource(), name="counting")
    assert prompt_sources()["count"].description == "N addition prompts"
    assert prompt_sources()["count"].plugin == "counting"
    assert find_prompt_source("count:5")[1] == "5"
    assert find_prompt_source("nothing:5") is None and find_prompt_source("data/prompts.jsonl") is None


def test_a_local_file_wins_over_a_source_of_the_same_name(register_plugin, tmp_path, monkeypatch):
    register_plugin(CountingSource(), name="counting")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "count:1").write_text('{"prompt": "from the file"}\n')
    with pytest.raises(PromptSetError, match="unknown file type"):
        load("count:1")  # read as the (extension-less) local file, not the source


def test_two_sources_with_one_name_are_refused(register_plugin):
    register_plugin(CountingSource(), name="counting")
    register_plugin(CountingSource(), name="counting-again")
    with pytest.raises(ValueError, match="Two prompt sources are named 'count'"):
        prompt_sources()
