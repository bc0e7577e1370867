"""Calling hooks one plugin at a time, so that a failure or a wrong answer names the plugin, the hook and the
moment (:func:`call_each`); the run's lifecycle hooks (:class:`Hooks`); and the metrics that hooks add to an
iteration (:class:`HookMetrics`).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

import pluggy

from iterframe.plugins.components import RunContext
from iterframe.plugins.errors import ComponentError, blame_hook

__all__ = ["LOOP_METRICS", "HookMetrics", "Hooks", "call_each", "check_metrics"]


def call_each(
    manager: pluggy.PluginManager,
    hook_name: str,
    arguments: Union[Mapping[str, Any], Callable[[str], Mapping[str, Any]]],
    *,
    iteration: Optional[int] = None,
    when: Optional[str] = None,
    check: Optional[Callable[[Any], None]] = None,
    failures: Optional[list[ComponentError]] = None,
) -> list[tuple[str, Any]]:
    """Call ``hook_name`` one plugin at a time, in pluggy's order; return ``(plugin name, answer)`` pairs.

    Args:
        manager: the plugin manager.
        hook_name: the hook to call.
        arguments: its keyword arguments, or a function of the plugin's name that returns them (a registration hook
            hands each plugin its own ``register`` callback).
        iteration: the iteration the call belongs to, for error messages.
        when: the moment, for error messages outside an iteration (default: setup, before the first iteration).
        check: called with every answer that is not ``None``; raises ``TypeError``/``ValueError`` for a wrong one.
        failures: when given, every plugin is called even when one fails, and the failures are appended to it
            instead of raised.

    Raises:
        ComponentError: (``kind="hook"``) an implementation raised, or ``check`` refused its answer; the message
            names the hook, the plugin and the moment, and the original error is the ``__cause__``.
    """
    hook_impls = getattr(manager.hook, hook_name).get_hookimpls()
    wrappers = [impl for impl in reversed(hook_impls) if impl.wrapper or impl.hookwrapper]  # outermost first
    implementations = [impl for impl in hook_impls if not (impl.wrapper or impl.hookwrapper)]
    plugins = [impl.plugin for impl in hook_impls]
    answers = []

    def call_implementations() -> None:
        for impl in reversed(implementations):  # pluggy calls the last registered first
            others = [plugin for plugin in plugins if plugin is not impl.plugin]
            kwargs = arguments(impl.plugin_name) if callable(arguments) else arguments
            try:
                with blame_hook(hook_name, impl.plugin_name, iteration, when):
                    results = manager.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)
                    answer = results[0] if results else None
                    if check is not None and answer is not None:
                        check(answer)
            except ComponentError as failure:
                if failures is None:
                    raise
                failures.append(failure)
                continue
            answers.append((impl.plugin_name, answer))

    moment = {"iteration": iteration, "when": when, "failures": failures}
    _inside_wrappers(manager, hook_name, wrappers, plugins, arguments, call_implementations, **moment)
    return answers


def _inside_wrappers(
    manager: pluggy.PluginManager,
    hook_name: str,
    wrappers: list[pluggy.HookImpl],
    plugins: list[Any],
    arguments: Union[Mapping[str, Any], Callable[[str], Mapping[str, Any]]],
    call_implementations: Callable[[], None],
    *,
    iteration: Optional[int],
    when: Optional[str],
    failures: Optional[list[ComponentError]],
) -> None:
    """Run ``call_implementations()`` inside the hook's wrappers (outermost first): each wrapper runs once, around
    all the implementations, as pluggy runs it, and a failure of the wrapper itself names the wrapper's plugin.
    An implementation's failure is raised even when a wrapper swallows it."""
    if not wrappers:
        call_implementations()
        return
    outer, inner = wrappers[0], wrappers[1:]
    entered: list[bool] = []
    inner_failures: list[ComponentError] = []

    def carried() -> None:  # the inner wrappers and the implementations, as one implementation of the call
        entered.append(True)
        try:
            _inside_wrappers(
                manager, hook_name, inner, plugins, arguments, call_implementations,
                iteration=iteration, when=when, failures=failures,
            )  # fmt: skip
        except ComponentError as failure:
            inner_failures.append(failure)
            raise

    others = [plugin for plugin in plugins if plugin is not outer.plugin]
    kwargs = arguments(outer.plugin_name) if callable(arguments) else arguments
    try:
        with blame_hook(hook_name, outer.plugin_name, iteration, when):
            manager.subset_hook_caller(hook_name, remove_plugins=others).call_extra([carried], dict(kwargs))
    except ComponentError as failure:
        if inner_failures:
            raise inner_failures[0]  # noqa: B904 (its own cause stands)
        if failures is None:
            raise
        failures.append(failure)
        if not entered:  # the wrapper failed before the implementations ran: they still run
            carried()
        return
    if inner_failures:
        raise inner_failures[0]


