"""A thread count for training tiny models on CPU.

torch uses one thread per core by default. For a model of a few million parameters each operation is too
small to share between threads, and on a machine whose cores are busy with other work the threads wait on
each other: the demo's step() went from about 600 to about 20 tokens/s with 2 threads beside other jobs
(benchmarks/README.md). So when nobody chose a thread count (``OMP_NUM_THREADS`` unset) and the model is tiny,
the trainer uses one thread; ``OMP_NUM_THREADS`` (or ``torch.set_num_threads`` after building the trainer)
overrides it.
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["TINY_MODEL_PARAMETERS", "use_one_thread_for_tiny_models"]

logger = logging.getLogger(__name__)

#: Models below this many parameters train on one CPU thread unless OMP_NUM_THREADS says otherwise.
TINY_MODEL_PARAMETERS = 5_000_000


def use_one_thread_for_tiny_models(model, device) -> bool:
    """Set torch to one thread when ``model`` is tiny, trains on CPU and ``OMP_NUM_THREADS`` is unset; return
    whether it did."""
    if os.environ.get("OMP_NUM_THREADS") or torch.device(device).type != "cpu" or torch.get_num_threads() == 1:
        return False
    parameters = sum(parameter.numel() for parameter in model.parameters())
    if parameters >= TINY_MODEL_PARAMETERS:
        return False
    logger.info(
        "Training a %.2fM-parameter model on CPU with 1 thread instead of %d (set OMP_NUM_THREADS to choose).",
        parameters / 1e6,
        torch.get_num_threads(),
    )
    torch.set_num_threads(1)
    return True
