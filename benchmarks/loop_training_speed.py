"""Is ``step()`` inside a loop as fast per token as in the step benchmark? One process, the real chat model.

It runs ``real_loop_throughput.py``'s iterframe recipe (32 prompts x 8 samples, 16 new tokens, keep the correct
ones, batch 8, 3 iterations) in-process, timing every ``trainer.step()`` call and keeping its inputs. Then, on a
fresh trainer warmed up by one step, it replays each call's inputs and, alternating with them, a step on as many
``chat_step_throughput.py`` prompt-heavy samples (prompt 30-60 tokens, answer 3-20): real tokens (prompt and
answer) per second for each, with the step stages (forward + loss, backward, clip + optimizer) summed.
``--keep-mapped`` trains the loop on the weights as ``from_pretrained`` maps them from the checkpoint file (the
first optimizer update then copies them page by page), to measure what ``iterframe.engine.mapped_weights`` saves.

    OMP_NUM_THREADS=2 python benchmarks/loop_training_speed.py --model PATH
    python benchmarks/loop_training_speed.py --tiny                      # a smoke run
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import torch
from chat_workload import add_model_arguments, chat_samples, model_path
from real_loop_throughput import iterframe_config, write_task
from step_throughput import instrument_stages, make_lexicon, print_command_and_machine

from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.engine import trainer as trainer_module


class StepRecorder:
    """Wraps ``IterativeSFTTrainer.step`` while a run goes: each call's inputs and seconds, and its stages."""

    def __init__(self):
        self.calls: list[dict] = []
        self.stages = None
        self._step = IterativeSFTTrainer.step

    def __enter__(self):
        recorder = self

        def step(trainer, *args, **kwargs):
            if recorder.stages is None:
                recorder.stages = instrument_stages(trainer)
            start = time.perf_counter()
            result = recorder._step(trainer, *args, **kwargs)
            seconds = time.perf_counter() - start
            copy = {key: [torch.as_tensor(row).clone() for row in kwargs[key]] for key in ("input_ids", "labels")}
            recorder.calls.append({**copy, "seconds": seconds})
            return result

        IterativeSFTTrainer.step = step
        return self

    def __exit__(self, *exc):
        IterativeSFTTrainer.step = self._step


def real_tokens(input_ids) -> int:
    return sum(len(row) for row in input_ids)


def timed_step(trainer, input_ids, labels) -> float:
    start = time.perf_counter()
    trainer.step(input_ids=input_ids, labels=labels)
    return time.perf_counter() - start


def stage_line(stages) -> str:
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in stages.seconds.items() if seconds >= 0.005)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="replay rounds over the loop's step() calls")
    parser.add_argument("--keep-mapped", action="store_true", help="train the loop on file-mapped weights")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ITERFRAME_LOAD_PLUGINS", "")
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print_command_and_machine(None)
    from transformers import AutoTokenizer

    import iterframe.api

    with tempfile.TemporaryDirectory() as directory:
        args.model = model_path(args, directory)
        train_path, eval_path = write_task(args, directory)
        config = iterframe_config(args, train_path, eval_path, os.path.join(directory, "run"))
        config["loop"]["quiet"] = True
        if args.tiny:  # a random model answers nothing right: train on every sample
            config["filters"] = []
        own_weights = trainer_module.own_trainable_weights
        if args.keep_mapped:
            trainer_module.own_trainable_weights = lambda model: 0
        try:
            with StepRecorder() as recorder:
                iterframe.api.run(config)
        finally:
            trainer_module.own_trainable_weights = own_weights
        if not recorder.calls:
            raise SystemExit("the loop kept no sample, so it never trained: nothing to compare")
        print(f"in the loop{' (weights left mapped)' if args.keep_mapped else ''}: {stage_line(recorder.stages)}")
        for call in recorder.calls:
            tokens = real_tokens(call["input_ids"])
            print(
                f"  {len(call['input_ids'])} samples, {tokens} tokens: {call['seconds']:.2f} s, "
                f"{tokens / call['seconds']:.1f} tokens/s"
            )

        trainer = IterativeSFTTrainer(
            args.model,
            args=IterativeSFTConfig(
                output_dir=os.path.join(directory, "replay"),
                per_device_train_batch_size=8,
                learning_rate=1e-5,
                lr_scheduler_type="constant",
                report_to="none",
                save_strategy="no",
            ),
        )
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        rng = random.Random(args.seed)
        lexicon = make_lexicon(rng, 2000)
        first = recorder.calls[0]
        timed_step(trainer, first["input_ids"], first["labels"])  # warm-up: what the step benchmark leaves out
        stages = instrument_stages(trainer)
        replay, shaped = [0, 0.0], [0, 0.0]
        for _ in range(args.rounds):
            for call in recorder.calls:
                replay[0] += real_tokens(call["input_ids"])
                replay[1] += timed_step(trainer, call["input_ids"], call["labels"])
                samples = chat_samples(tokenizer, rng, len(call["input_ids"]), (30, 60), (3, 20), lexicon)
                shaped[0] += real_tokens([ids for ids, _ in samples])
                shaped[1] += timed_step(trainer, [ids for ids, _ in samples], [labels for _, labels in samples])
        print(f"replayed and benchmark-shaped, {args.rounds} rounds: {stage_line(stages)}")

    loop_tokens = sum(real_tokens(call["input_ids"]) for call in recorder.calls)
    loop_seconds = sum(call["seconds"] for call in recorder.calls)
    later = recorder.calls[1:]
    print(
        f"RESULT in the loop: {loop_tokens / loop_seconds:.1f} tokens/s "
        f"({loop_tokens} tokens, {loop_seconds:.2f} s)"
    )
    if later:
        tokens, seconds = sum(real_tokens(c["input_ids"]) for c in later), sum(c["seconds"] for c in later)
        print(f"RESULT in the loop after its first step() call: {tokens / seconds:.1f} tokens/s")
    print(f"RESULT the same inputs replayed: {replay[0] / replay[1]:.1f} tokens/s")
    print(f"RESULT step-benchmark samples, as many: {shaped[0] / shaped[1]:.1f} tokens/s")
    print(f"RESULT loop / benchmark-shaped: {loop_tokens / loop_seconds / (shaped[0] / shaped[1]):.2f}x")
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
