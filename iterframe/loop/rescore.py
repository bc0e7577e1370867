"""Rescore and refilter a run's samples without generating them again.

:func:`rescore_run` reads the samples of a run's iterations (their text and, when recorded, their exact token
ids), scores them with a reward, runs a filter chain over them, and writes a new output directory that ``iterframe
report`` reads and ``iterframe run --train-from`` trains on. Its ``run.json`` records where the samples came from
(``rescored_from``: the source run, the policy that generated each iteration, the sampling settings) and what
judged them (``reward``, ``filters``: name, plugin, version, options).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import yaml

from iterframe.loop.artifacts import METRICS_FILE, samples_path, write_metrics_row, write_samples
from iterframe.loop.checks import component_name
from iterframe.loop.metrics import reward_metrics, token_metrics
from iterframe.loop.run_state import checkpoint_dir, claim_output_dir, read_run_file, record_in_run_file
from iterframe.loop.sample_sets import SampleSetError, read_sample_set, select_iterations, set_iterations
from iterframe.loop.stages import filter_samples, score_samples
from iterframe.plugins.components import Filter, Reward, RunContext, Sample
from iterframe.plugins.errors import blame, describe_origin
from iterframe.plugins.reward_pool import scorer_for

__all__ = ["RESCORED_FROM", "RescoreResult", "describe_component", "rescore_run", "source_config"]

#: The ``run.json`` key of a rescored set's provenance.
RESCORED_FROM = "rescored_from"
CONFIG_FILE = "config.yaml"


@dataclasses.dataclass
class RescoreResult:
    """What :func:`rescore_run` wrote: the new output directory, its iterations and metrics rows (one per
    iteration, as in ``metrics.jsonl``)."""

    output_dir: str
    iterations: list[int]
    metrics: list[dict[str, Any]]


def rescore_run(
    run_dir: str,
    output_dir: str,
    reward: Reward,
    filters: Sequence[Filter] = (),
    *,
    iterations: Union[None, int, str, range] = None,
    existing_output: str = "error",
) -> RescoreResult:
    """Score the samples of ``run_dir``'s ``iterations`` (all by default) with ``reward``, filter them with
    ``filters`` and write them, with their metrics and provenance, to ``output_dir``.

    Every sample is judged afresh (failed, dropped or kept before, alike); the ``on_samples_scored`` hooks do not
    run. Nothing is written until every iteration is scored and filtered.

    Raises:
        SampleSetError: ``run_dir`` holds no samples, or not the ``iterations`` asked for; or ``output_dir`` is
            ``run_dir``.
        OutputDirError: ``output_dir`` holds a run and ``existing_output`` is ``"error"``.
    """
    chosen = select_iterations(set_iterations(run_dir), iterations)
    if os.path.abspath(output_dir) == os.path.abspath(run_dir):
        raise SampleSetError(f"The rescored set needs its own --output-dir; {output_dir!r} is the source run.")
    # the reward and filters see the source run's config (its dataset columns, its plugins' settings)
    config = {**source_config(run_dir), "rescore": run_dir}
    context = RunContext(trainer=None, tokenizer=None, output_dir=output_dir, config=config)
    judged: list[tuple[int, list[Sample], dict[str, Any]]] = []
    set_up, scorer = [], scorer_for(reward)  # one worker pool for every iteration of a pooled reward
    try:
        for kind, component in (("reward", reward), *(("filter", item) for item in filters)):
            with blame(kind, component, None):
                component.setup(context)
            set_up.append(component)
        for iteration in chosen:
            samples = read_sample_set(run_dir, iteration)
            judged.append((iteration, samples, _judge(samples, reward, filters, iteration, scorer)))
    finally:
        scorer.close()
        for component in reversed(set_up):
            component.close()
    source = read_run_file(run_dir)
    claim_output_dir(output_dir, existing_output, source.get("loop", {}))
    for iteration, samples, row in judged:
        write_samples(samples_path(output_dir, iteration), samples)
        write_metrics_row(os.path.join(output_dir, METRICS_FILE), row)
    record_in_run_file(output_dir, _provenance(run_dir, source, chosen, reward, filters))
    return RescoreResult(output_dir, chosen, [row for _, _, row in judged])


def _judge(
    samples: list[Sample], reward: Reward, filters: Sequence[Filter], iteration: int, scorer
) -> dict[str, Any]:
    """Forget the samples' old rewards and fates, score (with ``scorer``) and filter them; return their metrics."""
    for sample in samples:
        sample.reward, sample.kept, sample.dropped_by, sample.drop_reason = float("nan"), False, None, None
    score_samples(reward, samples, iteration, scorer)
    _, dropped_counts = filter_samples(samples, filters, None, iteration)
    row: dict[str, Any] = {"iteration": iteration, "num_prompts": len({sample.prompt_id for sample in samples})}
    row.update(reward_metrics(samples))
    row.update(token_metrics(samples))
    row.update({f"filter/{name}/dropped": count for name, count in dropped_counts.items()})
    return row


def describe_component(component) -> dict[str, Any]:
    """Name, origin (plugin and distribution, or the code it was passed from), version and options of a
    component, for provenance records."""
    from iterframe.plugins.registry import registered_components

    options = component.options
    described: dict[str, Any] = {
        "name": component_name(component),
        "options": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else None,
    }
    for info in registered_components():
        if info.component_class is type(component):
            entry = info.describe()
            return {
                **described,
                "plugin": entry["plugin"],
                "distribution": entry["distribution"],
                "version": entry["version"],
            }
    return {**described, "plugin": None, "origin": describe_origin(component), "version": None}


def source_config(run_dir: str) -> dict[str, Any]:
    """The source run's saved ``config.yaml`` (``{}`` when it has none or it does not read)."""
    try:
        with open(os.path.join(run_dir, CONFIG_FILE), encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _policy(run_dir: str, config: dict[str, Any], iterations: list[int]) -> dict[str, Optional[str]]:
    """Per iteration, the model that generated its samples: the starting model for iteration 0, else the
    checkpoint after the iteration before (``None`` where the source run kept no such checkpoint)."""
    policy = {}
    for iteration in iterations:
        if iteration == 0:
            policy["0"] = config.get("model") and f"starting model {config['model']}"
        else:
            path = checkpoint_dir(os.path.abspath(run_dir), iteration - 1)
            policy[str(iteration)] = path if os.path.isdir(path) else None
    return policy


def _provenance(run_dir, source: dict[str, Any], iterations, reward, filters) -> dict[str, Any]:
    config = source_config(run_dir)
    loop = source.get("loop", {})
    sampling_keys = ("samples_per_prompt", "until_accepted", "samples_per_round", "redistribute", "seed")
    return {
        RESCORED_FROM: {
            "run": os.path.abspath(run_dir),
            "run_iterframe_version": source.get("iterframe_version"),
            "iterations": iterations,
            "policy": _policy(run_dir, config, iterations),
            "sampling": {"generator": config.get("generator"), **{key: loop.get(key) for key in sampling_keys}},
            "reward": config.get("reward"),
            "filters": config.get("filters"),
        },
        "reward": describe_component(reward),
        "filters": [describe_component(item) for item in filters],
    }
