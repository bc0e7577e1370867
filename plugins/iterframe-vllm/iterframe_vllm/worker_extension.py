"""Runs inside every vLLM worker (``LLM(worker_extension_cls=...)``): loads pushed weights into its model.

vLLM mixes this class into its worker class, so ``self`` is the worker; the methods are called through
``LLM.collective_rpc(name, args=...)``. Their names are prefixed so they cannot clash with the worker's own.
"""

from __future__ import annotations

import contextlib

__all__ = ["LOAD_SERIALIZED", "LOAD_WEIGHTS", "WeightLoaderExtension"]

LOAD_WEIGHTS = "iterframe_load_weights"
LOAD_SERIALIZED = "iterframe_load_serialized"


def _config_scope(worker):
    """vLLM's current-config scope around weight loading (some weight loaders read it), when available."""
    try:
        from vllm.config import set_current_vllm_config
    except ImportError:
        return contextlib.nullcontext()
    config = getattr(worker, "vllm_config", None)
    return contextlib.nullcontext() if config is None else set_current_vllm_config(config)


class WeightLoaderExtension:
    """Weight loading entry points of a vLLM worker."""

    def iterframe_load_weights(self, weights) -> int:
        """Load ``(checkpoint name, tensor)`` pairs into the worker's model (each tensor-parallel worker keeps
        its own shard); return how many tensors were loaded."""
        weights = [(name, tensor) for name, tensor in weights]
        get_model = getattr(self, "get_model", None)
        model = get_model() if callable(get_model) else self.model_runner.model
        with _config_scope(self):
            model.load_weights(weights=weights)
        return len(weights)

    def iterframe_load_serialized(self, payload: bytes) -> int:
        """Load a safetensors-serialized chunk of weights (from a trainer in another process)."""
        from safetensors.torch import load

        device = getattr(self, "device", None)
        tensors = load(bytes(payload))
        weights = [(name, tensor if device is None else tensor.to(device)) for name, tensor in tensors.items()]
        return self.iterframe_load_weights(weights)
