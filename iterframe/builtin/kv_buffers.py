"""A dynamic KV cache's keys and values moved into buffers sized for a whole decode, so that each step writes
its token in place instead of concatenating (copying) the cache of every layer."""

from __future__ import annotations

import functools
from typing import Optional

import torch

__all__ = ["PreallocatedKV"]


class PreallocatedKV:
    """Holds, for every layer of a filled ``DynamicCache``, key and value buffers with room for ``capacity``
    positions; the layers' ``keys``/``values`` become views of the filled part and their ``update`` writes into
    the buffers. Use :meth:`attach`, which leaves caches of any other kind as they are."""

    def __init__(self, layers: list, capacity: int):
        self.layers = layers
        self.buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for index, layer in enumerate(layers):
            self.buffers.append((self._grow(layer.keys, capacity), self._grow(layer.values, capacity)))
            layer.update = functools.partial(self._append, index)
        self._view_all(layers[0].keys.shape[-2])

    @classmethod
    def attach(cls, cache, capacity: int) -> Optional[PreallocatedKV]:
        """Buffers for ``cache`` when each of its layers is a plain, filled dynamic layer; else ``None``."""
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer or layer.keys.dim() != 4 for layer in layers):
            return None
        return cls(layers, capacity)

    @staticmethod
    def _grow(tensor: torch.Tensor, capacity: int) -> torch.Tensor:
        buffer = tensor.new_empty((*tensor.shape[:2], capacity, tensor.shape[3]))
        buffer[:, :, : tensor.shape[2]] = tensor
        return buffer

    def _view_all(self, length: int) -> None:
        for layer, (keys, values) in zip(self.layers, self.buffers):
            layer.keys, layer.values = keys[:, :, :length], values[:, :, :length]

    def _append(self, index: int, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        layer, (keys, values) = self.layers[index], self.buffers[index]
        start, end = layer.keys.shape[2], layer.keys.shape[2] + key_states.shape[2]
        if end > keys.shape[2]:
            raise RuntimeError(f"the KV buffers hold {keys.shape[2]} positions; position {end} was written")
        keys[:, :, start:end] = key_states
        values[:, :, start:end] = value_states
        layer.keys, layer.values = keys[:, :, :end], values[:, :, :end]
        return layer.keys, layer.values

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (batch indices) of every buffer."""
        length = self.layers[0].keys.shape[2]
        self.buffers = [(keys[rows], values[rows]) for keys, values in self.buffers]
        self._view_all(length)
