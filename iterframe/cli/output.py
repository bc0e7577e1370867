"""How much ``iterframe run`` prints around a run: ``-q`` errors and the closing summary only, ``-v`` also
iterframe's info messages (why the hf generator fell back to ``generate()``, why training is padded, ...)."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import io
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


#: Modules that print to standard output when imported: transformers' integrations announce WANDB_MODE=offline,
#: which the user set (an expected notice, dropped like DeepSpeed's).
_PRINTING_MODULES = ("transformers.integrations.integration_utils",)


class _StdoutToStderrLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # get_source, get_data, ... as the module's own loader has them
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.loader.exec_module(module)


class _StdoutToStderrOnImport(importlib.abc.MetaPathFinder):
    """Imports the :data:`_PRINTING_MODULES` with their prints dropped, so that what a command writes to stdout
    (``--print-config``'s YAML) is all there is on it, and stderr starts with the run's own lines."""

    def find_spec(self, name, path, target=None):
        if name not in _PRINTING_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _StdoutToStderrLoader(spec.loader)
        return spec


def silence_expected_notices() -> None:
    """For the rest of the process: install the :class:`_ExpectedNotices` filter on DeepSpeed's logger, and drop
    what the :data:`_PRINTING_MODULES` print when imported."""
    deepspeed_logger = logging.getLogger("DeepSpeed")
    if not any(isinstance(item, _ExpectedNotices) for item in deepspeed_logger.filters):
        deepspeed_logger.addFilter(_ExpectedNotices())
    if not any(isinstance(finder, _StdoutToStderrOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _StdoutToStderrOnImport())


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
