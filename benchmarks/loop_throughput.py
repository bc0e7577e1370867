"""Seconds per iteration and generated tokens/s of iterframe's loop beside a hand-written TRL 0.23.1 loop, on CPU.

Both loops do the same work per iteration at equal settings: sample K completions for each of P prompts from
the live model (temperature 1.0, exactly N new tokens: ``min_new_tokens = max_new_tokens`` in the model's
generation config), score them with the same reward function, keep the best 25% of the iteration's samples and
train on them (prompt + completion + eos, loss on every token) with ``IterativeSFTTrainer.step()``. iterframe
runs ``IterativeLoop`` with the built-in ``hf`` generator, ``top-fraction`` filter and ``full-text`` tokenizer;
the hand loop calls ``model.generate`` (one batched call), sorts by reward and calls TRL's ``step()``.

``--recipe demo`` runs the built-in demo's recipe instead, a training-heavy one: its tiny character-level model
and addition prompts, 80 prompts x 16 samples of at most 3 new tokens, keep the correct and distinct answers,
train 3 epochs (batch 32, lr 1e-3) over the kept samples plus a 400-sample replay buffer, completion-only
labels; both loops report the final greedy eval reward on the demo's 20 held-out prompts.

Each configuration (iterframe / hand loop, without / with a checkpoint every iteration) runs in its own process,
forked from this one after the imports, so that its peak RSS is its own; rounds alternate the order.

    tox -e loopbench                                            # in the TRL 0.23.1 env; benchmarks/README.md
    tox -e loopbench -- --recipe demo --rounds 3                # the demo's training-heavy recipe
    benchmarks/.venv-trl-loop/bin/python benchmarks/loop_throughput.py --iterations 1 --tiny   # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import random
import re
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any, Optional

import psutil
import torch
from step_throughput import (
    RssSampler,
    build_model,
    load_trl,
    machine_lines,
    make_sentence_stream,
    trainer_settings,
)

from iterframe import hookimpl

#: Llama-style model shapes; "6m" (6.0M parameters) is the one the targets are stated for.
MODEL_PRESETS = {
    "6m": dict(hidden_size=256, num_layers=6, num_heads=4, intermediate_size=512, vocab_size=4096),
    "tiny": dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, vocab_size=384),
}
#: Completion length (characters) the reward prefers.
TARGET_CHARS = 96
MIB = 2**20
STAGES = ("generate", "score", "filter", "train", "record + checkpoint", "other")


def length_reward(prompts: list, completions: list[str], references: list) -> list[float]:
    """The reward of both loops: 0 for a completion of ``TARGET_CHARS`` characters, less the further it is."""
    return [-abs(len(completion) - TARGET_CHARS) / TARGET_CHARS for completion in completions]


def answer_reward(prompts: list, completions: list[str], references: list) -> list[float]:
    """The demo recipe's reward (the demo's ``answer-match`` with pattern ``^\\d+$``): 1.0 when the completion is
    a number equal to the reference, else 0.0."""
    return [
        float(re.fullmatch(r"\d+", completion.strip()) is not None and completion.strip() == str(reference))
        for completion, reference in zip(completions, references)
    ]


#: The built-in demo's recipe (iterframe/demo/__init__.py), applied by ``--recipe demo``.
DEMO_RECIPE = dict(
    prompts_per_iteration=80,
    samples_per_prompt=16,
    max_new_tokens=3,
    batch_size=32,
    learning_rate=1e-3,
    train_epochs=3,
    replay_buffer_size=400,
)


# --- workload -----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Workload:
    """The saved model + tokenizer both loops start from, and the prompts in the order both draw them (with
    their references and the held-out eval prompts in the demo recipe)."""

    model_dir: str
    prompts: list[str]
    num_parameters: int
    references: Optional[list[str]] = None
    eval_prompts: Optional[list[tuple[str, str]]] = None


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def build_demo_workload(args, directory: str) -> Workload:
    """The demo's own model and prompts, every prompt in every iteration. The model is built here, in this
    environment (a cached one may come from another transformers version), as ``iterframe run`` builds it."""
    from iterframe.demo import DEMO_EVAL_PROMPTS, DEMO_TRAIN_PROMPTS, demo_model_path

    os.environ["ITERFRAME_CACHE_DIR"] = os.path.join(directory, "cache")  # this forked process only
    model_dir = os.path.join(directory, "model")
    shutil.copytree(demo_model_path(), model_dir)
    records = _read_jsonl(DEMO_TRAIN_PROMPTS)
    iterations = args.warmup + args.iterations + 1
    prompts = [record["prompt"] for _ in range(iterations) for record in records]
    references = [str(record["answer"]) for _ in range(iterations) for record in records]
    eval_prompts = [(record["prompt"], str(record["answer"])) for record in _read_jsonl(DEMO_EVAL_PROMPTS)]
    from transformers import AutoModelForCausalLM

    num_parameters = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
    return Workload(model_dir, prompts, num_parameters, references, eval_prompts)


def build_workload(args, directory: str) -> Workload:
    """Train a BPE tokenizer, build the model from a config (no hub) and save both; make the prompts."""
    if args.recipe == "demo":
        return build_demo_workload(args, directory)
    rng = random.Random(args.seed)
    model, tokenizer, lexicon = build_model(MODEL_PRESETS[args.preset], args.max_length, rng, args.seed)
    model.generation_config.min_new_tokens = args.max_new_tokens  # both loops generate exactly this many
    model_dir = os.path.join(directory, "model")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    num_prompts = args.prompts_per_iteration * (args.warmup + args.iterations + 1)
    prompts = [make_sentence_stream(rng, lexicon, rng.randint(4, 16)) for _ in range(num_prompts)]
    return Workload(model_dir, prompts, sum(parameter.numel() for parameter in model.parameters()))


def shared_trainer_settings(args, output_dir: str) -> dict[str, Any]:
    """Trainer settings given identically to both loops. The schedule is constant: TRL 0.23.1's default linear
    schedule over ``max_steps=-1`` would set the learning rate to 0."""
    settings = {**trainer_settings(args, output_dir), "lr_scheduler_type": "constant", "save_total_limit": 1}
    return {**settings, "weight_decay": 0.0} if args.recipe == "demo" else settings


# --- the two loops ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class IterationRecord:
    """What one iteration did and how long each stage took (seconds)."""

    seconds: float
    generated_tokens: int
    trained_tokens: int
    stages: dict[str, float]
    #: Mean training loss of the iteration's last epoch (the demo recipe; ``None`` when nothing was trained).
    train_loss: Optional[float] = None


class IterationClock:
    """A lifecycle-hook plugin: when each iteration starts and how many tokens it generated."""

    def __init__(self):
        self.starts: list[float] = []
        self.generated_tokens: list[int] = []

    @hookimpl
    def on_iteration_start(self, context, iteration, prompts):
        self.starts.append(time.perf_counter())

    @hookimpl
    def on_samples_generated(self, context, iteration, samples):
        self.generated_tokens.append(sum(sample.info["num_tokens"] for sample in samples))


def run_iterframe(args, workload: Workload, output_dir: str, checkpoint: bool):
    """``IterativeLoop`` for warm-up + timed iterations + one more: the run's last iteration always writes a
    checkpoint, so it is run but not timed; an iteration lasts until the next one starts."""
    from iterframe import IterativeSFTConfig, IterativeSFTTrainer, plugins
    from iterframe.loop import IterativeLoop, LoopConfig, PromptRecord

    overrides = getattr(args, "iterframe_overrides", None) or {}  # benchmarks/learning_parity.py's ablations
    trainer = IterativeSFTTrainer(
        workload.model_dir, args=IterativeSFTConfig(**{**shared_trainer_settings(args, output_dir), **overrides})
    )
    num_iterations = args.warmup + args.iterations + 1
    generator_options = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "batch_size": args.prompts_per_iteration,
        "seed": args.seed,
    }
    demo = args.recipe == "demo"
    references = workload.references or [None] * len(workload.prompts)
    if demo:
        filters = [
            plugins.create_component("filter", "threshold", {"min_reward": 1.0}),
            plugins.create_component("filter", "dedup"),
        ]
    else:
        filters = [plugins.create_component("filter", "top-fraction", {"fraction": args.keep_fraction})]
    loop = IterativeLoop(
        trainer,
        [
            PromptRecord(prompt_id=index, prompt=text, reference=reference)
            for index, (text, reference) in enumerate(zip(workload.prompts, references))
        ],
        generator=plugins.create_component("generator", "hf", generator_options),
        reward=answer_reward if demo else length_reward,
        filters=filters,
        tokenizer=plugins.create_component("tokenizer", "completion-only" if demo else "full-text"),
        eval_prompts=[
            PromptRecord(prompt_id=index, prompt=text, reference=reference)
            for index, (text, reference) in enumerate(workload.eval_prompts or [])
        ],
        config=LoopConfig(
            output_dir=output_dir,
            iterations=num_iterations,
            prompts_per_iteration=args.prompts_per_iteration,
            samples_per_prompt=args.samples_per_prompt,
            train_epochs=args.train_epochs,
            replay_buffer_size=args.replay_buffer_size,
            eval_every=num_iterations if demo else 0,
            save_every=1 if checkpoint else num_iterations,
            keep_checkpoints=1,
            seed=args.seed,
            shuffle_prompts=False,
            quiet=True,
        ),
    )
    clock = IterationClock()
    plugins.register(clock, name="loop-throughput-clock")
    try:
        rows = loop.run()
    finally:
        plugins.unregister(clock)
    records = []
    for row, start, end, tokens in zip(rows, clock.starts, clock.starts[1:], clock.generated_tokens):
        seconds = end - start
        stages = {stage: row[f"time/{stage}_s"] for stage in ("generate", "score", "filter", "train")}
        stages["other"] = row["time/total_s"] - sum(stages.values())
        stages["record + checkpoint"] = seconds - row["time/total_s"]
        records.append(IterationRecord(seconds, tokens, row["train/tokens"], stages, row.get("train/loss")))
    return records, rows[-1].get("eval/reward")


def completion_tokens(row: list[int], eos_id: int, pad_id: int) -> list[int]:
    """Generated tokens up to and including eos (or to the last non-pad token when there is no eos)."""
    if eos_id in row:
        return row[: row.index(eos_id) + 1]
    while row and row[-1] == pad_id:
        row = row[:-1]
    return row


def finish_hand_iteration(trainer, checkpoint: bool, start, generated_at, scored_at, filtered_at):
    """Checkpoint if asked (what TRL's step() does when a save is due); ``(end time, seconds per stage)``."""
    trained_at = time.perf_counter()
    if checkpoint:
        trainer._save_checkpoint(trainer.model, trial=None)
    end = time.perf_counter()
    stages = {
        "generate": generated_at - start,
        "score": scored_at - generated_at,
        "filter": filtered_at - scored_at,
        "train": trained_at - filtered_at,
        "record + checkpoint": end - trained_at,
        "other": 0.0,
    }
    return end, stages


def build_trl_trainer(args, workload: Workload, output_dir: str):
    """``(tokenizer, model, TRL 0.23.1 IterativeSFTTrainer)`` of the workload's saved model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trl_trainer_class, trl_config_class, _ = load_trl()
    tokenizer = AutoTokenizer.from_pretrained(workload.model_dir)
    model = AutoModelForCausalLM.from_pretrained(workload.model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TRL 0.23 announces the trainer's removal
        trainer = trl_trainer_class(
            model, args=trl_config_class(**shared_trainer_settings(args, output_dir)), processing_class=tokenizer
        )
    return tokenizer, model, trainer


def run_hand_loop(args, workload: Workload, output_dir: str, checkpoint: bool):
    """The loop as written by hand on TRL 0.23.1: ``model.generate``, score, keep the top share, ``step()``."""
    tokenizer, model, trainer = build_trl_trainer(args, workload, output_dir)
    eos_id, k = tokenizer.eos_token_id, args.samples_per_prompt
    records = []
    for iteration in range(args.warmup + args.iterations):
        start = time.perf_counter()
        first = iteration * args.prompts_per_iteration
        prompts = workload.prompts[first : first + args.prompts_per_iteration]
        torch.manual_seed(args.seed + iteration)
        generated = hand_generate(model, tokenizer, args, prompts, k, sample=True)
        completions = tokenizer.batch_decode(generated, skip_special_tokens=True)
        generated_at = time.perf_counter()
        rewards = length_reward([p for p in prompts for _ in range(k)], completions, [None] * len(completions))
        scored_at = time.perf_counter()
        best_first = sorted(range(len(rewards)), key=lambda index: -rewards[index])
        kept = best_first[: math.ceil(args.keep_fraction * len(rewards))]
        filtered_at = time.perf_counter()
        prompt_ids = tokenizer(prompts)["input_ids"]
        input_ids = []
        for index in kept:
            tokens = generated[index] if generated[index][-1:] == [eos_id] else generated[index] + [eos_id]
            input_ids.append(torch.tensor(prompt_ids[index // k] + tokens))
        attention_mask = [torch.ones_like(ids) for ids in input_ids]
        trainer.step(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids)
        end, stages = finish_hand_iteration(trainer, checkpoint, start, generated_at, scored_at, filtered_at)
        trained = sum(len(ids) - 1 for ids in input_ids)  # causal loss: every token but the first is a target
        records.append(IterationRecord(end - start, sum(map(len, generated)), trained, stages))
    return records, None


def hand_generate(model, tokenizer, args, prompts: list[str], samples: int, sample: bool) -> list[list[int]]:
    """What a hand-written loop does: one batched ``model.generate`` over the left-padded prompts (``samples``
    completions each, sampled at ``args.temperature`` or greedy), each completion's new tokens up to its eos."""
    encoded = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
    model.eval()
    with torch.no_grad():
        sequences = model.generate(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            max_new_tokens=args.max_new_tokens,
            do_sample=sample,
            temperature=args.temperature if sample else None,
            top_k=0 if sample else None,
            top_p=1.0 if sample else None,
            num_return_sequences=samples,
            pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = sequences[:, encoded["input_ids"].shape[1] :].tolist()
    return [completion_tokens(row, tokenizer.eos_token_id, tokenizer.pad_token_id) for row in new_tokens]


def run_hand_demo_loop(args, workload: Workload, output_dir: str, checkpoint: bool):
    """The demo's recipe written by hand on TRL 0.23.1: ``model.generate``, keep correct and distinct answers,
    train ``train_epochs`` passes of TRL's ``step()`` over them plus a replay buffer; a greedy eval at the end."""
    tokenizer, model, trainer = build_trl_trainer(args, workload, output_dir)
    eos_id, k = tokenizer.eos_token_id, args.samples_per_prompt

    replay: list[tuple[list[int], list[int]]] = []  # (input ids, labels), newest first
    records = []
    for iteration in range(args.warmup + args.iterations + 1):
        start = time.perf_counter()
        first = iteration * args.prompts_per_iteration
        prompts = workload.prompts[first : first + args.prompts_per_iteration]
        references = workload.references[first : first + args.prompts_per_iteration]
        torch.manual_seed(args.seed + iteration)
        generated = hand_generate(model, tokenizer, args, prompts, k, sample=True)
        completions = tokenizer.batch_decode(generated, skip_special_tokens=True)
        generated_at = time.perf_counter()
        rewards = answer_reward(None, completions, [reference for reference in references for _ in range(k)])
        scored_at = time.perf_counter()
        kept, seen = [], set()
        for index, reward in enumerate(rewards):
            key = (index // k, " ".join(completions[index].split()).casefold())
            if reward >= 1.0 and key not in seen:
                seen.add(key)
                kept.append(index)
        filtered_at = time.perf_counter()
        prompt_ids = tokenizer(prompts)["input_ids"]
        kept_samples = []
        for index in kept:
            answer = tokenizer(completions[index], add_special_tokens=False)["input_ids"] + [eos_id]
            ids = prompt_ids[index // k] + answer
            kept_samples.append((ids, [-100] * len(prompt_ids[index // k]) + answer))
        train_samples = kept_samples + replay
        trained, loss = 0, None
        if train_samples:
            input_ids = [torch.tensor(ids) for ids, _ in train_samples]
            labels = [torch.tensor(labels) for _, labels in train_samples]
            attention_mask = [torch.ones_like(ids) for ids in input_ids]
            vars(trainer)["losses"] = []
            for _ in range(args.train_epochs):
                trainer.step(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
            loss = statistics.fmean(trainer.losses)  # micro-batches of every epoch, as iterframe's train/loss
            trained = args.train_epochs * sum(sum(x != -100 for x in labels[1:]) for _, labels in train_samples)
        replay = (kept_samples + replay)[: args.replay_buffer_size]
        end, stages = finish_hand_iteration(trainer, checkpoint, start, generated_at, scored_at, filtered_at)
        records.append(IterationRecord(end - start, sum(map(len, generated)), int(trained), stages, loss))
    eval_prompts = [prompt for prompt, _ in workload.eval_prompts]
    answers = tokenizer.batch_decode(
        hand_generate(model, tokenizer, args, eval_prompts, 1, sample=False), skip_special_tokens=True
    )
    final_eval = statistics.fmean(answer_reward(None, answers, [ref for _, ref in workload.eval_prompts]))
    return records, final_eval


# --- one configuration per process --------------------------------------------------------------------------


@dataclasses.dataclass
class ConfigurationRun:
    """One process's run of one configuration: its timed iterations and its memory and CPU use."""

    loop: str
    checkpoint: bool
    iterations: list[IterationRecord]
    final_eval_reward: Optional[float]
    setup_rss_mib: float
    peak_rss_mib: float
    max_rss_mib: float
    cpu_seconds: float
    wall_seconds: float


LOOPS = {"iterframe": run_iterframe, "hand loop": run_hand_loop, "hand demo loop": run_hand_demo_loop}


def measure_configuration(args, workload: Workload, loop: str, checkpoint: bool) -> ConfigurationRun:
    """Run one configuration in this process; RSS is sampled from before the trainer is built to the end."""
    torch.set_num_threads(args.threads)
    sampler = RssSampler()
    setup_rss = psutil.Process().memory_info().rss
    with tempfile.TemporaryDirectory() as output_dir, sampler.sampling():
        usage, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        runner = LOOPS["hand demo loop" if loop == "hand loop" and args.recipe == "demo" else loop]
        iterations, final_eval = runner(args, workload, output_dir, checkpoint)
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return ConfigurationRun(
        loop,
        checkpoint,
        iterations[args.warmup : args.warmup + args.iterations],
        final_eval,
        setup_rss / MIB,
        sampler.peak_bytes / MIB,
        after.ru_maxrss / 1024,
        cpu,
        wall,
    )


def _child(connection, function, arguments) -> None:
    try:
        connection.send(("ok", function(*arguments)))
    except BaseException:
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def run_in_fork(function, *arguments):
    """``function(*arguments)`` in a forked process (it shares the imports, not the memory growth)."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, function, arguments))
    process.start()
    sender.close()
    status, value = receiver.recv()
    process.join()
    if status != "ok":
        raise RuntimeError(f"{getattr(function, '__name__', function)} failed in its process:\n{value}")
    return value


# --- report -------------------------------------------------------------------------------------------------


def _label(loop: str, checkpoint: bool) -> str:
    return f"{loop}{' + checkpoints' if checkpoint else ''}"


@dataclasses.dataclass
class Summary:
    """A configuration's timed iterations over all rounds."""

    label: str
    runs: list[ConfigurationRun]
    iterations: list[IterationRecord] = dataclasses.field(init=False)

    def __post_init__(self):
        self.iterations = [record for run in self.runs for record in run.iterations]

    @property
    def seconds_per_iteration(self) -> float:
        return statistics.fmean(record.seconds for record in self.iterations)

    @property
    def generated_tokens_per_second(self) -> float:
        return sum(r.generated_tokens for r in self.iterations) / sum(r.seconds for r in self.iterations)

    @property
    def generation_tokens_per_second(self) -> float:
        generate_seconds = sum(record.stages["generate"] for record in self.iterations)
        return sum(record.generated_tokens for record in self.iterations) / generate_seconds

    def stage_mean(self, stage: str) -> float:
        return statistics.fmean(record.stages[stage] for record in self.iterations)

    @property
    def final_eval_rewards(self) -> str:
        return ", ".join(
            "-" if run.final_eval_reward is None else f"{run.final_eval_reward:.2f}" for run in self.runs
        )

    @property
    def cores_busy(self) -> float:
        return sum(run.cpu_seconds for run in self.runs) / sum(run.wall_seconds for run in self.runs)


def median_peak(summary: Summary) -> float:
    """The median over rounds of a configuration's peak RSS (MiB)."""
    return statistics.median(run.peak_rss_mib for run in summary.runs)


def print_report(args, workload: Workload, summaries: dict[tuple[str, bool], Summary], trl_version: str) -> None:
    print("\n=== loop throughput ===")
    print("command:", shlex.join([sys.executable, *sys.argv]))
    for line in machine_lines():
        print(line)
    print(f"trl {trl_version}; torch threads per configuration: {args.threads}")
    num_samples = args.prompts_per_iteration * args.samples_per_prompt
    if args.recipe == "demo":
        print(
            f"workload: the demo's recipe: its model ({workload.num_parameters / 1e6:.3f}M params) and addition "
            f"prompts, {args.prompts_per_iteration} prompts x {args.samples_per_prompt} samples x at most "
            f"{args.max_new_tokens} new tokens per iteration, temperature {args.temperature}; keep correct and "
            f"distinct answers; {args.train_epochs} epochs over kept + replay ({args.replay_buffer_size}), "
            f"completion-only labels, train batch {args.batch_size}, lr {args.learning_rate} constant; "
            f"{args.iterations} timed iterations after {args.warmup} warm-up, {args.rounds} round(s), each "
            "configuration in its own process"
        )
    else:
        print(
            f"workload: {args.preset} Llama-style model, {workload.num_parameters / 1e6:.2f}M params; "
            f"{args.prompts_per_iteration} prompts x {args.samples_per_prompt} samples x {args.max_new_tokens} "
            f"new tokens (min_new_tokens = max_new_tokens) per iteration, temperature {args.temperature}; reward "
            f"{length_reward.__name__}; keep the best {math.ceil(args.keep_fraction * num_samples)} of "
            f"{num_samples}; train batch {args.batch_size}, "
            f"lr {args.learning_rate} constant; {args.iterations} timed iterations after {args.warmup} warm-up, "
            f"{args.rounds} round(s), each configuration in its own process"
        )
    for summary in summaries.values():
        seconds = ", ".join(f"{record.seconds:.2f}" for record in summary.iterations)
        print(
            f"{summary.label:>26}: {summary.seconds_per_iteration:6.2f} s/iteration ({seconds}); "
            f"{summary.generated_tokens_per_second:6.1f} generated tokens/s "
            f"({summary.generation_tokens_per_second:.1f} during generation); "
            f"{statistics.fmean(r.generated_tokens for r in summary.iterations):.0f} generated and "
            f"{statistics.fmean(r.trained_tokens for r in summary.iterations):.0f} trained tokens/iteration; "
            f"peak RSS {max(run.peak_rss_mib for run in summary.runs):.0f} MiB "
            f"(rounds {', '.join(f'{run.peak_rss_mib:.0f}' for run in summary.runs)}; "
            f"at start {min(run.setup_rss_mib for run in summary.runs):.0f}, ru_maxrss "
            f"{max(run.max_rss_mib for run in summary.runs):.0f}); {summary.cores_busy:.2f} cores busy"
            + (f"; final eval reward per round: {summary.final_eval_rewards}" if args.recipe == "demo" else "")
        )
    for checkpoint in (False, True):
        ours, theirs = summaries.get(("iterframe", checkpoint)), summaries.get(("hand loop", checkpoint))
        if ours and theirs:
            print(
                f"speedup iterframe vs hand loop{' (checkpoint every iteration)' if checkpoint else ''}: "
                f"{theirs.seconds_per_iteration / ours.seconds_per_iteration:.2f}x "
                f"(hand-loop s/iteration / iterframe s/iteration); peak RSS iterframe - hand loop: "
                f"{max(r.peak_rss_mib for r in ours.runs) - max(r.peak_rss_mib for r in theirs.runs):+.0f} MiB "
                f"(highest round), {median_peak(ours) - median_peak(theirs):+.0f} MiB (median round)"
            )
    print("mean seconds per iteration by stage:")
    print(f"  {'stage':<20}" + "".join(f"{summary.label:>26}" for summary in summaries.values()))
    for stage in STAGES:
        print(f"  {stage:<20}" + "".join(f"{summary.stage_mean(stage):26.3f}" for summary in summaries.values()))


# --- main ---------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(MODEL_PRESETS), default="6m", help="model shape")
    parser.add_argument("--tiny", action="store_true", help="smoke run: the tiny model, 4 prompts x 2 x 8 tokens")
    parser.add_argument("--prompts-per-iteration", type=int, default=16)
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="also min_new_tokens")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--keep-fraction", type=float, default=0.25, help="share of the samples trained on")
    parser.add_argument("--batch-size", type=int, default=8, help="per_device_train_batch_size")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every configuration, in alternating order")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--recipe",
        choices=("length", "demo"),
        default="length",
        help="length: the model preset, a length reward, N new tokens; demo: the demo's training-heavy recipe",
    )
    parser.add_argument("--train-epochs", type=int, default=1, help="step() passes per iteration (demo: 3)")
    parser.add_argument("--replay-buffer-size", type=int, default=0, help="(demo: 400)")
    parser.add_argument("--no-checkpoints", action="store_true", help="skip the checkpoint-every-iteration runs")
    args = parser.parse_args(argv)
    if args.tiny:
        args.preset, args.prompts_per_iteration, args.samples_per_prompt, args.max_new_tokens = "tiny", 4, 2, 8
    if args.recipe == "demo":
        vars(args).update(DEMO_RECIPE)
        args.no_checkpoints = True
        if args.tiny:
            args.prompts_per_iteration, args.samples_per_prompt = 80, 2
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ITERFRAME_LOAD_PLUGINS", "")  # built-in components only
    trl_classes = load_trl()
    if trl_classes is None:
        sys.exit("TRL 0.23.1 (with IterativeSFTTrainer) is not installed here; run: tox -e loopbench")
    import iterframe.loop  # noqa: F401  (imported before forking, so every configuration starts alike)

    configurations = [("iterframe", False), ("hand loop", False), ("iterframe", True), ("hand loop", True)]
    if args.no_checkpoints:
        configurations = configurations[:2]
    with tempfile.TemporaryDirectory() as directory:
        workload = run_in_fork(build_workload, args, directory)
        runs: dict[tuple[str, bool], list[ConfigurationRun]] = {key: [] for key in configurations}
        for round_index in range(args.rounds):
            for loop, checkpoint in configurations if round_index % 2 == 0 else configurations[::-1]:
                print(f"round {round_index + 1}: {_label(loop, checkpoint)} ...", flush=True)
                runs[loop, checkpoint].append(run_in_fork(measure_configuration, args, workload, loop, checkpoint))
    summaries = {key: Summary(_label(*key), value) for key, value in runs.items()}
    print_report(args, workload, summaries, trl_classes[2])


if __name__ == "__main__":
    main()
