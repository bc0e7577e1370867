"""User functions named in options: ``"package.module:function"`` or ``"path/to/file.py:function"``, and the base
of the rewards that call one (``python``, ``trl``, ``verl``, ``openrlhf``)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from iterframe.plugins.components import PooledReward, RunContext, Sample
from iterframe.plugins.reward_pool import batches_of

__all__ = ["FunctionOptionReward", "call_each", "is_async", "load_callable"]


def _import_module(module_ref: str, spec: str):
    if module_ref.endswith(".py"):
        if not os.path.isfile(module_ref):
            raise ValueError(f"function={spec!r}: file {module_ref!r} does not exist.")
        module_name = "iterframe_user_reward_" + re.sub(r"\W", "_", os.path.abspath(module_ref))
        file_spec = importlib.util.spec_from_file_location(module_name, module_ref)
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(module_ref)
    except ModuleNotFoundError as error:
        if error.name != module_ref.split(".")[0] or _current_directory_searched():
            raise _import_error(module_ref, spec, error) from error
    sys.path.append(os.getcwd())  # the current directory, searched as `python -m` would
    try:
        return importlib.import_module(module_ref)
    except ImportError as error:
        raise _import_error(module_ref, spec, error) from error


def _current_directory_searched() -> bool:
    here = os.getcwd()
    return any(os.path.abspath(entry or ".") == here for entry in sys.path)


def _import_error(module_ref: str, spec: str, error: ImportError) -> ValueError:
    """A one-line error that names the module, why it did not import, and the ``file.py:function`` form."""
    file_form = f"{module_ref.replace('.', os.sep)}.py:{spec.rpartition(':')[2]}"
    return ValueError(
        f"function={spec!r}: cannot import module {module_ref!r} ({error}); the current directory and Python's "
        f"path were searched. Name the file instead, e.g. {file_form!r}."
    )


def load_callable(spec: str) -> Callable:
    """Resolve ``"package.module:attr"`` (or ``"path/to/file.py:attr"``; ``attr`` may be dotted) to a callable."""
    module_ref, separator, attribute_path = spec.rpartition(":")
    if not separator or not module_ref or not attribute_path:
        raise ValueError(f"function={spec!r} must look like 'package.module:function' or 'file.py:function'.")
    target = _import_module(module_ref, spec)
    for attribute in attribute_path.split("."):
        if not hasattr(target, attribute):
            raise ValueError(f"function={spec!r}: {module_ref!r} has no attribute {attribute_path!r}.")
        target = getattr(target, attribute)
    if not callable(target):
        raise ValueError(f"function={spec!r} is a {type(target).__name__}, not a callable.")
    return target


def is_async(function: Callable) -> bool:
    """Whether calling ``function`` (an ``async def`` function, or an object whose ``__call__`` is one) gives a
    coroutine to await."""
    method = type(function).__call__ if callable(function) else None
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(method)


async def _gathered(results: list) -> list:
    async def ready(value):
        return value

    return list(await asyncio.gather(*(r if inspect.isawaitable(r) else ready(r) for r in results)))


def call_each(calls: list[Callable[[], Any]]) -> list:
    """What each of ``calls`` returns, in order; the coroutines of calls to an async function are awaited
    concurrently, in one event loop (in a thread of its own when this thread already runs one)."""
    results: list = []
    try:
        for call in calls:
            results.append(call())
    except BaseException:
        for result in results:
            if inspect.iscoroutine(result):
                result.close()
        raise
    if not any(inspect.isawaitable(result) for result in results):
        return results
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_gathered(results))
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, _gathered(results)).result()


class FunctionOptionReward(PooledReward):
    """Base of the rewards that call a user's function, named by the ``function`` option (loaded in ``setup``, and
    again in each worker process: a function loaded from a file cannot be pickled) or passed in code with
    :meth:`from_function`. The function gets the samples of one prompt per call (every sample of the iteration
    with ``workers=0``), as TRL gives a reward function a batch: it may compare completions. An ``async def``
    function gets one prompt's samples per call, the calls awaited concurrently (:meth:`call_groups`)."""

    batching = "prompt"

    @classmethod
    def from_function(cls, function: Callable, **options):
        """This reward calling ``function``, a function defined at the top level of an importable module (worker
        processes import it by name); ``options`` are the reward's other options."""
        reward = cls(cls.Options(function=f"{function.__module__}:{function.__qualname__}", **options))
        reward.function, reward.function_given = function, True
        return reward

    def setup(self, context: RunContext) -> None:
        self.loaded_function()

    def loaded_function(self) -> Callable:
        if getattr(self, "function", None) is None:
            self.function = load_callable(self.options.function)
        return self.function

    def call_groups(self, samples: list[Sample]) -> list[list[int]]:
        """The indices of ``samples`` that one call of the function gets: all of them, or, for an async function,
        those of each prompt, the calls awaited concurrently (:func:`call_each`)."""
        if is_async(self.loaded_function()):
            return batches_of(self, samples, in_process=False)
        return [list(range(len(samples)))] if samples else []

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if not state.get("function_given"):
            state["function"] = None
        return state
