"""A dynamic KV cache's keys and values moved into buffers sized for a whole decode, so that each step writes
its token in place instead of concatenating (copying) the cache of every layer."""

from __future__ import annotations

import functools
from typing import Optional

import torch

__all__ = ["PreallocatedKV"]


class PreallocatedKV:
    """For every layer of a filled ``DynamicCache``, key and value buffers [rows x repeats, heads, capacity,
    dim], each row of the cache repeated ``repeats`` times (consecutively, as ``batch_repeat_interleave``
    repeats them). The layers' ``keys``/``values`` become views of the filled part and their ``update`` writes
    into the buffers. Buffers of one layer's size, like the tensors a dynamic cache allocates, so that memory the
    process already holds serves them. Use :meth:`attach` (which leaves caches of any other kind as they are),
    and :meth:`release` when done."""

    def __init__(self, layers: list, capacity: int, repeats: int = 1):
        self.layers = layers
        self._filled = layers[0].keys.shape[2]
        self.buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for index, layer in enumerate(layers):
            self.buffers.append(
                (self._fill(layer.keys, capacity, repeats), self._fill(layer.values, capacity, repeats))
            )
            layer.keys = layer.values = None  # the unrepeated cache can go now
            layer.update = functools.partial(self._append, index)
        self._view_all()

    @classmethod
    def attach(cls, cache, capacity: int, repeats: int = 1) -> Optional[PreallocatedKV]:
        """Buffers for ``cache`` when its layers are plain, filled dynamic layers of one length; else ``None``."""
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer or layer.keys is None for layer in layers):
            return None
        tensors = [tensor for layer in layers for tensor in (layer.keys, layer.values)]
        if any(tensor.dim() != 4 for tensor in tensors) or len({tensor.shape[2] for tensor in tensors}) != 1:
            return None
        return cls(layers, capacity, repeats)

    @staticmethod
    def _fill(tensor: torch.Tensor, capacity: int, repeats: int) -> torch.Tensor:
        """A buffer whose first positions hold ``tensor``'s, each row written ``repeats`` times by broadcasting
        (no repeated copy of the cache is made first)."""
        rows, heads, filled, dim = tensor.shape
        buffer = tensor.new_empty((rows * repeats, heads, capacity, dim))
        buffer.view(rows, repeats, heads, capacity, dim)[:, :, :, :filled] = tensor[:, None]
        return buffer

    def _view_all(self) -> None:
        for layer, (keys, values) in zip(self.layers, self.buffers):
            layer.keys, layer.values = keys[:, :, : self._filled], values[:, :, : self._filled]

    def _append(self, index: int, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        layer, (keys, values) = self.layers[index], self.buffers[index]
        start = layer.keys.shape[2]
        end = start + key_states.shape[2]
        if end > keys.shape[2]:
            raise RuntimeError(f"the KV buffers hold {keys.shape[2]} positions; position {end} was written")
        keys[:, :, start:end] = key_states
        values[:, :, start:end] = value_states
        layer.keys, layer.values = keys[:, :, :end], values[:, :, :end]
        if index == len(self.layers) - 1:
            self._filled = end
        return layer.keys, layer.values

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (batch indices) of every buffer."""
        self.buffers = [(keys[rows], values[rows]) for keys, values in self.buffers]
        self._view_all()

    def release(self) -> None:
        """Hand the layers back their own ``update`` and free the buffers now (the layers and this object refer
        to each other, so without this the buffers would wait for the garbage collector)."""
        for layer in self.layers:
            layer.__dict__.pop("update", None)
            layer.keys = layer.values = None
        self.layers, self.buffers = [], []
