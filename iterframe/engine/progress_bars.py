"""Switching transformers' own progress bars off for a while (imports transformers only when used)."""

from __future__ import annotations

import contextlib

__all__ = ["without_transformers_progress_bars"]


@contextlib.contextmanager
def without_transformers_progress_bars():
    """Hide transformers' own bars ("Writing model shards", "Loading weights") inside the block; restored after."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()
