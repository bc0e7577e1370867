"""A test-only iterframe plugin that stops its own process at a named point of a run.

``ITERFRAME_FAULT_AT=SIGNAL:POINT:ITERATION`` (e.g. ``KILL:optimizer-step:2``) sends ``SIGNAL`` (KILL, TERM or
INT) to the running process when the run reaches ``POINT`` in 0-based ``ITERATION``:

- ``generation``: at the generator's first forward pass (the model in eval mode), before any token is produced;
- ``optimizer-step``: right after ``optimizer.step()`` changed the weights in memory, before the update is counted;
- ``checkpoint``: the loop checkpoint's weights are written to its temporary folder, its optimizer state not yet.

The crash tests load it through an entry point (a ``*.dist-info`` on ``PYTHONPATH``), like any installed plugin,
or register it in-process.
"""

from __future__ import annotations

import os
import signal

from iterframe import hookimpl

FAULT_ENV = "ITERFRAME_FAULT_AT"
_current = {"iteration": None}


def _stop_if_at(point: str) -> None:
    signal_name, fault_point, iteration = (os.environ.get(FAULT_ENV, "") + "::-1").split(":")[:3]
    if point == fault_point and _current["iteration"] == int(iteration):
        os.kill(os.getpid(), getattr(signal, f"SIG{signal_name}"))


def _wrap(owner, attribute: str, before=None, after=None) -> None:
    original = getattr(owner, attribute)

    def wrapper(*args, **kwargs):
        if before:
            before(*args, **kwargs)
        result = original(*args, **kwargs)
        if after:
            after(*args, **kwargs)
        return result

    setattr(owner, attribute, wrapper)


@hookimpl
def on_run_start(context):
    trainer = context.trainer
    trainer.model.register_forward_pre_hook(
        lambda module, args: None if module.training else _stop_if_at("generation")
    )
    _wrap(trainer.optimizer, "step", after=lambda *a, **k: _stop_if_at("optimizer-step"))
    _wrap(trainer, "_save_optimizer_and_scheduler", before=lambda *a, **k: _stop_if_at("checkpoint"))


@hookimpl
def on_iteration_start(context, iteration, prompts):
    _current["iteration"] = iteration
