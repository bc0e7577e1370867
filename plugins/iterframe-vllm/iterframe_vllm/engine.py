"""Starting, sharing and stopping vLLM engines; vLLM itself is imported only when an engine starts.

What the engine is built from: the trainer's model folder when the model was loaded from disk, otherwise only its
config (``load_format="dummy"``), because the current weights are pushed into every new engine right after it
starts (:mod:`iterframe_vllm.weight_sync`). The tokenizer is always the trainer's, saved next to the engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any, Optional

from .options import VLLMOptions, parse_devices
from .placement import ProcessLayout

__all__ = [
    "WORKER_EXTENSION",
    "EngineHandle",
    "VLLMNotInstalledError",
    "check_vllm_installed",
    "SharedEngines",
    "create_engine",
    "engine_kwargs",
    "engine_model_source",
    "engine_seed",
    "launch_environment",
    "require_vllm",
    "sampling_params_kwargs",
    "shutdown_engine",
    "stop_engine",
]

#: Mixed into every vLLM worker so weights can be loaded through ``LLM.collective_rpc``.
WORKER_EXTENSION = "iterframe_vllm.worker_extension.WeightLoaderExtension"

INSTALL_HINT = (
    "The vllm generator needs vLLM, which is not installed here. On a machine with a CUDA GPU run "
    "pip install 'iterframe-vllm[vllm]' (or pip install vllm), or choose another generator (--generator hf)."
)


class VLLMNotInstalledError(ImportError, ValueError):
    """vLLM is not installed (a ``ValueError`` too, so the command line reports it as a bad choice of
    generator, before the run writes anything)."""


def check_vllm_installed() -> None:
    """Raise :class:`VLLMNotInstalledError` unless vLLM can be imported (without importing it)."""
    if "vllm" in sys.modules:
        installed = sys.modules["vllm"] is not None
    else:
        installed = importlib.util.find_spec("vllm") is not None
    if not installed:
        raise VLLMNotInstalledError(INSTALL_HINT)


def require_vllm():
    """Import and return the ``vllm`` module, or raise :class:`VLLMNotInstalledError` saying how to install it."""
    try:
        import vllm
    except ImportError as error:
        raise VLLMNotInstalledError(INSTALL_HINT) from error
    return vllm


def create_engine(**kwargs):
    """``vllm.LLM(**kwargs)``."""
    return require_vllm().LLM(**kwargs)


def shutdown_engine(engine, in_process: bool) -> None:
    """Stop an engine's core (and its worker processes, if any) so its GPU memory can be released; for an
    engine in this process, also drop vLLM's parallel groups, so that a later engine can set them up again."""
    core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
    if core is not None and callable(getattr(core, "shutdown", None)):
        core.shutdown()
    parallel_state = sys.modules.get("vllm.distributed.parallel_state")
    if in_process and callable(getattr(parallel_state, "destroy_model_parallel", None)):
        parallel_state.destroy_model_parallel()


# --- what the engine is built from --------------------------------------------------------------------------


def _config_holder(model):
    """The module whose ``config`` describes the architecture (the base model of a PEFT model)."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def engine_model_source(model, workdir: str) -> tuple[str, str]:
    """``(model_dir, load_format)`` for a new engine.

    The model's own folder (``config._name_or_path``) when it holds a ``config.json``; otherwise the model's
    config alone is saved to ``workdir/model`` and the engine starts with dummy weights, to be replaced by the
    first weight sync.
    """
    holder = _config_holder(model)
    config = holder.config
    path = getattr(config, "_name_or_path", "") or ""
    if path and os.path.isfile(os.path.join(path, "config.json")):
        return path, "auto"
    target = os.path.join(workdir, "model")
    config.save_pretrained(target)
    generation_config = getattr(holder, "generation_config", None)
    if generation_config is not None:
        generation_config.save_pretrained(target)
    return target, "dummy"


def engine_seed(options: VLLMOptions, run_seed: int, layout: ProcessLayout) -> int:
    """The engine's sampling seed: equal within a colocated tensor-parallel group (its ranks must sample the
    same tokens), different between groups (so data-parallel ranks do not draw the same samples)."""
    base = options.seed if options.seed is not None else run_seed
    if options.colocate:
        return base + layout.rank // options.tensor_parallel_size
    return base


def engine_kwargs(
    options: VLLMOptions, *, model_dir: str, tokenizer_dir: str, load_format: str, seed: int
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for these options."""
    kwargs: dict[str, Any] = {
        "model": model_dir,
        "tokenizer": tokenizer_dir,
        "load_format": load_format,
        "tensor_parallel_size": options.tensor_parallel_size,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "dtype": options.dtype,
        "enable_prefix_caching": options.enable_prefix_caching,
        "enforce_eager": options.enforce_eager,
        "seed": seed,
        "worker_extension_cls": WORKER_EXTENSION,
    }
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    if options.colocate:
        # one engine per training process, in that process, on its GPU (tensor parallel across the processes)
        kwargs["distributed_executor_backend"] = "external_launcher"
    return kwargs


