"""Running other people's code: a process in its own session, under resource limits, killed as a group at its
deadline (:mod:`iterframe.sandbox.process`). The reward pool's workers and the ``code-tests`` reward use it."""

from iterframe.sandbox.process import (
    Finished,
    Limits,
    clean_environment,
    isolation_available,
    run,
    start,
    stop_group,
)

__all__ = ["Finished", "Limits", "clean_environment", "isolation_available", "run", "start", "stop_group"]
