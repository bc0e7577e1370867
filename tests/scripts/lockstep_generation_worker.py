"""Worker for tests/test_generation_lockstep.py: the ``hf`` generator on a sharded model (ENGINE ``fsdp2`` or
``zero3``: every forward pass all-gathers the parameters from both processes), with uneven shares and uneven
finishing: process 0 samples three prompts (two batches) whose rows stop at their first token, process 1 one prompt
(one batch) whose rows run on. Then a collective that a process left behind in a forward pass would pair with the
wrong call. Each process writes what it did to ``OUTPUT_DIR/rankR.json``.

Usage: torchrun --nproc_per_node 2 lockstep_generation_worker.py MODEL OUTPUT_DIR ENGINE [--no-lockstep]
"""

import json
import os
import string
import sys

import torch.distributed as dist
from engine_step_worker import FSDPOnCPUTrainer, engine_settings, leave_and_exit, without_shared_memory_kernel

from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.generation import lockstep as lockstep_module
from iterframe.plugins import create_component
from iterframe.plugins.components import RunContext


def main(model_path: str, output_dir: str, engine: str, lockstep: bool) -> None:
    if not lockstep:  # shows what the lockstep prevents: the processes fall out of step and wait forever
        lockstep_module.needs_lockstep = lambda model: False  # the generator looks it up when it generates
    if engine == "zero3":
        without_shared_memory_kernel()
    args = IterativeSFTConfig(
        output_dir=os.path.join(output_dir, "trainer"), save_strategy="no", **engine_settings(engine)
    )
    trainer = (FSDPOnCPUTrainer if engine == "fsdp2" else IterativeSFTTrainer)(model_path, args=args)
    rank = trainer.accelerator.process_index
    prompts = ["1+1=", "2+3=", "4+4="] if rank == 0 else ["3+2="]
    stop = list(string.printable) if rank == 0 else []  # process 0's rows end at their first visible character
    generator = create_component("generator", "hf", {"max_new_tokens": 12, "batch_size": 2, "stop": stop})
    generator.setup(RunContext(trainer=trainer, tokenizer=trainer.processing_class, seed=0))
    passes = [0]
    trainer.model.register_forward_pre_hook(lambda module, args: passes.__setitem__(0, passes[0] + 1))
    completions = generator.generate(prompts, 2)
    everyone = [None, None]
    dist.all_gather_object(everyone, [[c.num_tokens for c in row] for row in completions])
    report = {
        "lockstep": lockstep_module.needs_lockstep(trainer.model),
        "decoding_loop": generator._use_decoding_loop(8),
        "forward_passes": passes[0],
        "batches": generator.calls,
        "num_tokens": everyone,
    }
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(report, handle)
    leave_and_exit()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], "--no-lockstep" not in sys.argv[4:])
