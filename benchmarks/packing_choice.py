"""How well ``PackingCostModel`` chooses between a packed and a padded micro-batch: each choice beside both timed.

For each model size and thread count, micro-batches of 8 samples are built over a grid of lengths (a longest
length and how far the others fall short of it, as in length-grouped micro-batches of short or mixed texts).
Each is trained on (forward, loss, backward) packed and padded, alternating, and the median times are compared
with the cost model's choice. It prints every micro-batch where the choice was the slower one, and per model and
thread count: how often the choice was the faster one, and the time of the chosen ways over the time of always
taking the faster one (1.00 = the cost model loses nothing) and over always padding.

    python benchmarks/packing_choice.py                      # 0.1m and 6m models, 1 and 2 threads
    python benchmarks/packing_choice.py --presets 34m --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from step_throughput import MODEL_PRESETS, build_model  # noqa: E402

from iterframe.engine import batching, packing  # noqa: E402
from iterframe.engine.loss import summed_token_loss  # noqa: E402
from iterframe.engine.packing_support import PackingCostModel  # noqa: E402

LONGEST = (4, 8, 16, 32, 64, 128, 256, 400)
#: How much shorter than the longest the micro-batch's other samples are, as a fraction of the longest.
SPREADS = (0.0, 0.1, 0.25, 0.5)
SAMPLES = 8


def micro_batch_lengths(longest: int, spread: float, rng: random.Random) -> list[int]:
    shortest = max(2, round(longest * (1 - spread)))
    return [longest] + [rng.randint(shortest, longest) for _ in range(SAMPLES - 1)]


def time_one(model, batch, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        attention = (
            packing.packed_attention(model, batch.segments)
            if batch.segments is not None
            else contextlib.nullcontext()
        )
        start = time.perf_counter()
        with attention:
            summed_token_loss(model, batch, is_encoder_decoder=False, padding_mask=False).backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return times


def measure(preset: str, threads: int, repeats: int, seed: int, records: list | None = None) -> None:
    """Time each micro-batch of the grid both ways and print how the cost model chose (append them to
    ``records`` when given)."""
    torch.set_num_threads(threads)
    rng = random.Random(seed)
    model, tokenizer, _ = build_model(MODEL_PRESETS[preset], 512, rng, seed)
    model.train()
    costs = PackingCostModel(model)
    chosen_total = best_total = padded_total = 0.0
    right = cases = 0
    for longest in LONGEST:
        for spread in SPREADS:
            lengths = micro_batch_lengths(longest, spread, rng)
            samples = [
                batching.TokenizedSample(ids, ids.clone())
                for ids in (torch.randint(3, tokenizer.vocab_size, (length,)) for length in lengths)
            ]
            packed = batching.pack_samples(samples)
            padded = batching.pad_samples(samples, tokenizer.pad_token_id or 0, is_encoder_decoder=False)
            time_one(model, packed, 1), time_one(model, padded, 1)  # warm-up
            packed_times, padded_times = [], []
            for _ in range(repeats):  # alternating
                packed_times += time_one(model, packed, 1)
                padded_times += time_one(model, padded, 1)
            packed_s, padded_s = statistics.median(packed_times), statistics.median(padded_times)
            pack = costs(samples)
            if records is not None:
                records.append(
                    {"preset": preset, "threads": threads, "lengths": lengths, "packed_s": packed_s,
                     "padded_s": padded_s, "packed_chosen": pack}
                )  # fmt: skip
            chosen = packed_s if pack else padded_s
            chosen_total += chosen
            best_total += min(packed_s, padded_s)
            padded_total += padded_s
            cases += 1
            right += chosen == min(packed_s, padded_s)
            if chosen > min(packed_s, padded_s):
                print(
                    f"  {preset} {threads}t longest {longest:3d} spread {spread:.2f}: chose "
                    f"{'packed' if pack else 'padded'}; packed {packed_s * 1e3:.2f} ms, "
                    f"padded {padded_s * 1e3:.2f} ms",
                    flush=True,
                )
    print(
        f"{preset}, {threads} thread(s): the faster way chosen in {right}/{cases} micro-batches; chosen / fastest "
        f"{chosen_total / best_total:.3f}; chosen / always padded {chosen_total / padded_total:.3f}; "
        f"load average {' '.join(f'{load:.1f}' for load in os.getloadavg())}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", choices=sorted(MODEL_PRESETS), default=["0.1m", "6m"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each way per micro-batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="also write every micro-batch's lengths and times to FILE")
    args = parser.parse_args()
    records = [] if args.json else None
    for preset in args.presets:
        for threads in args.threads:
            measure(preset, threads, args.repeats, args.seed, records)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(records, handle, indent=1)


if __name__ == "__main__":
    main()
