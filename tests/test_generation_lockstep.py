"""Generation on several processes: a process whose rows are finished keeps joining the others' forward passes
(lockstep, for sharded models), every process samples as many batches, each process has its own sampling stream,
and the generator's position in its seed sequence survives a resume."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from iterframe.generation import decoding, lockstep
from iterframe.generation.decoding import DecodingSettings, decode
from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext
from iterframe.testing import build_char_tokenizer, build_tiny_causal_lm

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 +=?:.<>/\n"
PROMPTS = ["a", "what is 12 + 7?", "abc"]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = build_char_tokenizer(ALPHABET)
    return build_tiny_causal_lm(tokenizer=tokenizer, hidden_size=32, num_layers=1)


@pytest.fixture
def forward_count(model_and_tokenizer):
    model, _ = model_and_tokenizer
    count = [0]
    handle = model.register_forward_pre_hook(lambda module, args: count.__setitem__(0, count[0] + 1))
    yield count
    handle.remove()


def peers_finish_after(monkeypatch, module, unfinished_checks: int) -> list[bool]:
    """Stand in for the all-reduce: the other processes report unfinished for the first ``unfinished_checks``
    checks. Returns what this process reported at each check."""
    reported = []

    def all_processes_finished(finished_here, device):
        reported.append(finished_here)
        return finished_here and len(reported) > unfinished_checks

    monkeypatch.setattr(module, "all_processes_finished", all_processes_finished)
    return reported


def sample(model, tokenizer, lockstep_on: bool):
    encoded = tokenizer(["abc", "q"], return_tensors="pt", padding=True, padding_side="left")
    settings = DecodingSettings(max_new_tokens=8, eos_token_id=tokenizer.eos_token_id, pad_token_id=0)
    torch.manual_seed(0)
    with torch.inference_mode():
        return decode(
            model,
            encoded["input_ids"],
            encoded["attention_mask"],
            2,
            settings,
            stopped=lambda tokens: True,  # every row is finished after its first token
            lockstep=lockstep_on,
        )


def test_a_finished_process_joins_the_others_forward_passes_until_all_are_done(
    model_and_tokenizer, forward_count, monkeypatch
):
    model, tokenizer = model_and_tokenizer
    alone = sample(model, tokenizer, lockstep_on=False)
    passes_alone = forward_count[0]
    reported = peers_finish_after(monkeypatch, decoding, unfinished_checks=3)
    in_lockstep = sample(model, tokenizer, lockstep_on=True)
    assert passes_alone == 1  # the prompt pass; every row finished at its first token
    assert forward_count[0] - passes_alone == 1 + 3  # the prompt pass, then one pass per unfinished check
    assert reported == [True] * 4
    assert torch.equal(in_lockstep, alone)  # the extra passes write nothing


def test_without_lockstep_no_process_waits_for_the_others(model_and_tokenizer, monkeypatch):
    model, tokenizer = model_and_tokenizer
    reported = peers_finish_after(monkeypatch, decoding, unfinished_checks=3)
    sample(model, tokenizer, lockstep_on=False)
    assert reported == []


def test_one_process_never_needs_lockstep(model_and_tokenizer):
    model, _ = model_and_tokenizer
    assert not lockstep.needs_lockstep(model)


# --- the hf generator ----------------------------------------------------------------------------------------


def make_generator(model_and_tokenizer, process_index=0, **options):
    model, tokenizer = model_and_tokenizer
    generator = create_component("generator", "hf", {"max_new_tokens": 6, "seed": 0, "batch_size": 2, **options})
    trainer = types.SimpleNamespace(model=model, accelerator=types.SimpleNamespace(process_index=process_index))
    generator.setup(RunContext(trainer=trainer, tokenizer=tokenizer, seed=123))
    return generator


def texts(completions):
    return [[completion.text for completion in prompt_completions] for prompt_completions in completions]


def test_each_process_samples_from_its_own_stream(model_and_tokenizer):
    first = texts(make_generator(model_and_tokenizer, process_index=0).generate(PROMPTS, 4))
    again = texts(make_generator(model_and_tokenizer, process_index=0).generate(PROMPTS, 4))
    second = texts(make_generator(model_and_tokenizer, process_index=1).generate(PROMPTS, 4))
    assert first == again
    assert second != first


def test_a_restored_generator_continues_the_seed_sequence(model_and_tokenizer):
    original = make_generator(model_and_tokenizer)
    original.generate(PROMPTS, 2)
    state = original.state_dict()
    expected = texts(original.generate(PROMPTS, 2))

    restored = make_generator(model_and_tokenizer)
    restored.load_state_dict(state)
    assert state == {"calls": 2}  # three prompts in batches of two
    assert texts(restored.generate(PROMPTS, 2)) == expected
    assert texts(make_generator(model_and_tokenizer).generate(PROMPTS, 2)) != expected  # a fresh one restarts


def test_in_lockstep_a_process_with_fewer_batches_samples_extra_ones(model_and_tokenizer, monkeypatch):
    expected = texts(make_generator(model_and_tokenizer).generate(PROMPTS[:1], 2))
    prompt_passes = []
    model, _ = model_and_tokenizer
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: prompt_passes.append(kwargs["input_ids"].shape[1] > 1), with_kwargs=True
    )
    # the generator imports these when it generates
    monkeypatch.setattr(lockstep, "needs_lockstep", lambda model: True)
    monkeypatch.setattr(lockstep, "most_across_processes", lambda count, device: 3)  # another process has 3
    peers_finish_after(monkeypatch, decoding, unfinished_checks=0)
    generator = make_generator(model_and_tokenizer)
    try:
        completions = texts(generator.generate(PROMPTS[:1], 2))
    finally:
        handle.remove()
    assert completions == expected  # the extra batches' output is dropped
    assert sum(prompt_passes) == 3  # one prompt pass per batch: its own and two extra
    assert generator.calls == 3


# --- for real: two processes, an FSDP2-sharded model ---------------------------------------------------------

LOCKSTEP_WORKER = os.path.join(os.path.dirname(__file__), "scripts", "lockstep_generation_worker.py")


@pytest.mark.slow
@pytest.mark.parametrize(
    "engine",
    [
        "fsdp2",
        pytest.param(
            "zero3",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"
            ),
        ),
    ],
)
def test_uneven_shares_and_finishing_generate_together_on_a_sharded_model(engine, tiny_llama_path, tmp_path):
    # Without the lockstep (the worker's --no-lockstep) the processes fall out of step: gloo stops on a
    # collective mismatch, NCCL would wait forever; the timeout bounds either.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [LOCKSTEP_WORKER, tiny_llama_path, str(tmp_path), engine]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(report["lockstep"] and report["decoding_loop"] for report in reports)
    assert reports[0]["forward_passes"] == reports[1]["forward_passes"]
    assert reports[0]["batches"] == reports[1]["batches"] == 2  # process 1 samples one extra batch
    own_tokens, other_tokens = reports[0]["num_tokens"]
    assert [len(row) for row in own_tokens] == [2, 2, 2] and [len(row) for row in other_tokens] == [2]
    assert max(map(max, own_tokens)) < max(map(max, other_tokens))  # process 0 finished first