def check_metrics(answer: Any) -> None:
    """A metrics hook's answer: a dict of metric name (a non-empty string) to a number, a string or ``None``."""
    if not isinstance(answer, Mapping):
        raise ValueError(
            f"it returned {type(answer).__name__} {answer!r:.80}; it must return None or a dict of metrics, "
            "e.g. {'perplexity': 12.5}."
        )
    for key, value in answer.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"it returned the metric name {key!r}; metric names are non-empty strings.")
        if not (value is None or isinstance(value, (numbers.Real, str)) or callable(getattr(value, "item", None))):
            raise ValueError(
                f"it returned metric {key!r} = {type(value).__name__} {value!r:.60}; a metric is a number, a "
                "string or None."
            )


#: Metrics no hook may add, even to a row without them: the loop's eval (``eval/*``) and what it decided from it
#: (read back on resume, by the report and ``best/``), and the row's own identity.
LOOP_METRICS = ("eval/", "rolled_back", "stopped_early", "iteration", "global_step")


def _loop_metric(key: str) -> bool:
    return any(key.startswith(name) if name.endswith("/") else key == name for name in LOOP_METRICS)


class HookMetrics:
    """The metrics plugins add to one iteration's row (``after_step`` and ``on_iteration_end`` answers).

    A hook may add new metrics and update its own, but never replace one of iterframe's (the keys of ``row`` when
    this object is made), add one of the loop's (:data:`LOOP_METRICS`: ``eval/reward`` in a row without an eval
    would be judged as an eval on resume), nor replace another plugin's: each is refused with an error naming both.

    Args:
        row: the iteration's metrics row, updated in place by :meth:`add`.
        iteration: the iteration, for error messages.
    """

    def __init__(self, row: dict[str, Any], iteration: int):
        self.row = row
        self.iteration = iteration
        self.builtin = set(row)
        self.owners: dict[str, str] = {}

    def add(self, hook_name: str, answers: list[tuple[str, Mapping[str, Any]]]) -> None:
        """Merge each plugin's answer to ``hook_name`` into the row."""
        for plugin_name, metrics in answers:
            with blame_hook(hook_name, plugin_name, self.iteration):
                builtin = sorted(key for key in metrics if key in self.builtin or _loop_metric(key))
                if builtin:
                    raise ValueError(
                        f"it returned {', '.join(map(repr, builtin))}, which iterframe's own metrics use; return "
                        f"other names, e.g. {plugin_name + '/' + builtin[0]!r}."
                    )
                for key in metrics:
                    owner = self.owners.get(key, plugin_name)
                    if owner != plugin_name:
                        raise ValueError(
                            f"it returned {key!r}, which plugin {owner!r} already added to this iteration's "
                            f"metrics; one of them must use another name, e.g. {plugin_name + '/' + key!r}."
                        )
            self.owners.update(dict.fromkeys(metrics, plugin_name))
            self.row.update(metrics)


class Hooks:
    """The run's lifecycle hooks, called with keywords and the run's ``context``, one plugin at a time.

    Args:
        context: the :class:`~iterframe.RunContext` handed to every hook.
    """

    def __init__(self, context: RunContext):
        self.context = context

    @property
    def manager(self) -> pluggy.PluginManager:
        from iterframe.plugins.manager import get_plugin_manager

        return get_plugin_manager()

    def call(
        self,
        hook_name: str,
        *,
        check: Optional[Callable[[Any], None]] = None,
        when: Optional[str] = None,
        failures: Optional[list[ComponentError]] = None,
        **kwargs: Any,
    ) -> list[tuple[str, Any]]:
        """Call ``hook_name`` on every plugin (see :func:`call_each`); return ``(plugin name, answer)`` pairs."""
        return call_each(
            self.manager,
            hook_name,
            {"context": self.context, **kwargs},
            iteration=kwargs.get("iteration"),
            when=when,
            check=check,
            failures=failures,
        )

    def metrics(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Mapping[str, Any]]]:
        """Call a hook that answers ``None`` or a dict of metrics; return the plugins' dicts (checked)."""
        return [
            (plugin, answer) for plugin, answer in self.call(hook_name, check=check_metrics, **kwargs) if answer
        ]

    def run_end(self, metrics: Optional[dict[str, Any]], error: Optional[BaseException]) -> None:
        """Call every plugin's ``on_run_end``. When the run failed already, a failing hook is a warning, so that
        the error the user sees is the one that stopped the run."""
        failures: list[ComponentError] = []
        self.call("on_run_end", when="End of the run", failures=failures, metrics=metrics, error=error)
        if failures and error is None:
            raise failures[0]
        for failure in failures:
            warnings.warn(f"{failure} (while the run was stopping on: {error!r})", stacklevel=3)
