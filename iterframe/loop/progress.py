"""Progress bars of the loop (iterations, generation, training); silent when disabled."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["Progress"]


class Progress:
    """tqdm bars: one for the iterations, one at a time below it for the stage in progress.

    Args:
        disabled: show nothing (``quiet`` runs and processes other than the main one).
    """

    def __init__(self, disabled: bool = False):
        self.disabled = disabled

    def iterations(self, first: int, total: int) -> Iterator[int]:
        """Iterate over ``range(first, total)`` with a bar that starts at ``first`` of ``total``."""
        from tqdm.auto import tqdm

        with tqdm(total=total, initial=first, desc="iterations", unit="it", disable=self.disabled) as bar:
            for iteration in range(first, total):
                yield iteration
                bar.update(1)

    @contextlib.contextmanager
    def bar(self, total: int, description: str):
        """A transient bar for one stage of an iteration; call ``update(n)`` on what it yields."""
        from tqdm.auto import tqdm

        with tqdm(total=total, desc=description, leave=False, disable=self.disabled, position=1) as bar:
            yield bar
