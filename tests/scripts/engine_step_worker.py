"""Worker for tests/test_trainer_engines.py: under each engine asked for (ddp, fsdp1 on GPUs, fsdp2, zero1, zero2,
zero3) and gradient accumulation count, ``updates`` calls of ``step()``, each one optimizer update over this rank's
share of the samples. Every rank writes what it did (``ENGINE-ACCUMULATION.rankR.json``); rank 0 saves the whole
weights (``ENGINE-ACCUMULATION.pt``).

Usage: torchrun --nproc_per_node 2 engine_step_worker.py MODEL OUTPUT_DIR UPDATES ENGINE:ACCUMULATION...
"""

import gc
import importlib
import json
import os
import sys

import torch

from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.api import leave_process_group

TEXTS = [
    "hello world",
    "abc",
    "the quick brown fox jumps over",
    "x y",
    "one two three four five six",
    "q",
    "seven eight nine",
    "a b c d e f g h",
]


def engine_settings(engine: str) -> dict:
    if engine.startswith("zero"):
        zero = {"stage": int(engine[-1])}
        if zero["stage"] == 3:  # every parameter partitioned (by default small ones stay whole on every process)
            zero.update(stage3_gather_16bit_weights_on_model_save=True, stage3_param_persistence_threshold=0)
        auto = ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps")
        auto += ("gradient_clipping",)
        return {"deepspeed": {"zero_optimization": zero, **dict.fromkeys(auto, "auto")}}
    if engine.startswith("fsdp"):
        os.environ["FSDP_VERSION"] = engine[-1]  # as accelerate launch sets it; transformers 4.x reads no version
    if engine == "fsdp2":
        return {"fsdp": True, "fsdp_config": {"version": 2, "reshard_after_forward": True}}
    if engine == "fsdp1":
        return {"fsdp": True, "fsdp_config": {"version": 1, "use_orig_params": True, "sync_module_states": False}}
    if engine == "ddp":
        return {}
    raise ValueError(f"unknown engine {engine!r}")


class FSDPOnCPUTrainer(IterativeSFTTrainer):
    """accelerate turns FSDP on only for accelerator devices (its MULTI_GPU, MULTI_XPU, ... types, not MULTI_CPU);
    this puts its state into FSDP mode on CPU processes, so that accelerate's own FSDP2 code (``fully_shard``,
    ``no_sync`` as ``set_requires_gradient_sync``, DTensor-aware clipping, ``get_state_dict``) runs on gloo."""

    def create_accelerator_and_postprocess(self):
        from accelerate import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        plugin_args = fsdp_plugin_args(self.args)
        super().create_accelerator_and_postprocess()
        state = self.accelerator.state
        if state.distributed_type == DistributedType.MULTI_CPU and plugin_args is not None:
            state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
            # the accelerator state copies the process state's fields whenever it is looked up: set both
            state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
            self.is_fsdp_enabled = True


def fsdp_plugin_args(args):
    """The FSDP plugin's arguments from the trainer's ``fsdp`` and ``fsdp_config`` (``None`` without FSDP).

    transformers 5 computes them (``args.fsdp_plugin_args``). transformers 4.x hands the settings to accelerate as
    ``ACCELERATE_USE_FSDP`` and ``FSDP_*`` environment variables instead, from which the accelerator would build a
    plugin that asks for an accelerator device (and later engines of this process would inherit them), and it does
    not read ``fsdp_config``'s ``version``: the variables are dropped and the arguments made as 5 makes them."""
    if hasattr(args, "fsdp_plugin_args"):
        return args.fsdp_plugin_args
    for name in [name for name in os.environ if name == "ACCELERATE_USE_FSDP" or name.startswith("FSDP_")]:
        del os.environ[name]
    if not args.fsdp:
        return None
    config = args.fsdp_config
    return {
        "fsdp_version": int(config.get("version", 1)),
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "cpu_ram_efficient_loading": False,
        "state_dict_type": "FULL_STATE_DICT",
        "reshard_after_forward": config.get("reshard_after_forward", True),
    }


