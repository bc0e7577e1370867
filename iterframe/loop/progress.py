"""Progress bars of the loop (iterations, generation, training), and printing that never lands inside them.

Bars go to stderr and only where stderr is a terminal: redirected to a file or a pipe, it gets no carriage-return
redraws, but a short line as each stage starts (:meth:`Progress.stage`), so a log shows at once what the run is
doing. Text for the user (per-iteration lines and tables, the closing summary) goes through :func:`echo`, which
clears the bars, prints, and draws them again below.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Optional, TextIO

__all__ = ["LINE_EVERY_S", "Progress", "bars_wanted", "echo"]

#: Where no bars are drawn, a long stage says how far it got at most this often.
LINE_EVERY_S = 30.0


def bars_wanted() -> bool:
    """Whether progress bars can be drawn: stderr is a terminal, or this is a Jupyter kernel (widgets)."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def echo(text: str, file: Optional[TextIO] = None) -> None:
    """Print ``text`` (to stdout by default) without tearing a progress bar that is being drawn."""
    file = file or sys.stdout
    if "tqdm" in sys.modules:  # bars can only be on screen when tqdm was imported
        from tqdm import tqdm

        tqdm.write(text, file=file)
        file.flush()
    else:
        print(text, file=file, flush=True)


class Progress:
    """tqdm bars: one for the iterations, one at a time below it for the stage in progress.

    Args:
        disabled: show nothing (``quiet`` runs and processes other than the main one). Otherwise the bars show
            only where :func:`bars_wanted`.
    """

    def __init__(self, disabled: bool = False):
        self.disabled = disabled

    @property
    def _disable(self) -> bool:
        return self.disabled or not bars_wanted()

    def stage(self, text: str) -> None:
        """Say on stderr that a stage starts, where no bars are drawn (stderr is a file or a pipe)."""
        if not self.disabled and not bars_wanted():
            echo(text, file=sys.stderr)

    def iterations(self, first: int, total: int) -> Iterator[int]:
        """Iterate over ``range(first, total)`` with a bar that starts at ``first`` of ``total``."""
        from tqdm.auto import tqdm

        with tqdm(total=total, initial=first, desc="iterations", unit="it", disable=self._disable) as bar:
            for iteration in range(first, total):
                yield iteration
                bar.update(1)

    @contextlib.contextmanager
    def bar(self, total: int, description: str):
        """A transient bar for one stage of an iteration; call ``update(n)`` on what it yields. Where no bars are
        drawn, a line ``  DESCRIPTION: n/total`` on stderr at most every :data:`LINE_EVERY_S` seconds instead."""
        if not self.disabled and not bars_wanted():
            yield _ProgressLines(total, description)
            return
        from tqdm.auto import tqdm

        with tqdm(total=total, desc=description, leave=False, disable=self._disable, position=1) as bar:
            yield bar


class _ProgressLines:
    """How far a stage got, as a line on stderr when :data:`LINE_EVERY_S` seconds passed since the last one."""

    def __init__(self, total: int, description: str):
        self.total, self.description, self.done = total, description, 0
        self.last_line = time.monotonic()

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last_line >= LINE_EVERY_S and self.done < self.total:
            echo(f"  {self.description}: {self.done}/{self.total}", file=sys.stderr)
            self.last_line = now
