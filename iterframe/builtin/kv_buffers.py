"""A dynamic KV cache's keys and values moved into one buffer sized for a whole decode, so that each step writes
its token in place instead of concatenating (copying) the cache of every layer."""

from __future__ import annotations

import functools
from typing import Optional

import torch

__all__ = ["PreallocatedKV"]


class PreallocatedKV:
    """One [layers, 2, rows x repeats, heads, capacity, dim] buffer for the keys and values of a filled
    ``DynamicCache``, each row of the cache repeated ``repeats`` times (consecutively, as
    ``batch_repeat_interleave`` repeats them). The layers' ``keys``/``values`` become views of the filled part
    and their ``update`` writes into the buffer. One allocation, not one per layer, so that it is returned to
    the system when the decode ends. Use :meth:`attach` (which leaves caches of any other kind as they are),
    and :meth:`release` when done."""

    def __init__(self, layers: list, capacity: int, repeats: int = 1):
        rows, heads, self._filled, dim = layers[0].keys.shape
        first = layers[0].keys
        self.layers = layers
        self.buffer = first.new_empty((len(layers), 2, rows * repeats, heads, capacity, dim))
        by_prompt = self.buffer.view(len(layers), 2, rows, repeats, heads, capacity, dim)
        for index, layer in enumerate(layers):
            for kind, tensor in enumerate((layer.keys, layer.values)):
                by_prompt[index, kind, :, :, :, : self._filled] = tensor[:, None]  # broadcast, no repeated copy
            layer.keys = layer.values = None
            layer.update = functools.partial(self._append, index)
        self._view_all()

    @classmethod
    def attach(cls, cache, capacity: int, repeats: int = 1) -> Optional[PreallocatedKV]:
        """A buffer for ``cache`` when its layers are plain, filled dynamic layers of one shape; else ``None``."""
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer or layer.keys is None for layer in layers):
            return None
        shapes = {tuple(tensor.shape) for layer in layers for tensor in (layer.keys, layer.values)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 4:
            return None
        return cls(layers, capacity, repeats)

    def _view_all(self) -> None:
        for layer, (keys, values) in zip(self.layers, self.buffer):
            layer.keys, layer.values = keys[:, :, : self._filled], values[:, :, : self._filled]

    def _append(self, index: int, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        start, end = self._filled_of(index), self._filled_of(index) + key_states.shape[2]
        if end > self.buffer.shape[4]:
            raise RuntimeError(f"the KV buffer holds {self.buffer.shape[4]} positions; position {end} was written")
        keys, values = self.buffer[index]
        keys[:, :, start:end] = key_states
        values[:, :, start:end] = value_states
        layer = self.layers[index]
        layer.keys, layer.values = keys[:, :, :end], values[:, :, :end]
        if index == len(self.layers) - 1:
            self._filled = end
        return layer.keys, layer.values

    def _filled_of(self, index: int) -> int:
        return self.layers[index].keys.shape[2]

    def release(self) -> None:
        """Hand the layers back their own ``update`` and free the buffer now (the layers and this object refer
        to each other, so without this the buffer would wait for the garbage collector)."""
        for layer in self.layers:
            layer.__dict__.pop("update", None)
            layer.keys = layer.values = None
        self.layers, self.buffer = [], None

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (batch indices) of the buffer."""
        self.buffer = self.buffer[:, :, rows]
        self._view_all()