def without_shared_memory_kernel() -> None:
    """Leave DeepSpeed's CPU collectives to gloo: its shared-memory allreduce is a C++ op compiled on first use
    (minutes on a small machine), an optimisation these tiny models do not need."""
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def sharding(model) -> str:
    """How the parameters are held: ``dtensor`` (FSDP2: every one a DTensor), ``zero3`` (each process holds a
    DeepSpeed partition of every one), ``whole`` (every one whole everywhere) or ``mixed``."""
    parameters = list(model.parameters())
    if all(type(parameter).__name__ == "DTensor" for parameter in parameters):
        return "dtensor"
    if all(
        hasattr(parameter, "ds_numel") and parameter.ds_tensor.numel() < parameter.ds_numel
        for parameter in parameters
    ):
        return "zero3"
    if not any(
        hasattr(parameter, "ds_numel") or type(parameter).__name__ == "DTensor" for parameter in parameters
    ):
        return "whole"
    return "mixed"


def train(model_path: str, output_dir: str, engine: str, accumulation: int, updates: int) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_rank = len(TEXTS) // world
    args = IterativeSFTConfig(
        output_dir=os.path.join(output_dir, f"{engine}-{accumulation}.out"),
        per_device_train_batch_size=per_rank // accumulation,
        gradient_accumulation_steps=accumulation,
        learning_rate=1e-2,
        max_grad_norm=1.0,
        save_strategy="no",
        bf16=False,  # full precision on any device, so the engines' weights compare closely
        **engine_settings(engine),
    )
    trainer_class = FSDPOnCPUTrainer if engine.startswith("fsdp") else IterativeSFTTrainer
    trainer = trainer_class(model_path, args=args)
    rank = trainer.accelerator.process_index
    share = TEXTS[rank::world]
    num_updates = [trainer.step(texts=share)["num_updates"] for _ in range(updates)]
    engine_steps = getattr(trainer.model_wrapped, "global_steps", None)  # a DeepSpeed engine's optimizer steps
    report = {
        "type": trainer.accelerator.distributed_type.value,
        "sharding": sharding(trainer.model_wrapped),
        "updates": sum(num_updates),
        "global_step": trainer.state.global_step,
        "engine_steps": engine_steps,
        "padding_free": trainer.padding_free,
    }
    with open(os.path.join(output_dir, f"{engine}-{accumulation}.rank{rank}.json"), "w") as handle:
        json.dump({**report, "world": world}, handle)
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # whole weights, on the main process
    if rank == 0:
        weights = {name: value.detach().cpu().clone() for name, value in state.items()}
        torch.save(weights, os.path.join(output_dir, f"{engine}-{accumulation}.pt"))
    trainer.accelerator.wait_for_everyone()
    if args.deepspeed:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        trainer.accelerator.free_memory()
        unset_hf_deepspeed_config()  # the next configuration must not load its model under ZeRO-3
    del trainer, args, state
    gc.collect()


def leave_and_exit() -> None:
    """How the torchrun test workers end: every process leaves the group together, the output is flushed, and the
    process exits with status 0 at once, without the interpreter's teardown.

    The results are in the worker's files by then. With FSDP2 on CPU processes over gloo (a set-up only these
    tests build: accelerate turns FSDP on only for accelerator devices) the teardown aborted a worker now and then,
    after its work was written and the group destroyed ("terminate called without an active exception", SIGABRT;
    about one CI run in two, never in 50 runs by hand), most likely while objects of the sharded model that still
    hold gloo work were freed during finalization. The tests check the work, not the teardown.
    """
    leave_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(model_path: str, output_dir: str, updates: int, specs: list[str]) -> None:
    if any(spec.startswith("zero") for spec in specs):
        without_shared_memory_kernel()
    for spec in specs:
        engine, accumulation = spec.split(":")
        train(model_path, output_dir, engine, int(accumulation), updates)
    leave_and_exit()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
