"""Step throughput of iterframe's ``IterativeSFTTrainer`` beside TRL 0.23.1's, on mixed-length texts, on CPU.

Both trainers get the same model weights, the same texts and the same settings; rounds alternate between them
so that both see the same machine load. Reported per trainer: real (non-pad) tokens/s, padding fraction, peak
RSS while stepping, and for iterframe the fraction of the machine's matmul peak (6 x matmul params x tokens/s
over the FLOP/s of a large fp32 ``torch.matmul`` measured in the same run) and where its step time goes.

    tox -e bench                                   # beside TRL 0.23.1 (transformers<4.58); benchmarks/README.md
    tox -e bench -- --matrix                       # the grid: model sizes x text lengths x threads
    python benchmarks/step_throughput.py --no-trl  # iterframe alone, in any environment
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field

import torch

import iterframe
from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.testing import build_tiny_causal_lm, train_bpe_tokenizer

#: Llama-style model shapes: "34m" (34.1M parameters), "6m" (6.0M, the loop benchmark's) and "0.1m" (the demo
#: model's shape, 0.15M with this vocabulary); "tiny" (0.1M) for smoke runs.
MODEL_PRESETS = {
    "34m": dict(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1408, vocab_size=8192),
    "6m": dict(hidden_size=256, num_layers=6, num_heads=4, intermediate_size=512, vocab_size=4096),
    "0.1m": dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, vocab_size=512),
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, vocab_size=512),
}
#: Text lengths in tokens: (min, max).
TEXT_LENGTHS = {"short": (3, 10), "mixed": (16, 400)}
#: The matrix's grid (--matrix) and its texts per step() call per preset and text length (so that no cell takes
#: much longer than the others).
MATRIX_PRESETS = ("0.1m", "6m", "34m")
MATRIX_THREADS = (1, 2)
MATRIX_TEXTS_PER_STEP = {"short": 256, "mixed": {"0.1m": 64, "6m": 64, "34m": 32}}

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


# --- workload -----------------------------------------------------------------------------------------------


def make_lexicon(rng: random.Random, size: int) -> list[str]:
    """Distinct pronounceable pseudo-words of one to four syllables."""
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = rng.randint(1, 4)
        words["".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))] = None
    return list(words)


def make_sentence_stream(rng: random.Random, lexicon: list[str], num_words: int) -> str:
    """``num_words`` words drawn with a Zipf-like skew, in sentences with punctuation."""
    weights = [1.0 / (rank + 1) for rank in range(len(lexicon))]
    words = rng.choices(lexicon, weights=weights, k=num_words)
    pieces = []
    for index, word in enumerate(words):
        pieces.append(word.capitalize() if index == 0 or pieces[-1].endswith(".") else word)
        if rng.random() < 0.08:
            pieces[-1] += rng.choice(".,;:?")
    return " ".join(pieces)


def build_model(preset: dict, max_length: int, rng: random.Random, seed: int):
    """``(model, tokenizer, lexicon)``: a BPE tokenizer trained on sentences of a made-up lexicon drawn with
    ``rng`` and a Llama-style model of ``preset``'s shape built from a config (no hub)."""
    preset = dict(preset)
    vocab_size = preset.pop("vocab_size")
    lexicon = make_lexicon(rng, 4 * vocab_size)
    tokenizer = train_bpe_tokenizer([make_sentence_stream(rng, lexicon, 200) for _ in range(400)], vocab_size)
    model, _ = build_tiny_causal_lm(None, tokenizer, max_position_embeddings=max_length, seed=seed, **preset)
    return model, tokenizer, lexicon


def make_texts(tokenizer, rng, lexicon, count: int, min_tokens: int, max_tokens: int) -> list[str]:
    """``count`` texts whose token counts are spread uniformly over ``[min_tokens, max_tokens]``."""
    texts = []
    for _ in range(count):
        target = rng.randint(min_tokens, max_tokens)
        text = make_sentence_stream(rng, lexicon, 2 * target)
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
        texts.append(text[: offsets[min(target, len(offsets)) - 1][1]])
    return texts


