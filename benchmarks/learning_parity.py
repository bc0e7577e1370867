"""Learning parity on the demo's training-heavy recipe: iterframe's loop beside a hand-written TRL 0.23.1 loop,
over several seeds, with ablations of iterframe's training settings.

The recipe is ``loop_throughput.py --recipe demo``'s (the demo's model and addition prompts, 80 prompts x 16
samples of at most 3 tokens at temperature 1, answer-match, threshold 1.0 + dedup, 3 epochs over the kept
samples plus a 400-sample replay buffer, batch 32, lr 1e-3 constant, weight decay 0), run for 15 iterations.
Both loops train completion-only labels (TRL's trainer is given them: see ``step_throughput.load_trl``). Each
(seed, loop) runs in its own forked process. The report gives the final greedy eval reward on the 20 held-out
prompts per seed, their mean, and the training loss of the last iterations.

    tox -e loopbench --notest
    cd benchmarks && OMP_NUM_THREADS=1 .venv-trl-loop/bin/python learning_parity.py --seeds 0 1 2 3 4 5 6
    ... learning_parity.py --variants default group_by_length   # the iterframe variants beside the hand loop

Variants (iterframe's ``IterativeSFTConfig`` overrides): ``default`` (iterframe's defaults), and the ablations in
:data:`VARIANTS`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from loop_throughput import build_workload, parse_args, run_hand_demo_loop, run_in_fork, run_iterframe
from step_throughput import load_trl, machine_lines

#: iterframe settings compared with the hand loop: name -> IterativeSFTConfig overrides. ``default`` is
#: iterframe's defaults (random micro-batches drawn afresh on every epoch); ``group_by_length``: the former one.
VARIANTS = {
    "default": {},
    "group_by_length": {"group_by_length": True},
    "random_batches": {"group_by_length": False},
}


def run_one(args, workload, loop: str, seed: int, variant: str):
    """One 15-iteration run: ``(final eval reward, per-iteration train loss, seconds)``."""
    import torch

    args = argparse.Namespace(**vars(args))
    args.seed = seed
    args.iterframe_overrides = VARIANTS.get(variant, {})
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as output_dir:
        runner = run_hand_demo_loop if loop == "hand loop" else run_iterframe
        records, final_eval = runner(args, workload, output_dir, False)
    return final_eval, [record.train_loss for record in records], time.perf_counter() - start


def _loss_text(losses: list) -> str:
    tail = [loss for loss in losses[-5:] if loss is not None]
    return f"{statistics.fmean(tail):.4f}" if tail else "-"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=["default", "group_by_length"], choices=sorted(VARIANTS))
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    own = parser.parse_args(argv)
    # the demo recipe of loop_throughput.py, every iteration's last one included (warm-up 0)
    args = parse_args(["--recipe", "demo", "--warmup", "0", "--iterations", str(own.iterations - 1)])
    args.threads = own.threads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ITERFRAME_LOAD_PLUGINS", "")
    trl_classes = load_trl()
    if trl_classes is None:
        sys.exit("TRL 0.23.1 (with IterativeSFTTrainer) is not installed here; run: tox -e loopbench --notest")
    import iterframe.loop  # noqa: F401  (imported before forking)

    loops = [("hand loop", "hand loop")] + [(f"iterframe {variant}", variant) for variant in own.variants]
    results: dict[str, list] = {label: [] for label, _ in loops}
    with tempfile.TemporaryDirectory() as directory:
        workload = run_in_fork(build_workload, args, directory)
        for index, seed in enumerate(own.seeds):
            for label, variant in loops if index % 2 == 0 else loops[::-1]:
                loop = "hand loop" if variant == "hand loop" else "iterframe"
                final_eval, losses, seconds = run_in_fork(run_one, args, workload, loop, seed, variant)
                results[label].append((seed, final_eval, losses))
                print(
                    f"seed {seed}: {label}: final eval reward {final_eval:.3f}, train loss (last 5 iterations) "
                    f"{_loss_text(losses)}, {seconds:.0f} s",
                    flush=True,
                )
    print()
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    for line in machine_lines():
        print(line)
    print(f"TRL {trl_classes[2]}, {own.iterations} iterations, torch threads {own.threads}")
    print(f"{'loop':28} {'final held-out eval reward per seed':44} {'mean':>6} {'loss, last 5':>12}")
    for label, runs in results.items():
        rewards = [final for _, final, _ in runs]
        per_seed = " ".join(f"{reward:.3f}" for reward in rewards)
        losses = [loss for _, _, run_losses in runs for loss in run_losses[-5:] if loss is not None]
        print(
            f"{label:28} {per_seed:44} {statistics.fmean(rewards):6.3f} "
            f"{(statistics.fmean(losses) if losses else float('nan')):12.4f}"
        )


if __name__ == "__main__":
    main()
