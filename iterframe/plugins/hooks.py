"""Calls the lifecycle hooks of :mod:`iterframe.plugins.hookspecs` on every registered plugin, for one run."""

from __future__ import annotations

from typing import Any

from iterframe.plugins.components import RunContext

__all__ = ["Hooks"]


class Hooks:
    """The run's lifecycle hooks, always called with keywords and the run's ``context``.

    Args:
        context: the :class:`~iterframe.RunContext` handed to every hook.
    """

    def __init__(self, context: RunContext):
        self.context = context

    @property
    def manager(self):
        from iterframe.plugins.manager import get_plugin_manager

        return get_plugin_manager()

    def call(self, name: str, **kwargs: Any) -> list[Any]:
        """Call hook ``name`` on every plugin; return the non-``None`` results (pluggy's order)."""
        return getattr(self.manager.hook, name)(context=self.context, **kwargs)

    def call_each(self, name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call hook ``name`` one plugin at a time (in pluggy's order); return ``(plugin name, result)`` pairs.

        For hooks whose result must be traced to the plugin that gave it (``on_samples_scored``).
        """
        manager = self.manager
        implementations = [
            impl for impl in getattr(manager.hook, name).get_hookimpls() if not (impl.wrapper or impl.hookwrapper)
        ]
        plugins = [impl.plugin for impl in implementations]
        answers = []
        for impl in reversed(implementations):
            others = [plugin for plugin in plugins if plugin is not impl.plugin]
            results = manager.subset_hook_caller(name, remove_plugins=others)(context=self.context, **kwargs)
            answers.append((impl.plugin_name, results[0] if results else None))
        return answers
