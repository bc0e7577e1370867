"""Two CPU processes (gloo DDP) under torchrun: ranks stay in lockstep and updates are token-weighted globally."""

import os
import subprocess
import sys

import pytest
import torch

WORKER = os.path.join(os.path.dirname(__file__), "scripts", "ddp_step_worker.py")


def run_worker(tmp_path, model_path, name, nproc, batch_size, split="even"):
    output = str(tmp_path / f"{name}.pt")
    arguments = [WORKER, model_path, output, str(batch_size), split]
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    else:
        command = [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command + arguments, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return output, result.stdout


@pytest.mark.slow
def test_two_process_update_equals_one_process_update_on_all_samples(tmp_path, tiny_llama_path):
    two, stdout = run_worker(tmp_path, tiny_llama_path, "two", 2, batch_size=3)
    assert "world=2" in stdout and stdout.count("updates=1") == 2
    one, _ = run_worker(tmp_path, tiny_llama_path, "one", 1, batch_size=6)
    two_weights, one_weights = torch.load(two), torch.load(one)
    for name in one_weights:
        torch.testing.assert_close(two_weights[name], one_weights[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_ranks_with_fewer_micro_batches_stay_in_lockstep(tmp_path, tiny_llama_path):
    # batch 1: rank 0 trains 5 micro-batches, rank 1 only 1; rank 1 must pad, not hang or desynchronise.
    output, stdout = run_worker(tmp_path, tiny_llama_path, "uneven", 2, batch_size=1, split="uneven")
    assert stdout.count("updates=5") == 2
    rank0, rank1 = torch.load(output + ".rank0"), torch.load(output + ".rank1")
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], msg=name)