def real_token_count(tokenizer, texts: list[str], max_length: int) -> int:
    """Tokens both trainers train on: each text tokenized with special tokens and cut to ``max_length``."""
    return sum(min(len(ids), max_length) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"])


# --- measurement helpers ------------------------------------------------------------------------------------


def matmul_peak_flops(size: int = 4096, repeats: int = 3) -> float:
    """FLOP/s of the fastest of ``repeats`` fp32 ``size`` x ``size`` matmuls (one warm-up first)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def matmul_parameter_count(model: torch.nn.Module) -> int:
    """Weights that take part in a matmul per token (every ``nn.Linear``, the LM head included)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


class PaddingRecorder:
    """Counts real and padded token positions of every training forward pass of a model. A padded micro-batch
    comes with its attention mask, or (iterframe's, for models that need none) without one: then its real
    positions are those not holding ``pad_token_id``."""

    def __init__(self, model: torch.nn.Module, pad_token_id: int):
        self.pad_token_id = pad_token_id
        self.real_tokens = 0
        self.padded_tokens = 0
        self.packed_batches = 0
        self.padded_batches = 0
        self._handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        if not module.training:
            return
        if kwargs.get("attention_mask") is not None:
            self.real_tokens += int(kwargs["attention_mask"].sum())
            self.padded_tokens += kwargs["attention_mask"].numel()
            self.padded_batches += 1
        elif kwargs.get("position_ids") is not None:  # a padding-free (packed) row: every position is a token
            self.real_tokens += kwargs["input_ids"].numel()
            self.padded_tokens += kwargs["input_ids"].numel()
            self.packed_batches += 1
        else:  # right-padded, without its mask
            self.real_tokens += int(kwargs["input_ids"].ne(self.pad_token_id).sum())
            self.padded_tokens += kwargs["input_ids"].numel()
            self.padded_batches += 1

    def reset(self) -> None:
        self.real_tokens = self.padded_tokens = self.packed_batches = self.padded_batches = 0

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else float("nan")


class RssSampler:
    """Peak resident memory of this process while the context is active, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self.peak_bytes = 0

    @contextlib.contextmanager
    def sampling(self):
        stop = threading.Event()

        def sample():
            while True:
                self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
                if stop.wait(self._interval):
                    return

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)


class StageTimer:
    """Wall time spent in named methods of objects, by wrapping them on the instance."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, owner, method_name: str, stage: str) -> None:
        method = getattr(owner, method_name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

        setattr(owner, method_name, timed)


@dataclass
class TrainerRun:
    """One trainer under test and what was measured on it."""

    name: str
    trainer: object
    padding: PaddingRecorder
    rss: RssSampler
    round_seconds: list[float] = field(default_factory=list)
    round_tokens: list[int] = field(default_factory=list)
    user_seconds: float = 0.0
    system_seconds: float = 0.0

    def step(self, texts: list[str], tokens: int) -> None:
        with self.rss.sampling():
            usage = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            self.trainer.step(texts=texts)
            self.round_seconds.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_SELF)
        self.user_seconds += after.ru_utime - usage.ru_utime
        self.system_seconds += after.ru_stime - usage.ru_stime
        self.round_tokens.append(tokens)

    @property
    def cores_used(self) -> float:
        """CPU seconds per wall second while stepping: below the thread count means others took the cores."""
        return (self.user_seconds + self.system_seconds) / sum(self.round_seconds)

    @property
    def tokens_per_second(self) -> float:
        return sum(self.round_tokens) / sum(self.round_seconds)

    def round_rates(self) -> list[float]:
        return [tokens / seconds for tokens, seconds in zip(self.round_tokens, self.round_seconds)]


# --- trainers -----------------------------------------------------------------------------------------------


def trainer_settings(args, output_dir: str) -> dict:
    """Settings given identically to both trainers' configs."""
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        seed=args.seed,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
    )


def load_trl():
    """TRL's ``(IterativeSFTTrainer, IterativeSFTConfig, version)``, or ``None`` when TRL lacks them.

    The trainer is TRL's, less one thing: TRL 0.23.1's ``step()`` drops the ``labels`` it is given for a
    decoder-only model (its language-modelling collator makes labels of every non-pad token), so a completion-only
    comparison would train TRL on the prompts as well. The subclass keeps the given labels (padded with -100);
    ``step(texts=...)`` and calls without labels are TRL's own.
    """
    try:
        import trl
        from trl import IterativeSFTConfig as TRLConfig
        from trl import IterativeSFTTrainer as TRLTrainer
    except ImportError:
        return None

    class TRLTrainerKeepingLabels(TRLTrainer):
        #: every micro-batch's loss, in order (TRL 0.23.1's ``step()`` returns nothing)
        losses: list

        def compute_loss(self, *args, **kwargs):
            loss = super().compute_loss(*args, **kwargs)
            vars(self).setdefault("losses", []).append(float(loss.detach()))
            return loss

        def prepare_model_inputs(self, input_ids, attention_mask, labels):
            if self.is_encoder_decoder or labels is None or labels is input_ids:
                return super().prepare_model_inputs(input_ids, attention_mask, labels)
            if attention_mask is None:
                attention_mask = [torch.ones_like(ids) for ids in input_ids]
            pad = self.tokenizer.pad_token_id

            def padded(tensors, value):
                return torch.nn.utils.rnn.pad_sequence(list(tensors), batch_first=True, padding_value=value)

            inputs = {
                "input_ids": padded(input_ids, pad),
                "attention_mask": padded(attention_mask, 0),
                "labels": padded(labels, -100),
            }
            return {key: value.to(self.model.device) for key, value in inputs.items()}

    return TRLTrainerKeepingLabels, TRLConfig, trl.__version__


