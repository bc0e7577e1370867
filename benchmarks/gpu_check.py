"""One-device GPU check: ``step()`` tokens/s and MFU beside TRL 0.23.1, and 5 iterations of ``iterframe run``.

The model has random weights of a model-zoo config with its real tokenizer: ``--family qwen2.5`` (Qwen2.5-0.5B,
``qwen2.5-instruct/config.json``) or ``smollm2`` (SmolLM2-135M, the real-model benchmarks' architecture);
``--preset tiny`` shrinks it to 2 layers of width 64, for a CPU dry run. Run by ``benchmarks/gpu_check.sh``; each
part prints one ``RESULT`` line per measurement.

    python benchmarks/gpu_check.py step --device cuda    # iterframe (+ TRL 0.23.1 when importable), bf16
    python benchmarks/gpu_check.py loop --device cuda    # iterframe run: 5 iterations, hf generator
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from chat_workload import REAL_MODEL_FAMILY, zoo_model
from step_throughput import load_trl, make_lexicon, make_texts, real_token_count

#: Dense bf16 peak of the device, for MFU (H200 SXM: 989 TFLOP/s); on CPU the best fp32 matmul measured here.
PEAK_TFLOPS = {"cuda": 989.0}
#: ``--family``: the model-zoo config the random-weight model is built from.
FAMILIES = {"qwen2.5": "qwen2.5-instruct", "smollm2": REAL_MODEL_FAMILY}


def build_model(args, directory: str) -> str:
    """Save a random-weight model of ``--family``'s zoo config (``--preset tiny``: shrunk for a CPU dry run)
    with its real tokenizer; return the path."""
    return zoo_model(FAMILIES[args.family], directory, tiny=args.preset == "tiny")


def peak_flops(device: str) -> float:
    if device in PEAK_TFLOPS:
        return PEAK_TFLOPS[device] * 1e12
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(4))
    return 2 * 1024**3 / best


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_step(args) -> None:
    """Both trainers on the same texts, alternating rounds; tokens/s, MFU and peak memory of each."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iterframe import IterativeSFTConfig, IterativeSFTTrainer

    with tempfile.TemporaryDirectory() as directory:
        path = build_model(args, directory)
        tokenizer = AutoTokenizer.from_pretrained(path)
        rng = random.Random(0)
        lexicon = make_lexicon(rng, 4000)
        low, high = (16, 400) if args.preset == "full" else (16, 64)
        rounds = [
            make_texts(tokenizer, rng, lexicon, args.texts_per_step, low, high) for _ in range(args.rounds + 1)
        ]
        settings = dict(
            output_dir=os.path.join(directory, "out"),
            per_device_train_batch_size=args.batch_size,
            learning_rate=1e-5,
            max_length=512,
            save_strategy="no",
            report_to="none",
            use_cpu=args.device == "cpu",
            bf16=True,
            seed=0,
        )
        trainers = {}
        model = AutoModelForCausalLM.from_pretrained(path).to(args.device)
        parameters = sum(p.numel() for p in model.parameters())
        trainers["iterframe"] = IterativeSFTTrainer(
            model, args=IterativeSFTConfig(**settings), processing_class=tokenizer
        )
        trl_classes = None if args.no_trl else load_trl()
        if trl_classes is not None:
            trl_trainer, trl_config, _ = trl_classes
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                trainers[f"trl {trl_classes[2]}"] = trl_trainer(
                    AutoModelForCausalLM.from_pretrained(path).to(args.device),
                    args=trl_config(**settings),
                    processing_class=AutoTokenizer.from_pretrained(path),
                )
        seconds = {name: 0.0 for name in trainers}
        memory = {}
        tokens = sum(real_token_count(tokenizer, texts, 512) for texts in rounds[1:])
        for trainer in trainers.values():  # warm-up
            trainer.step(texts=rounds[0])
        for index, texts in enumerate(rounds[1:]):
            for name in list(trainers) if index % 2 == 0 else list(trainers)[::-1]:
                if args.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                _sync(args.device)
                start = time.perf_counter()
                trainers[name].step(texts=texts)
                _sync(args.device)
                seconds[name] += time.perf_counter() - start
                memory[name] = max(memory.get(name, 0.0), peak_memory_mib(args.device))
        peak = peak_flops(args.device)
        for name in trainers:
            rate = tokens / seconds[name]
            print(
                f"RESULT step {args.family} {name}: {rate:.0f} real tokens/s; "
                f"MFU {6 * parameters * rate / peak:.1%} "
                f"(6 x {parameters / 1e6:.1f}M params x tokens/s / {peak / 1e9:.0f} GFLOP/s); peak memory "
                f"{memory[name]:.0f} MiB",
                flush=True,
            )
        if len(trainers) > 1:
            ours, theirs = seconds["iterframe"], seconds[list(trainers)[1]]
            print(f"RESULT step {args.family} ratio iterframe / trl: {theirs / ours:.2f}x", flush=True)


def check_loop(args) -> None:
    """``iterframe run`` for 5 iterations with the hf generator; generated tokens/s from its artifacts."""
    import pandas

    with tempfile.TemporaryDirectory() as directory:
        path = build_model(args, directory)
        demo_prompts = Path(__file__).resolve().parents[1] / "iterframe" / "demo" / "addition_train.jsonl"
        output = os.path.join(directory, "run")
        config = {
            "model": path,
            "dataset": {"path": str(demo_prompts), "prompt_column": "prompt", "reference_column": "answer"},
            "generator": {"name": "hf", "options": {"max_new_tokens": args.max_new_tokens, "temperature": 1.0}},
            "reward": "answer-match",
            "filters": [],
            "tokenizer": "completion-only",
            "loop": {"iterations": 5, "prompts_per_iteration": 16, "samples_per_prompt": 4, "seed": 0},
            "train": {
                "per_device_train_batch_size": 8,
                "learning_rate": 1e-5,
                "use_cpu": args.device == "cpu",
                "bf16": args.device == "cuda",
                "save_strategy": "no",
            },
            "output_dir": output,
        }
        config_path = os.path.join(directory, "run.yaml")
        with open(config_path, "w", encoding="utf-8") as handle:
            json.dump(config, handle)  # JSON is YAML
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "iterframe", "run", config_path, "-q"], check=True)
        wall = time.perf_counter() - start
        with open(os.path.join(output, "metrics.jsonl"), encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        generated = sum(
            int(pandas.read_parquet(parquet)["num_tokens"].fillna(0).sum())
            for parquet in sorted(Path(output).glob("iterations/*/samples.parquet"))
        )
        generate_seconds = sum(row.get("time/generate_s", 0.0) for row in rows)
        total_seconds = sum(row.get("time/total_s", 0.0) for row in rows)
        print(
            f"RESULT loop {args.family}: {len(rows)} iterations in {wall:.1f} s wall "
            f"({total_seconds:.1f} s in iterations); "
            f"{generated} generated tokens, {generated / generate_seconds:.0f} tokens/s while generating, "
            f"{generated / total_seconds:.0f} tokens/s over whole iterations",
            flush=True,
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("step", "loop"))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--preset", choices=("full", "tiny"), default="full", help="tiny: a CPU dry run")
    parser.add_argument(
        "--family", choices=sorted(FAMILIES), default="qwen2.5", help="zoo config: Qwen2.5-0.5B or SmolLM2-135M"
    )
    parser.add_argument("--texts-per-step", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--no-trl", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda, but torch sees no CUDA device; use --device cpu --preset tiny for a dry run.")
    if args.part == "step":
        check_step(args)
    else:
        check_loop(args)


if __name__ == "__main__":
    main()
