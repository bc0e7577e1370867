"""One optimizer update per group of accumulated micro-batches, with the whole token-weighted gradient, on every
engine accelerate drives: DDP, FSDP2 (``fully_shard``) and DeepSpeed ZeRO-1/2/3, run for real with two CPU
processes (gloo) and compared with a one-process plain run. The engines train with their defaults (padding-free,
the model allowing it); the plain run pads its one micro-batch."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.engine import process_sync

WORKER = os.path.join(os.path.dirname(__file__), "scripts", "engine_step_worker.py")
UPDATES = 2
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
#: (engine, gradient_accumulation_steps); accumulation 4 gives every rank 4 micro-batches of 1 sample per update
SPECS = [("ddp", 1), ("ddp", 4), ("fsdp2", 4), ("zero1", 4), ("zero2", 4), ("zero3", 1), ("zero3", 4)]
NEEDS_DEEPSPEED = pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed (in the test extra)")


def _worker_module():
    spec = importlib.util.spec_from_file_location("engine_step_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plain_weights(tiny_llama_path, tmp_path_factory):
    """One process, no engine, every sample in one micro-batch: the update every engine must reproduce."""
    texts = _worker_module().TEXTS
    args = IterativeSFTConfig(
        output_dir=str(tmp_path_factory.mktemp("plain")),
        per_device_train_batch_size=len(texts),
        learning_rate=1e-2,
        max_grad_norm=1.0,
        save_strategy="no",
        padding_free=False,
    )
    trainer = IterativeSFTTrainer(tiny_llama_path, args=args)
    for _ in range(UPDATES):
        trainer.step(texts=texts)
    return {name: value.detach().clone() for name, value in trainer.model.state_dict().items()}


@pytest.fixture(scope="module")
def engine_runs(tiny_llama_path, tmp_path_factory):
    """Every configuration of ``SPECS``, trained in one two-process launch: ``{spec: (rank reports, weights)}``."""
    specs = [spec for spec in SPECS if HAS_DEEPSPEED or not spec[0].startswith("zero")]
    output_dir = tmp_path_factory.mktemp("engines")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER]
    command += [tiny_llama_path, str(output_dir), str(UPDATES)] + [f"{engine}:{steps}" for engine, steps in specs]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=540, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    runs = {}
    for engine, steps in specs:
        reports = [json.loads((output_dir / f"{engine}-{steps}.rank{rank}.json").read_text()) for rank in (0, 1)]
        runs[engine, steps] = (reports, torch.load(output_dir / f"{engine}-{steps}.pt"))
    return runs


def _spec_param(engine: str, steps: int):
    marks = [pytest.mark.slow] + ([NEEDS_DEEPSPEED] if engine.startswith("zero") else [])
    return pytest.param(engine, steps, marks=marks, id=f"{engine}-accumulation{steps}")


EXPECTED = {
    "ddp": ("MULTI_CPU", "whole"),
    "fsdp2": ("FSDP", "dtensor"),
    "zero1": ("DEEPSPEED", "whole"),
    "zero2": ("DEEPSPEED", "whole"),
    "zero3": ("DEEPSPEED", "zero3"),
}


@pytest.mark.parametrize(("engine", "steps"), [_spec_param(*spec) for spec in SPECS])
def test_engine_takes_one_optimizer_step_per_update(engine_runs, engine, steps):
    reports, _ = engine_runs[engine, steps]
    for report in reports:
        assert report["world"] == 2
        assert (report["type"], report["sharding"]) == EXPECTED[engine]
        assert report["updates"] == report["global_step"] == UPDATES
        assert report["padding_free"]  # sharded models are still transformers' own implementations
        if engine.startswith("zero"):  # the DeepSpeed engine's own count of optimizer steps
            assert report["engine_steps"] == UPDATES


@pytest.mark.parametrize(("engine", "steps"), [_spec_param(*spec) for spec in SPECS])
def test_engine_update_equals_one_process_update(engine_runs, plain_weights, engine, steps):
    _, weights = engine_runs[engine, steps]
    assert weights.keys() == plain_weights.keys()
    for name, value in plain_weights.items():
        torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=1e-4, msg=name)


# --- the accumulation boundary, without launching processes -------------------------------------------------


class FakeAccelerator:
    """What ``accumulating`` and ``backward`` read of an ``Accelerator``, recording what they do."""

    def __init__(self, distributed_type: str):
        self.distributed_type = types.SimpleNamespace(value=distributed_type)
        self.sync_flags: list[bool] = []
        self.gradient_state = types.SimpleNamespace(_set_sync_gradients=self.sync_flags.append)
        self.no_sync_calls = 0
        self.backward_kwargs: list[dict] = []

    @contextlib.contextmanager
    def no_sync(self, model):
        self.no_sync_calls += 1
        yield

    def backward(self, loss, **kwargs):
        self.backward_kwargs.append(kwargs)


@pytest.mark.parametrize("closes_update", [False, True])
def test_accumulating_marks_only_the_last_micro_batch_as_the_boundary(closes_update):
    accelerator = FakeAccelerator("DEEPSPEED")
    with process_sync.accumulating(accelerator, model=None, closes_update=closes_update):
        inside = list(accelerator.sync_flags)
    assert inside == [closes_update]
    assert accelerator.sync_flags[-1] is True  # restored for whatever runs next


def test_ddp_and_fsdp_keep_gradients_local_until_the_last_micro_batch():
    accelerator = FakeAccelerator("MULTI_CPU")
    with process_sync.accumulating(accelerator, model=None, closes_update=False):
        pass
    with process_sync.accumulating(accelerator, model=None, closes_update=True):
        pass
    assert accelerator.no_sync_calls == 1


def test_deepspeed_accumulates_without_no_sync():
    accelerator = FakeAccelerator("DEEPSPEED")
    with process_sync.accumulating(accelerator, model=None, closes_update=False):
        pass
    assert accelerator.no_sync_calls == 0  # ZeRO-2/3 refuse no_sync; the engine accumulates by itself


@pytest.mark.parametrize(("distributed_type", "kwargs"), [("DEEPSPEED", {"scale_wrt_gas": False}), ("FSDP", {})])
def test_backward_stops_deepspeed_dividing_the_loss_again(distributed_type, kwargs):
    accelerator = FakeAccelerator(distributed_type)
    process_sync.backward(accelerator, torch.tensor(1.0))
    assert accelerator.backward_kwargs == [kwargs]
