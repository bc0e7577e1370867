"""DeepSpeed on one device: ZeRO-2 and ZeRO-3 at gradient accumulation 4 against a plain run at accumulation 1.

Trains a tiny Llama-style model for 2 updates of 8 samples under each (``tests/scripts/engine_step_worker.py``,
launched with ``torchrun --nproc_per_node 1``), then prints, per engine, the engine's own count of optimizer steps
(2 when each update is one step) and the largest weight difference from the plain run. Exits with status 1 when
either is off. Meant for a GPU machine (``benchmarks/gpu_check.sh``); on a CPU it runs on DeepSpeed's CPU
accelerator.

    python benchmarks/deepspeed_smoke.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "scripts", "engine_step_worker.py")
UPDATES = 2
ENGINES = ("zero2", "zero3")


def main() -> int:
    from iterframe.testing import build_tiny_causal_lm

    with tempfile.TemporaryDirectory() as root:
        model_dir, output_dir = os.path.join(root, "model"), os.path.join(root, "out")
        os.makedirs(output_dir)
        build_tiny_causal_lm(model_dir, architecture="llama")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", WORKER]
        command += [model_dir, output_dir, str(UPDATES), "ddp:1"] + [f"{engine}:4" for engine in ENGINES]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
        plain = torch.load(os.path.join(output_dir, "ddp-1.pt"))
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        failed = False
        for engine in ENGINES:
            with open(os.path.join(output_dir, f"{engine}-4.rank0.json"), encoding="utf-8") as handle:
                report = json.load(handle)
            weights = torch.load(os.path.join(output_dir, f"{engine}-4.pt"))
            difference = max(
                (weights[name].float() - value.float()).abs().max().item() for name, value in plain.items()
            )
            ok = report["engine_steps"] == UPDATES and difference < 1e-4
            failed |= not ok
            print(
                f"{engine} accumulation 4: {report['type']} on {device}, "
                f"optimizer steps {report['engine_steps']} for {UPDATES} updates, "
                f"max |weight - plain| {difference:.2e}: {'ok' if ok else 'FAILED'}",
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