def build_runs(args, model, tokenizer, output_dir: str, trl_classes) -> list[TrainerRun]:
    settings = trainer_settings(args, output_dir)
    runs = []
    ours_model = copy.deepcopy(model)
    ours = IterativeSFTTrainer(ours_model, args=IterativeSFTConfig(**settings), processing_class=tokenizer)
    runs.append(TrainerRun("iterframe", ours, PaddingRecorder(ours_model, tokenizer.pad_token_id), RssSampler()))
    if trl_classes is not None:
        trl_trainer_class, trl_config_class, _ = trl_classes
        trl_model = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TRL 0.23 announces the trainer's removal
            theirs = trl_trainer_class(
                trl_model, args=trl_config_class(**settings), processing_class=copy.deepcopy(tokenizer)
            )
        runs.append(TrainerRun("trl", theirs, PaddingRecorder(trl_model, tokenizer.pad_token_id), RssSampler()))
    if args.padded_too:
        padded_model = copy.deepcopy(model)
        padded = IterativeSFTTrainer(
            padded_model, args=IterativeSFTConfig(**settings, padding_free=False), processing_class=tokenizer
        )
        runs.append(
            TrainerRun(
                "iterframe padded", padded, PaddingRecorder(padded_model, tokenizer.pad_token_id), RssSampler()
            )
        )
    return runs


def run_named(runs: list[TrainerRun], name: str):
    return next((run for run in runs if run.name == name), None)


def instrument_stages(trainer: IterativeSFTTrainer) -> StageTimer:
    """Time iterframe's step stages (a few ``perf_counter`` calls per micro-batch)."""
    timer = StageTimer()
    timer.wrap(trainer, "_prepare_samples", "tokenize + validate")
    timer.wrap(trainer, "_micro_batches", "group + pad")
    timer.wrap(trainer, "_loss_sum", "forward + loss")
    timer.wrap(trainer.accelerator, "backward", "backward")
    timer.wrap(trainer, "_optimizer_update", "clip + optimizer")
    return timer


# --- report -------------------------------------------------------------------------------------------------