def sampling_params_kwargs(options: VLLMOptions, num_samples: int, stop_token_ids: list[int]) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for ``num_samples`` completions of each prompt."""
    kwargs: dict[str, Any] = {
        "n": num_samples,
        "max_tokens": options.max_new_tokens,
        "stop": list(options.stop) or None,
        "stop_token_ids": list(stop_token_ids) or None,
        "skip_special_tokens": True,
    }
    if options.do_sample:
        # top_k=-1 turns top-k off in every vLLM version (newer ones also accept 0)
        kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k or -1)
    else:
        kwargs["temperature"] = 0.0  # vLLM's greedy decoding
    return kwargs


# --- the environment an engine starts in --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _visible_gpus(indices: list[int]) -> str:
    """``CUDA_VISIBLE_DEVICES`` for the process-local GPU ``indices`` (mapped through the current value)."""
    current = os.environ.get("CUDA_VISIBLE_DEVICES")
    if current is None or not current.strip():
        return ",".join(str(index) for index in indices)
    visible = [part.strip() for part in current.split(",") if part.strip()]
    for index in indices:
        if index >= len(visible):
            raise ValueError(
                f"device cuda:{index} does not exist: CUDA_VISIBLE_DEVICES={current!r} shows "
                f"{len(visible)} GPU(s)."
            )
    return ",".join(visible[index] for index in indices)


def _torch_distributed_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def launch_environment(options: VLLMOptions, layout: ProcessLayout) -> Iterator[None]:
    """Set what vLLM reads from the environment while an engine starts; restore the rest afterwards.

    Colocated engines use vLLM's ``external_launcher`` backend, which reads ``RANK``, ``LOCAL_RANK``,
    ``WORLD_SIZE`` and (when ``torch.distributed`` is not yet set up) ``MASTER_ADDR``/``MASTER_PORT``, and runs
    the engine in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, which stays set, as vLLM itself leaves it).
    A separate engine starts its worker processes with ``CUDA_VISIBLE_DEVICES`` narrowed to ``device``.
    """
    wanted: dict[str, str] = {}
    if options.colocate:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        wanted.update(RANK=str(layout.rank), LOCAL_RANK=str(layout.local_rank), WORLD_SIZE=str(layout.world_size))
        if not _torch_distributed_ready():
            wanted["MASTER_ADDR"] = os.environ.get("MASTER_ADDR", "127.0.0.1")
            wanted["MASTER_PORT"] = os.environ.get("MASTER_PORT") or str(_free_port())
    else:
        wanted["CUDA_VISIBLE_DEVICES"] = _visible_gpus(parse_devices(options.device))
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- sharing one engine between generators ------------------------------------------------------------------


@dataclasses.dataclass
class EngineHandle:
    """An engine and what belongs to it.

    Args:
        engine: the ``vllm.LLM`` (``None`` on processes that do not host one, with a separate engine).
        group: the processes whose prompts this engine serves together (see :mod:`iterframe_vllm.placement`).
        in_process: the engine's worker runs in this process (colocated).
        workdir: scratch folder holding the saved tokenizer (and config), removed with the engine.
        users: generators holding the handle.
    """

    engine: Any
    group: Any
    in_process: bool = True
    workdir: Optional[str] = None
    users: int = 1


class SharedEngines:
    """Engines shared by key: a generator and its greedy evaluation twin, which differ only in sampling
    options, use one engine instead of two."""

    def __init__(self):
        self._handles: dict[Any, EngineHandle] = {}

    def acquire(self, key, start: Callable[[], EngineHandle]) -> EngineHandle:
        """The handle for ``key``, started with ``start()`` if nobody holds one."""
        handle = self._handles.get(key)
        if handle is None:
            handle = self._handles[key] = start()
        else:
            handle.users += 1
        return handle

    def release(self, key) -> None:
        """Drop one user of ``key``'s engine; the last one stops it and removes its scratch folder."""
        handle = self._handles.get(key)
        if handle is None:
            return
        handle.users -= 1
        if handle.users > 0:
            return
        del self._handles[key]
        stop_engine(handle)


def stop_engine(handle: EngineHandle) -> None:
    """Shut the engine down, free its GPU memory and remove its scratch folder."""
    try:
        if handle.engine is not None:
            shutdown_engine(handle.engine, handle.in_process)
    finally:
        handle.engine = None
        gc.collect()
        _empty_cuda_cache()
        if handle.workdir is not None:
            shutil.rmtree(handle.workdir, ignore_errors=True)


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
