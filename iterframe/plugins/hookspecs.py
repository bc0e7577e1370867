"""Every hook iterframe calls. Plugins implement them with ``@iterframe.hookimpl``; all calls use keywords.

Registration hooks are called once per plugin when the plugin manager builds its component registry (and again
when plugins are registered or unregistered); lifecycle hooks are called by the loop (:mod:`iterframe.loop`) around
each stage of an iteration. Every hook is called on every plugin that implements it, one plugin at a time: an
exception or a wrong answer stops the run with an error naming the plugin, the hook and the iteration. An
implementation may take fewer arguments than the spec. ``docs/plugins.md`` documents each hook with an example.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("iterframe")
hookimpl = pluggy.HookimplMarker("iterframe")


# --- registration hooks -------------------------------------------------------------------------------------


@hookspec
def register_generators(register):
    """Contribute generators: call ``register(component, aliases=(), name=None)`` once per component.

    ``component`` is a subclass of :class:`iterframe.plugins.components.Generator`, or a configured instance of
    one (each use gets a copy, with the run's options on top of the instance's); ``name`` replaces the class's
    ``name``; ``aliases`` are other names it answers to. Returns nothing.
    """


@hookspec
def register_rewards(register):
    """Contribute rewards (:class:`~iterframe.plugins.components.Reward` subclasses or configured instances):
    call ``register(component, aliases=(), name=None)`` once per component. Returns nothing."""


@hookspec
def register_filters(register):
    """Contribute filters (:class:`~iterframe.plugins.components.Filter` subclasses or configured instances):
    call ``register(component, aliases=(), name=None)`` once per component. Returns nothing."""


@hookspec
def register_tokenizers(register):
    """Contribute sample tokenizers (:class:`~iterframe.plugins.components.SampleTokenizer` subclasses or
    configured instances): call ``register(component, aliases=(), name=None)`` once per component. Returns
    nothing."""


@hookspec
def register_loggers(register):
    """Contribute loggers (:class:`~iterframe.plugins.components.Logger` subclasses or configured instances):
    call ``register(component, aliases=(), name=None)`` once per component. Returns nothing."""


@hookspec
def register_commands(cli):
    """Add commands to the ``iterframe`` command line: ``cli`` is a ``click.Group``; add commands with
    ``@cli.command()`` or ``cli.add_command(command)``. Called when the command line looks for a command that is
    not built in, and to list the commands in ``iterframe --help``. A command named like a built-in one or like
    another plugin's is left out, with a warning. Returns nothing."""


@hookspec
def register_prompt_sources(register):
    """Contribute prompt sources: call ``register(name, load, description="")`` once per source. A dataset written
    ``NAME:SPEC`` (``--dataset reasoning-gym:chain_sum?size=200&seed=1``) is read by ``load(SPEC)``, which returns
    the rows (a list of dicts, as a file's rows would be) or ``{split: rows}``, and raises ``ValueError`` saying
    what is wrong with ``SPEC``. Returns nothing."""


# --- lifecycle hooks ----------------------------------------------------------------------------------------


@hookspec
def on_run_start(context):
    """The run is about to start its first iteration (also after ``--resume``). Returns nothing."""


@hookspec
def on_iteration_start(context, iteration, prompts):
    """An iteration starts. ``prompts`` holds the iteration's prompt records (``prompt_id``, ``prompt``,
    ``reference``, ``extra``) in generation order; the hook may read them, not change them. Returns nothing."""


@hookspec
def on_samples_generated(context, iteration, samples):
    """Completions exist but are not scored yet. The hook may edit samples' fields in place. Returns nothing."""


@hookspec
def on_samples_scored(context, iteration, samples):
    """Samples carry rewards, before the filter chain.

    Returns ``None`` (keep all) or a list of bools, one per sample: ``False`` drops the sample before the
    filters run (it is still recorded in the iteration's samples table, with ``dropped_by`` naming the plugin).
    A list of another length is an error.
    """


@hookspec
def before_step(context, iteration, batch):
    """Kept samples were tokenized into ``batch`` (``input_ids``/``attention_mask``/``labels``), about to be
    trained. The hook may edit the batch in place. Returns nothing."""


@hookspec
def after_step(context, iteration, stats):
    """``trainer.step()`` returned ``stats``. Returns ``None`` or a dict of extra metrics for the iteration
    (names: strings; values: numbers, strings or ``None``). A name iterframe's own metrics use, or that another
    plugin returned, is an error."""


@hookspec
def on_iteration_end(context, iteration, metrics):
    """The iteration finished; ``metrics`` is its row of ``metrics.jsonl``.

    Returns ``None`` or a dict of extra metrics, merged into the row before it is written (the rules of
    :func:`after_step`).
    """


@hookspec
def on_checkpoint_saved(context, iteration, path):
    """A checkpoint of the run was written to ``path``. Returns nothing."""


@hookspec
def on_run_end(context, metrics, error):
    """The run ended: ``metrics`` holds the last iteration's row (or ``None``), ``error`` the exception that
    stopped it (or ``None``). Every plugin's implementation is called even when one fails. Returns nothing."""
