"""``iterframe.api.rescore(RUN_DIR, ...)``: judge a run's saved samples again with another reward or filters,
without generating them again (what ``iterframe rescore`` does)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional, Union

from iterframe.run_config import RunConfigError
from iterframe.run_config.files import CONFIG_FILE

__all__ = ["rescore"]

#: The ``--set`` keys rescoring takes: the reward's options and the filters'.
RESCORE_KEYS = ("reward", "filter", "filters")


def _components(
    reward: Any, filters: Any, assignments: Sequence[str], source: dict[str, Any], run_dir: str, trusted: bool
):
    """The reward and filters to judge with: those given (names, ``{name, options}`` mappings or objects; a reward
    may be a function), else the source run's (from its ``config.yaml``), with the ``--set`` assignments on top.
    Code the source's config names and the caller does not is imported only when ``trusted``."""
    from iterframe.api.config_code import check_config_code
    from iterframe.api.preparation import build_component, check_functions_import
    from iterframe.run_config import apply_overrides, normalise_config
    from iterframe.run_config.schema import SECTIONS, split_assignment

    for assignment in assignments:
        key = split_assignment(assignment)[0][0]
        if key not in RESCORE_KEYS:
            raise RunConfigError(
                f"--set {assignment!r}: rescoring takes reward and filter options only (reward.OPTION=VALUE, "
                "filter.NAME.OPTION=VALUE); the rest of a run's settings do not apply to it."
            )
    draft = normalise_config(
        {
            "reward": reward if reward is not None else source.get("reward"),
            "filters": list(filters) if filters is not None else source.get("filters") or [],
        }
    )
    draft = apply_overrides(draft, list(assignments))
    reward_spec = SECTIONS["reward"].resolve(draft["reward"], {})["reward"]
    filter_specs = SECTIONS["filters"].resolve(draft["filters"], {})["filters"]
    given = apply_overrides(normalise_config({"reward": reward, "filters": filters}), list(assignments))
    given_specs = [spec for spec in [given["reward"], *(given["filters"] or [])] if spec is not None]
    config_path = os.path.join(run_dir, CONFIG_FILE)
    check_config_code([reward_spec, *filter_specs], given_specs, config_path, trusted)
    reward_component = build_component(reward_spec)
    check_functions_import([reward_component])
    return reward_component, [build_component(spec) for spec in filter_specs]


def _check_output_dir(output_dir: str, overwrite: bool) -> None:
    from iterframe.loop.run_state import RUN_ARTIFACTS

    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise RunConfigError(f"Output directory {output_dir!r} is a file; choose another --output-dir.")
    found = [name for name in RUN_ARTIFACTS if os.path.lexists(os.path.join(output_dir, name))]
    if found and not overwrite:
        raise RunConfigError(
            f"Output directory {output_dir!r} already holds a run or a rescored set ({', '.join(found)}). Pass "
            "--overwrite to replace it, or choose another --output-dir."
        )


def rescore(
    run_dir: Union[str, os.PathLike],
    *,
    output_dir: Union[str, os.PathLike],
    reward: Any = None,
    filters: Optional[Sequence[Any]] = None,
    iterations: Union[None, int, str, range] = None,
    overwrite: bool = False,
    assignments: Sequence[str] = (),
    trust_config_code: bool = False,
):
    """Score the samples ``run_dir`` saved with ``reward``, filter them with ``filters`` and write them, with their
    metrics and provenance, to ``output_dir`` (see :func:`iterframe.loop.rescore.rescore_run`).

    Args:
        run_dir: the ``--output-dir`` of an ``iterframe run`` (or of an earlier rescore).
        output_dir: where the rescored set goes; ``overwrite`` replaces a run or set already there.
        reward: a reward name, ``{name: NAME, options: {...}}``, a ``Reward`` or a function; default: the source
            run's reward (from its ``config.yaml``).
        filters: names, mappings or ``Filter`` objects, in chain order; default: the source run's filters.
        iterations: which of the run's iterations: ``N``, ``"A:B"`` (A up to B-1), ``"A:"``, ``":B"``; default all.
        assignments: ``--set`` strings for the reward's and filters' options (``reward.OPTION=VALUE``,
            ``filter.NAME.OPTION=VALUE``).
        trust_config_code: import the code that the source run's ``config.yaml`` names (a ``python`` or ``trl``
            reward's function) when the reward is not given here (``--trust-config-code``); without it that is
            refused, naming the code.

    Returns:
        A :class:`~iterframe.loop.rescore.RescoreResult` (``output_dir``, ``iterations``, ``metrics``).

    Raises:
        ValueError: naming what is wrong (the source, the iterations, a component or option, the output
            directory); nothing is written then.
    """
    from iterframe.loop.rescore import rescore_run, source_config
    from iterframe.loop.sample_sets import select_iterations, set_iterations
    from iterframe.plugins.manager import check_plugin_load_errors

    check_plugin_load_errors()
    run_dir, output_dir = os.fspath(run_dir), os.fspath(output_dir)
    select_iterations(set_iterations(run_dir), iterations)
    reward_component, filter_components = _components(
        reward, filters, assignments, source_config(run_dir), run_dir, trust_config_code
    )
    _check_output_dir(output_dir, overwrite)
    existing_output = "overwrite" if overwrite else "error"
    return rescore_run(
        run_dir,
        output_dir,
        reward_component,
        filter_components,
        iterations=iterations,
        existing_output=existing_output,
    )
