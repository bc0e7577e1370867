"""Options of the ``vllm`` generator, checked when the component is built (before any engine starts)."""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

__all__ = ["DTYPES", "ENGINE_OPTION_NAMES", "VLLMOptions", "parse_devices"]

#: Values of ``dtype`` that vLLM understands.
DTYPES = ("auto", "bfloat16", "float16", "float32", "half", "float")

#: Options that shape the engine itself; generators whose values agree share one engine.
ENGINE_OPTION_NAMES = (
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "dtype",
    "max_model_len",
    "enable_prefix_caching",
    "enforce_eager",
    "seed",
    "colocate",
    "device",
    "sync_bucket_mb",
)

_DEVICE = re.compile(r"^(?:cuda:)?(\d+)$")


def parse_devices(device: str) -> list[int]:
    """GPU indices of a ``device`` option: ``"cuda:1"``, ``"1"`` or a comma list ``"cuda:2,cuda:3"``."""
    parts = [part.strip() for part in device.split(",")]
    indices = []
    for part in parts:
        match = _DEVICE.match(part)
        if match is None:
            raise ValueError(
                f"device={device!r}: {part!r} is not a GPU; write 'cuda:N' or 'N', comma-separated for several "
                "(one per tensor-parallel rank)."
            )
        indices.append(int(match.group(1)))
    if len(set(indices)) != len(indices):
        raise ValueError(f"device={device!r} names a GPU twice; give each tensor-parallel rank its own GPU.")
    return indices


@dataclasses.dataclass
class VLLMOptions:
    """Engine placement and size, sampling, and how weights travel to the engine."""

    max_new_tokens: int = dataclasses.field(default=64, metadata={"help": "Most tokens per completion."})
    temperature: float = dataclasses.field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = dataclasses.field(default=1.0, metadata={"help": "Nucleus sampling mass (1.0: off)."})
    top_k: int = dataclasses.field(default=0, metadata={"help": "Sample from the k likeliest tokens (0: off)."})
    do_sample: bool = dataclasses.field(
        default=True, metadata={"help": "Sample (true) or decode greedily (false, one sample per prompt)."}
    )
    stop: list[str] = dataclasses.field(
        default_factory=list,
        metadata={"help": "Stop strings: generation stops at them and the completion is cut before them."},
    )
    tensor_parallel_size: int = dataclasses.field(
        default=1, metadata={"help": "GPUs one engine is split over (tensor parallelism)."}
    )
    gpu_memory_utilization: float = dataclasses.field(
        default=0.3,
        metadata={
            "help": "Fraction of each engine GPU's memory vLLM may take for weights and KV cache; colocated, the "
            "rest is left to training."
        },
    )
    dtype: str = dataclasses.field(
        default="auto", metadata={"help": "Engine weight dtype: auto, bfloat16, float16 or float32."}
    )
    max_model_len: Optional[int] = dataclasses.field(
        default=None, metadata={"help": "Longest prompt + completion in tokens (default: the model's)."}
    )
    enable_prefix_caching: bool = dataclasses.field(
        default=True, metadata={"help": "Reuse the KV cache of shared prompt prefixes (reset at every sync)."}
    )
    enforce_eager: bool = dataclasses.field(
        default=False, metadata={"help": "No CUDA graphs: less memory and a faster start, slower decoding."}
    )
    seed: Optional[int] = dataclasses.field(
        default=None, metadata={"help": "Engine sampling seed (default: the run's seed)."}
    )
    seed_requests: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "Seed each prompt's request from the seed, the call and the prompt, so a resumed run samples "
            "as the uninterrupted one (false: vLLM's own stream, a little faster; a resumed run restarts it)."
        },
    )
    colocate: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "Run the engine inside each training process, on its GPU (true), or on the GPU(s) of "
            "`device`, served by the main process (false)."
        },
    )
    device: Optional[str] = dataclasses.field(
        default=None,
        metadata={"help": "GPU(s) of a separate engine (colocate=false): 'cuda:N', or 'cuda:N,cuda:M' for TP."},
    )
    sync_bucket_mb: int = dataclasses.field(
        default=512,
        metadata={"help": "A separate engine receives weights in chunks of about this many MiB."},
    )

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}; use do_sample=false for greedy.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 turns it off), got {self.top_k}.")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}.")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}; colocated with "
                "training, 0.2-0.5 leaves room for the optimizer."
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}.")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1 (or unset for the model's), got {self.max_model_len}.")
        if self.sync_bucket_mb < 1:
            raise ValueError(f"sync_bucket_mb must be >= 1, got {self.sync_bucket_mb}.")
        if self.colocate and self.device is not None:
            raise ValueError(
                f"device={self.device!r} places a separate engine, but colocate=true runs the engine on each "
                "training process's own GPU; set colocate=false to use `device`, or drop `device`."
            )
        if not self.colocate:
            if self.device is None:
                raise ValueError(
                    "colocate=false needs `device`: the GPU(s) the engine runs on, e.g. device=cuda:1 (not used "
                    "by training)."
                )
            devices = parse_devices(self.device)
            if len(devices) != self.tensor_parallel_size:
                raise ValueError(
                    f"device={self.device!r} names {len(devices)} GPU(s) but tensor_parallel_size="
                    f"{self.tensor_parallel_size}; name one GPU per tensor-parallel rank."
                )

    def engine_settings(self) -> tuple:
        """The values of :data:`ENGINE_OPTION_NAMES`, in order (what decides whether two generators can share
        an engine)."""
        return tuple(getattr(self, name) for name in ENGINE_OPTION_NAMES)
