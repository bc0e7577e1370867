"""How much ``iterframe run`` prints around a run: ``-q`` errors and the closing summary only, ``-v`` also
iterframe's info messages (why the hf generator fell back to ``generate()``, why training is padded, ...)."""

from __future__ import annotations

import contextlib
import logging
import sys

__all__ = ["LIBRARY_LOGGERS", "output_mode", "silence_expected_notices"]

#: Loggers of libraries that print warnings and notices of their own during a run (DeepSpeed announces the
#: accelerator it picked, for one); ``-q`` lets only their errors through.
LIBRARY_LOGGERS = ("iterframe", "DeepSpeed", "accelerate", "datasets", "transformers", "torch")


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


class _ExpectedNotices(logging.Filter):
    """Drops library notices that say only what is expected: DeepSpeed, imported by accelerate, announcing that
    it found no GPU on a machine that has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Setting accelerator to CPU.")


def silence_expected_notices() -> None:
    """Install the :class:`_ExpectedNotices` filter on DeepSpeed's logger for the rest of the process."""
    deepspeed_logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(item, _ExpectedNotices) for item in deepspeed_logger.filters):
        deepspeed_logger.addFilter(_ExpectedNotices())


@contextlib.contextmanager
def output_mode(quiet: bool, verbose: bool):
    """Inside the block: with ``quiet``, only errors from the :data:`LIBRARY_LOGGERS`; with ``verbose``,
    iterframe's INFO messages on stderr. Everything is as before after the block."""
    iterframe_logger = logging.getLogger("iterframe")
    errors_only, handler, level = _ErrorsOnly(), None, iterframe_logger.level
    if quiet:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).addFilter(errors_only)
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        iterframe_logger.addHandler(handler)
        iterframe_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        if quiet:
            for name in LIBRARY_LOGGERS:
                logging.getLogger(name).removeFilter(errors_only)
        if handler is not None:
            iterframe_logger.removeHandler(handler)
            iterframe_logger.setLevel(level)