def machine_lines() -> list[str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
    nproc = subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout.strip() or str(
        os.cpu_count()
    )
    import transformers

    return [
        f"machine: {platform.machine()} {cpu}; nproc={nproc}; torch threads={torch.get_num_threads()}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"iterframe {iterframe.__version__}",
    ]


def print_command_and_machine(trl_version) -> None:
    print("command:", shlex.join([sys.executable, *sys.argv]))
    for line in machine_lines():
        print(line)
    if trl_version:
        print(f"trl {trl_version}")


def print_report(args, runs, tokens_per_round, peaks, matmul_params, total_params, stage_seconds, trl_version):
    ours = runs[0]
    peak = max(peaks)

    def peak_fraction(params: int) -> float:
        return 6 * params * ours.tokens_per_second / peak

    print("\n=== step throughput ===")
    print_command_and_machine(trl_version)
    print(
        f"workload: {args.preset} Llama-style model, {total_params / 1e6:.1f}M params ({matmul_params / 1e6:.1f}M "
        f"in matmuls); {args.texts_per_step} texts/step() of {args.min_tokens}-{args.max_tokens} tokens, batch "
        f"{args.batch_size}, max_length {args.max_length}; {args.rounds} timed step() calls each after "
        f"{args.warmup} warm-up; mean {statistics.mean(tokens_per_round) / args.texts_per_step:.0f} tokens/text"
    )
    print(f"matmul peak ({args.peak_size}^3 fp32, best of {len(peaks)} checks): {peak / 1e9:.1f} GFLOP/s")
    for run in runs:
        rates = ", ".join(f"{rate:.0f}" for rate in run.round_rates())
        print(
            f"{run.name:>16}: {run.tokens_per_second:8.1f} real tokens/s (rounds: {rates}); padding "
            f"{run.padding.padding_fraction:.1%}; peak RSS while stepping {run.rss.peak_bytes / 2**20:.0f} MiB; "
            f"{run.cores_used:.2f} cores busy ({run.system_seconds / (run.user_seconds + run.system_seconds):.0%} "
            "in the kernel)"
        )
    print(
        f"iterframe matmul-peak fraction: {peak_fraction(total_params):.1%} (6 x {total_params / 1e6:.1f}M params "
        f"x real tokens/s / peak); {peak_fraction(matmul_params):.1%} counting only the "
        f"{matmul_params / 1e6:.1f}M weights used in matmuls"
    )
    busy = min(run.cores_used for run in runs)
    if busy < 0.9 * torch.get_num_threads():
        print(
            f"note: only {busy:.2f} of {torch.get_num_threads()} cores were busy while stepping: other processes "
            "took CPU time, so the tokens/s above are low (the ratio, from interleaved rounds, is less affected)."
        )
    for other in runs[1:]:
        per_round = [a / b for a, b in zip(ours.round_rates(), other.round_rates())]
        print(
            f"ratio iterframe / {other.name}: {ours.tokens_per_second / other.tokens_per_second:.2f}x "
            f"(per round: {', '.join(f'{r:.2f}' for r in per_round)})"
        )
    total = sum(ours.round_seconds)
    print("iterframe time by stage:")
    for stage, seconds in stage_seconds.items():
        print(f"  {stage:<20} {seconds:8.2f} s  {seconds / total:6.1%}")
    other = total - sum(stage_seconds.values())
    print(f"  {'other':<20} {other:8.2f} s  {other / total:6.1%}")
    print(f"process peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def print_profile(trainer, texts: list[str], top: int) -> None:
    """torch.profiler's top operators of one extra iterframe step() (with ``--profile``)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.step(texts=texts)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


# --- main ---------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(MODEL_PRESETS), default="34m", help="model shape")
    parser.add_argument("--texts", choices=sorted(TEXT_LENGTHS), help="text lengths (sets --min/--max-tokens)")
    parser.add_argument("--texts-per-step", type=int, default=64, help="texts given to each step() call")
    parser.add_argument("--min-tokens", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8, help="per_device_train_batch_size")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--rounds", type=int, default=3, help="timed step() calls per trainer")
    parser.add_argument("--warmup", type=int, default=1, help="untimed step() calls per trainer first")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (both)")
    parser.add_argument("--peak-size", type=int, default=4096, help="side of the matmul that measures the peak")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-trl", action="store_true", help="measure iterframe alone")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N ops of one more step")
    parser.add_argument(
        "--padded-too",
        action="store_true",
        help="also step iterframe with padding_free=False (its padded micro-batches), in the same rounds",
    )
    parser.add_argument(
        "--matrix",
        action="store_true",
        help=f"run the grid {'/'.join(MATRIX_PRESETS)} x {'/'.join(TEXT_LENGTHS)} texts x "
        f"{'/'.join(map(str, MATRIX_THREADS))} threads and print one table (--presets etc. narrow it)",
    )
    parser.add_argument("--presets", nargs="+", choices=sorted(MODEL_PRESETS), default=list(MATRIX_PRESETS))
    parser.add_argument("--matrix-texts", nargs="+", choices=sorted(TEXT_LENGTHS), default=list(TEXT_LENGTHS))
    parser.add_argument("--matrix-threads", nargs="+", type=int, default=list(MATRIX_THREADS))
    args = parser.parse_args(argv)
    if args.texts:
        args.min_tokens, args.max_tokens = TEXT_LENGTHS[args.texts]
    return args


@dataclass
class CellResult:
    """One measured cell: both trainers' runs and the conditions they ran under."""

    args: argparse.Namespace
    runs: list
    tokens_per_round: list
    peaks: list
    matmul_params: int
    total_params: int
    stage_seconds: dict
    load_average: tuple


def measure_cell(args, trl_classes) -> CellResult:
    """Build the model and texts of ``args``, step both trainers in alternating rounds and return the runs."""
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    model, tokenizer, lexicon = build_model(MODEL_PRESETS[args.preset], args.max_length, rng, args.seed)
    warmup_texts = [make_texts(tokenizer, rng, lexicon, 16, args.min_tokens, args.max_tokens)]
    round_texts = [
        make_texts(tokenizer, rng, lexicon, args.texts_per_step, args.min_tokens, args.max_tokens)
        for _ in range(args.rounds)
    ]
    tokens_per_round = [real_token_count(tokenizer, texts, args.max_length) for texts in round_texts]
    with tempfile.TemporaryDirectory() as output_dir:
        runs = build_runs(args, model, tokenizer, output_dir, trl_classes)
        torch.set_num_threads(args.threads)  # the same count for both (iterframe picks 1 for tiny models itself)
        for run in runs:
            for _ in range(args.warmup):
                run.trainer.step(texts=warmup_texts[0])
            run.padding.reset()
        stages = instrument_stages(runs[0].trainer)
        peaks = [matmul_peak_flops(args.peak_size)]
        for index, (texts, tokens) in enumerate(zip(round_texts, tokens_per_round)):
            for run in runs if index % 2 == 0 else runs[::-1]:  # alternate who goes first
                run.step(texts, tokens)
            peaks.append(matmul_peak_flops(args.peak_size))
        if args.profile:
            print_profile(runs[0].trainer, round_texts[0], args.profile)
    return CellResult(
        args,
        runs,
        tokens_per_round,
        peaks,
        matmul_parameter_count(model),
        sum(p.numel() for p in model.parameters()),
        stages.seconds,
        os.getloadavg(),
    )


def print_matrix(cells: list[CellResult], trl_version) -> None:
    print("\n=== step throughput matrix ===")
    print_command_and_machine(trl_version)
    header = (
        "| model | texts | threads | iterframe tokens/s | TRL tokens/s | iterframe / TRL (rounds) | packed "
        "micro-batches | iterframe / iterframe padded | padding iterframe / TRL | cores busy | load average |"
    )
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for cell in cells:
        ours, theirs, padded = (run_named(cell.runs, name) for name in ("iterframe", "trl", "iterframe padded"))
        own_padding = "-" if padded is None else f"{ours.tokens_per_second / padded.tokens_per_second:.2f}x"
        packed = ours.padding.packed_batches / max(ours.padding.packed_batches + ours.padding.padded_batches, 1)
        if theirs is not None:
            per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(ours.round_rates(), theirs.round_rates()))
            ratio = f"**{ours.tokens_per_second / theirs.tokens_per_second:.2f}x** ({per_round})"
            trl_rate = f"{theirs.tokens_per_second:.0f}"
            padding = f"{ours.padding.padding_fraction:.1%} / {theirs.padding.padding_fraction:.1%}"
            busy = f"{ours.cores_used:.2f} / {theirs.cores_used:.2f}"
        else:
            ratio, trl_rate, padding, busy = (
                "-",
                "-",
                f"{ours.padding.padding_fraction:.1%}",
                f"{ours.cores_used:.2f}",
            )
        print(
            f"| {cell.args.preset} ({cell.total_params / 1e6:.2f}M) | {cell.args.texts or 'custom'} "
            f"{cell.args.min_tokens}-{cell.args.max_tokens}, {cell.args.texts_per_step}/step "
            f"| {cell.args.threads} "
            f"| {ours.tokens_per_second:.0f} | {trl_rate} | {ratio} | {packed:.0%} | {own_padding} | {padding} "
            f"| {busy} "
            f"| {' '.join(f'{x:.1f}' for x in cell.load_average)} |",
            flush=True,
        )


def run_matrix(args, trl_classes) -> None:
    cells = []
    for preset in args.presets:
        for texts in args.matrix_texts:
            for threads in args.matrix_threads:
                per_step = MATRIX_TEXTS_PER_STEP[texts]
                cell_args = copy.copy(args)
                cell_args.preset, cell_args.texts, cell_args.threads = preset, texts, threads
                cell_args.padded_too = True
                cell_args.min_tokens, cell_args.max_tokens = TEXT_LENGTHS[texts]
                cell_args.texts_per_step = per_step if isinstance(per_step, int) else per_step.get(preset, 64)
                print(f"cell: {preset} {texts} texts, {threads} thread(s) ...", flush=True)
                cells.append(measure_cell(cell_args, trl_classes))
                print_matrix(cells[-1:], None)
    print_matrix(cells, trl_classes[2] if trl_classes else None)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    trl_classes = None if args.no_trl else load_trl()
    if not args.no_trl and trl_classes is None:
        print("TRL with IterativeSFTTrainer is not installed here; measuring iterframe alone (run: tox -e bench).")
    if args.matrix:
        run_matrix(args, trl_classes)
        return
    cell = measure_cell(args, trl_classes)
    print_report(
        args,
        cell.runs,
        cell.tokens_per_round,
        cell.peaks,
        cell.matmul_params,
        cell.total_params,
        cell.stage_seconds,
        trl_classes[2] if trl_classes else None,
    )


if __name__ == "__main__":
    main()
