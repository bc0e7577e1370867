"""Soak run: many iterations of the built-in demo in one process, printing resident memory (RSS) per iteration.

A long run must not grow: sample tables, metrics rows, logs, caches and the replay buffer are either written out
or capped. The run goes through ``iterframe run`` itself (in-process, quiet); a small lifecycle-hook plugin reads
the process's RSS (psutil) at the end of every iteration. The summary compares the mean RSS of the first and last
quarter of the iterations after warm-up, and fits a line through them (MiB per iteration).

    python benchmarks/soak.py                                    # 40 iterations of the demo
    python benchmarks/soak.py --iterations 50 --prompts-per-iteration 40

Not a test: it prints numbers. ``--max-growth-mib`` makes it exit with status 1 when memory grew by more.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time

import psutil

from iterframe import hookimpl

MIB = 1024 * 1024


class RssRecorder:
    """A lifecycle-hook plugin: RSS and time at the end of every iteration."""

    def __init__(self):
        self.process = psutil.Process()
        self.rows: list[tuple[int, float, float]] = []  # (iteration, rss MiB, seconds)
        self.started = time.perf_counter()

    def rss_mib(self) -> float:
        return self.process.memory_info().rss / MIB

    @hookimpl
    def on_iteration_end(self, context, iteration, metrics):
        rss, elapsed = self.rss_mib(), time.perf_counter() - self.started
        self.rows.append((iteration, rss, elapsed))
        growth = rss - self.rows[0][1]
        print(
            f"iteration {iteration:4d}  rss {rss:8.1f} MiB  ({growth:+7.1f} since iteration 0)  {elapsed:7.1f} s",
            flush=True,
        )


def _slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / denominator if denominator else 0.0


def summarise(rows: list[tuple[int, float, float]], warmup: int) -> dict[str, float]:
    """First/last/peak RSS, the growth from the first to the last quarter after warm-up, and the slope."""
    steady = [(iteration, rss) for iteration, rss, _ in rows if iteration >= warmup] or [
        (i, r) for i, r, _ in rows
    ]
    quarter = max(1, len(steady) // 4)
    first_quarter = statistics.fmean(rss for _, rss in steady[:quarter])
    last_quarter = statistics.fmean(rss for _, rss in steady[-quarter:])
    return {
        "first": rows[0][1],
        "last": rows[-1][1],
        "peak": max(rss for _, rss, _ in rows),
        "growth": last_quarter - first_quarter,
        "slope": _slope(steady),
        "seconds_per_iteration": rows[-1][2] / len(rows),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--prompts-per-iteration", type=int, default=None, help="Default: the demo's (80).")
    parser.add_argument("--samples-per-prompt", type=int, default=None, help="Default: the demo's (16).")
    parser.add_argument("--warmup", type=int, default=5, help="Iterations left out of the growth figures.")
    parser.add_argument("--output-dir", default=None, help="Default: a temporary folder, removed afterwards.")
    parser.add_argument("--max-growth-mib", type=float, default=None, help="Exit 1 when RSS grew by more.")
    args = parser.parse_args(argv)

    import torch

    import iterframe
    from iterframe.cli import cli
    from iterframe.plugins import register, unregister

    print(f"$ {shlex.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"machine: {platform.machine()} {platform.processor() or platform.platform()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}; torch {torch.__version__}, iterframe {iterframe.__version__}"
    )
    recorder = RssRecorder()
    print(f"rss before the run: {recorder.rss_mib():.1f} MiB", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        output_dir = args.output_dir or os.path.join(scratch, "soak")
        command = ["run", "--iterations", str(args.iterations), "--output-dir", output_dir, "--quiet"]
        if args.prompts_per_iteration:
            command += ["--prompts-per-iteration", str(args.prompts_per_iteration)]
        if args.samples_per_prompt:
            command += ["--samples-per-prompt", str(args.samples_per_prompt)]
        register(recorder, name="soak-rss")
        try:
            cli.main(command, prog_name="iterframe", standalone_mode=False)
        finally:
            unregister("soak-rss")
    summary = summarise(recorder.rows, args.warmup)
    print(
        f"\nRSS: first {summary['first']:.1f} MiB, last {summary['last']:.1f} MiB, "
        f"peak {summary['peak']:.1f} MiB; "
        f"after {args.warmup} warm-up iterations: last quarter - first quarter = {summary['growth']:+.1f} MiB, "
        f"slope {summary['slope']:+.3f} MiB/iteration; {summary['seconds_per_iteration']:.1f} s/iteration"
    )
    if args.max_growth_mib is not None and summary["growth"] > args.max_growth_mib:
        print(f"memory grew by more than {args.max_growth_mib} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
