"""``iterframe.run(config, **overrides)``: what ``iterframe run`` does, from Python."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from iterframe.api.execution import execute_run, stop_on_sigterm
from iterframe.api.preparation import ConfigSource, PreparedRun, build_run_config, prepare_run
from iterframe.run_config import RunConfig

__all__ = ["RunResult", "execute", "existing_output_mode", "prepare", "run"]


@dataclasses.dataclass
class RunResult:
    """What a finished run left behind.

    Args:
        output_dir: the run's output directory (absolute).
        metrics: the rows of ``metrics.jsonl``, one per finished iteration (earlier ones included on resume).
        final_model_dir: ``OUTPUT_DIR/final`` (``from_pretrained`` loads it), or ``None`` when the run wrote none.
        config: the resolved config the run used (also saved as ``OUTPUT_DIR/config.yaml``).
    """

    output_dir: str
    metrics: list[dict[str, Any]]
    final_model_dir: Optional[str]
    config: RunConfig


def existing_output_mode(resume: bool, overwrite: bool) -> str:
    """``"resume"``, ``"overwrite"`` or ``"error"``; both at once is a ``ValueError``."""
    if resume and overwrite:
        raise ValueError(
            "resume and overwrite exclude each other: resume continues the run in the output directory, "
            "overwrite deletes it and starts again. Pass one of them."
        )
    return "resume" if resume else "overwrite" if overwrite else "error"


def prepare(
    config: ConfigSource = None,
    /,
    *,
    resume: bool = False,
    overwrite: bool = False,
    trust_config_code: bool = False,
    flags: Optional[Mapping[str, Any]] = None,
    assignments: Sequence[str] = (),
    **overrides: Any,
) -> PreparedRun:
    """Resolve and validate a run without writing anything (what ``iterframe run --dry-run`` checks, short of
    loading the model's config and tokenizer); the arguments are those of :func:`run`, plus the command line's
    ``flags`` and ``--set`` ``assignments``.

    Raises:
        ValueError: naming what is wrong (``RunConfigError`` for the config, output directory and model).
        PluginLoadError: an installed plugin failed to import.
    """
    existing_output = existing_output_mode(resume, overwrite)
    run_config, source = build_run_config(
        config,
        flags=flags,
        assignments=assignments,
        existing_output=existing_output,
        trust_config_code=trust_config_code,
        **overrides,
    )
    return prepare_run(run_config, source)


def execute(prepared: PreparedRun) -> RunResult:
    """Run a prepared run (SIGTERM stops it like Ctrl-C, as a ``KeyboardInterrupt``)."""
    from iterframe.loop.run_state import FINAL_DIR

    with stop_on_sigterm():
        rows = execute_run(prepared)
    output_dir = prepared.config.loop.output_dir
    final = os.path.join(output_dir, FINAL_DIR)
    return RunResult(output_dir, rows, final if os.path.isdir(final) else None, prepared.config)


def run(
    config: ConfigSource = None,
    /,
    *,
    resume: bool = False,
    overwrite: bool = False,
    trust_config_code: bool = False,
    **overrides: Any,
) -> RunResult:
    """Run the generate -> score -> filter -> train loop, as ``iterframe run`` does.

    Args:
        config: a YAML config file's path, or a dict in the same schema (see ``docs/config.md``). When neither it
            nor an override names a model or a dataset, the run is the built-in demo with these settings on top.
        resume: continue the run in the output directory after its last finished iteration (``--resume``).
        overwrite: replace the run in the output directory (``--overwrite``).
        trust_config_code: on resume, import the code that the run's saved ``config.yaml`` names (a ``python`` or
            ``trl`` reward's function) though no argument names it (``--trust-config-code``); without it such a
            run is refused, naming the code.
        **overrides: config keys, applied last: ``output_dir="runs/x"``, ``loop={"iterations": 2}`` (merged into
            the section), ``reward="answer-match"``. Components may also be Python objects:
            ``reward=my_function`` (a function ``(samples) -> list[float]``), ``filters=[MyFilter()]``.

    Returns:
        A :class:`RunResult`.

    Raises:
        ValueError: a bad config, dataset, component, output directory or model; nothing was written.
        KeyboardInterrupt: Ctrl-C or SIGTERM; finished iterations are kept (``resume=True`` continues).

    Example::

        result = iterframe.run({"loop": {"iterations": 2}}, output_dir="runs/demo")
        print(result.metrics[-1]["eval/reward"], result.final_model_dir)
    """
    return execute(
        prepare(config, resume=resume, overwrite=overwrite, trust_config_code=trust_config_code, **overrides)
    )
