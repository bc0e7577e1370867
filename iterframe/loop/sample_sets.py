"""Sample sets: the ``iterations/NNNNNN/samples.parquet`` files of a run, or of a set ``iterframe rescore`` wrote,
read back as samples; and :class:`TrainingSet`, which serves their kept samples to a run that trains without
generating (``loop.train_from``)."""

from __future__ import annotations

import os
import re
from typing import Optional, Union

from iterframe.loop.artifacts import read_samples, sample_from_row, samples_path
from iterframe.loop.config import PromptRecord
from iterframe.loop.stages import FAILED_REWARD
from iterframe.plugins.components import Sample

__all__ = [
    "SampleSetError",
    "TrainingSet",
    "prompt_records",
    "read_sample_set",
    "recorded_fates",
    "select_iterations",
    "set_iterations",
]

_ITERATION_FOLDER = re.compile(r"^\d{6,}$")


class SampleSetError(ValueError):
    """A folder holds no sample set, or not the iterations asked for."""


def set_iterations(run_dir: str) -> list[int]:
    """The iterations whose samples ``run_dir`` holds, in order.

    Raises:
        SampleSetError: ``run_dir`` is not a run (no ``run.json``) or holds no iteration's samples.
    """
    from iterframe.loop.run_state import RUN_FILE

    if not os.path.isfile(os.path.join(run_dir, RUN_FILE)):
        raise SampleSetError(
            f"{run_dir!r} is not an iterframe run (no {RUN_FILE}): pass the --output-dir of an `iterframe run` or "
            "of an `iterframe rescore`."
        )
    folder = os.path.join(run_dir, "iterations")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    found = sorted(int(name) for name in names if _ITERATION_FOLDER.match(name))
    found = [iteration for iteration in found if os.path.isfile(samples_path(run_dir, iteration))]
    if not found:
        raise SampleSetError(f"{run_dir!r} holds no samples yet: no iteration of it has finished.")
    return found


def select_iterations(available: list[int], spec: Union[None, int, str, range]) -> list[int]:
    """The iterations of ``available`` that ``spec`` names: ``None`` (all), ``N``, ``"A:B"`` (A up to B-1, as a
    Python slice; ``"A:"`` and ``":B"`` too) or a ``range``.

    Raises:
        SampleSetError: ``spec`` is not one of those forms, or names iterations the set does not hold.
    """
    if spec is None:
        return list(available)
    wanted: Optional[range] = spec if isinstance(spec, range) else None
    if isinstance(spec, int) and not isinstance(spec, bool):
        wanted = range(spec, spec + 1)
    elif isinstance(spec, str):
        match = re.fullmatch(r"\s*(\d*)\s*(:?)\s*(\d*)\s*", spec)
        if match and (match.group(1) or match.group(3)) and (match.group(2) or not match.group(3)):
            start = int(match.group(1) or 0)
            stop = int(match.group(3)) if match.group(3) else (available[-1] + 1 if match.group(2) else start + 1)
            wanted = range(start, stop)
    if wanted is None:
        raise SampleSetError(f"iterations {spec!r} is not N, A:B (A up to B-1), A: or :B.")
    missing = [iteration for iteration in wanted if iteration not in available]
    if missing or not wanted:
        raise SampleSetError(
            f"iterations {spec!r} asks for {_span(list(wanted)) or 'no iteration'}, but the set holds "
            f"{_span(available)}{f' (missing: {_span(missing)})' if missing else ''}."
        )
    return list(wanted)


def _span(iterations: list[int]) -> str:
    if not iterations:
        return ""
    if iterations == list(range(iterations[0], iterations[-1] + 1)) and len(iterations) > 1:
        return f"iterations {iterations[0]}-{iterations[-1]}"
    return f"iteration{'s' if len(iterations) > 1 else ''} {', '.join(map(str, iterations))}"


def read_sample_set(run_dir: str, iteration: int) -> list[Sample]:
    """The samples of one iteration of a set, with their rewards and fates."""
    return [sample_from_row(row) for row in read_samples(samples_path(run_dir, iteration))]


class TrainingSet:
    """A sample set a run trains on instead of generating: its ``i``-th iteration serves the run's iteration
    ``i``, with the rewards and fates the set recorded.

    Args:
        run_dir: the set (an ``iterframe run`` or ``iterframe rescore`` output directory).
        tokenizer_hash: the fingerprint of the tokenizer the run trains with; samples whose token ids belong to
            another tokenizer lose them (the sample tokenizer then encodes their text).
    """

    def __init__(self, run_dir: str, tokenizer_hash: Optional[str]):
        self.run_dir = os.path.abspath(run_dir)
        self.iterations = set_iterations(run_dir)
        self.tokenizer_hash = tokenizer_hash

    def check_covers(self, iterations: int) -> None:
        """Refuse a run of more iterations than the set holds."""
        if iterations > len(self.iterations):
            raise SampleSetError(
                f"loop.train_from {self.run_dir!r} holds {len(self.iterations)} iteration(s) of samples "
                f"({_span(self.iterations)}), but the run asks for {iterations}: set iterations to "
                f"{len(self.iterations)} or fewer."
            )

    def samples(self, iteration: int) -> list[Sample]:
        """The samples the run's ``iteration`` trains on (the kept ones) and records: the set's
        ``iteration``-th, marked with the run's iteration and, in ``info["source_iteration"]``, the set's."""
        source_iteration = self.iterations[iteration]
        samples = read_sample_set(self.run_dir, source_iteration)
        for sample in samples:
            sample.iteration = iteration
            sample.info["source_iteration"] = source_iteration
            if sample.info.get("tokenizer_hash") != self.tokenizer_hash:
                sample.prompt_token_ids = sample.completion_token_ids = None
        return samples


def prompt_records(samples: list[Sample]) -> list[PromptRecord]:
    """The prompts of ``samples``, one record per prompt, in the order they first appear."""
    records: dict[int, PromptRecord] = {}
    for sample in samples:
        if sample.prompt_id not in records:
            extra = sample.info.get("extra") or {}
            records[sample.prompt_id] = PromptRecord(
                sample.prompt_id, sample.prompt, sample.reference, dict(extra)
            )
    return list(records.values())


def recorded_fates(samples: list[Sample]) -> tuple[list[Sample], dict[str, int]]:
    """The kept samples of a recorded set, and how many each filter or plugin dropped (failed samples apart),
    in the order the droppers first appear."""
    dropped: dict[str, int] = {}
    for sample in samples:
        if sample.dropped_by is not None and not sample.dropped_by.startswith(FAILED_REWARD):
            dropped[sample.dropped_by] = dropped.get(sample.dropped_by, 0) + 1
    return [sample for sample in samples if sample.kept], dropped
