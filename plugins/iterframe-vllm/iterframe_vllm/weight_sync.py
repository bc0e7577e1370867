"""Pushing weights into a running engine, in place, through the worker extension; then dropping its prefix
cache (KV computed with the old weights must not be reused).

An engine in this process (colocated) receives the tensors themselves, one call per parameter, so a gathered
ZeRO-3 parameter can be released before the next is gathered. An engine in other processes (separate GPUs)
receives CPU copies serialized with safetensors, in chunks of about ``bucket_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .worker_extension import LOAD_SERIALIZED, LOAD_WEIGHTS

__all__ = ["push_weights"]


def _load(engine, method: str, payload, names: list[str]) -> None:
    try:
        results = engine.collective_rpc(method, args=(payload,))
    except Exception as error:
        shown = ", ".join(repr(name) for name in names[:3]) + (", ..." if len(names) > 3 else "")
        raise RuntimeError(
            f"The vLLM engine failed to load weight(s) {shown}: {error}. The engine was built from the model's "
            "config; an unknown name or a shape mismatch means the model changed since it was saved (e.g. resized "
            "embeddings) or vLLM names this architecture's weights differently from its Hugging Face modules."
        ) from error
    if any(result != len(names) for result in results):
        raise RuntimeError(f"The vLLM workers loaded {results} tensors of the {len(names)} sent.")


def _push_tensors(engine, weights: Iterable[tuple[str, torch.Tensor]]) -> int:
    count = 0
    for name, tensor in weights:
        _load(engine, LOAD_WEIGHTS, [(name, tensor)], [name])
        count += 1
    return count


def _push_serialized(engine, weights: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> int:
    from safetensors.torch import save

    count, bucket, size = 0, {}, 0

    def flush():
        if bucket:
            _load(engine, LOAD_SERIALIZED, save(bucket), list(bucket))
            bucket.clear()

    for name, tensor in weights:
        bucket[name] = tensor.detach().to("cpu", copy=True).contiguous()
        size += bucket[name].numel() * bucket[name].element_size()
        count += 1
        if size >= bucket_bytes:
            flush()
            size = 0
    flush()
    return count


def push_weights(
    engine, weights: Iterable[tuple[str, torch.Tensor]], *, in_process: bool, bucket_bytes: int
) -> int:
    """Load ``weights`` into ``engine`` in place and reset its prefix cache; return how many tensors were sent.

    Args:
        engine: a ``vllm.LLM`` started with :data:`iterframe_vllm.engine.WORKER_EXTENSION`.
        weights: ``(checkpoint name, tensor)`` pairs, e.g. :func:`iterframe_vllm.weights.full_weights`.
        in_process: the engine's worker runs in this process (colocated), so tensors are passed as they are.
        bucket_bytes: chunk size for an engine in other processes.
    """
    if in_process:
        count = _push_tensors(engine, weights)
    else:
        count = _push_serialized(engine, weights, bucket_bytes)
    engine.reset_prefix_cache()
    return count
