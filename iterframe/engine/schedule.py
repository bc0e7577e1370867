"""The learning-rate schedule's horizon: a schedule that decays (or warms up over a ratio) needs the number of
optimizer updates, which ``max_steps=-1`` does not give, and updates past ``max_steps`` would train at the
schedule's end value."""

from __future__ import annotations

import math
from typing import Optional

__all__ = ["CONSTANT_SCHEDULES", "check_updates_left", "missing_horizon", "most_updates", "require_horizon"]

#: Schedules that need no horizon (``constant_with_warmup`` warms up over ``warmup_steps`` updates).
CONSTANT_SCHEDULES = ("constant", "constant_with_warmup")


def _warmup_ratio(args) -> float:
    """The warmup given as a ratio of the horizon: ``warmup_ratio`` (transformers 4) or a ``warmup_steps`` in
    (0, 1) (transformers 5)."""
    ratio = getattr(args, "warmup_ratio", 0) or 0
    steps = getattr(args, "warmup_steps", 0) or 0
    return float(ratio or (steps if 0 < steps < 1 else 0))


def missing_horizon(args) -> Optional[str]:
    """What in ``args`` needs a known number of updates that ``max_steps=-1`` leaves unknown (``None`` when
    nothing does): a requested ``lr_scheduler_type`` other than a constant one, or a warmup ratio."""
    if args.max_steps > 0:
        return None
    asked = []
    kind = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
    if getattr(args, "lr_scheduler_requested", True) and kind not in CONSTANT_SCHEDULES:
        asked.append(f"lr_scheduler_type={kind!r}")
    if _warmup_ratio(args):
        asked.append(f"a warmup ratio of {_warmup_ratio(args)}")
    return " and ".join(asked) or None


def require_horizon(args) -> None:
    """Raise ``ValueError`` when ``args`` asks for a schedule that needs ``max_steps`` and leaves it at -1."""
    asked = missing_horizon(args)
    if asked:
        raise ValueError(
            f"{asked} needs the number of optimizer updates, but max_steps is -1: set max_steps (iterframe run "
            "sets it from its iterations when train.max_steps is unset), or use a constant schedule."
        )


def most_updates(num_samples: int, batch_size: int, accumulation: int, num_processes: int = 1) -> int:
    """The optimizer updates one ``step()`` makes on ``num_samples`` samples shared by ``num_processes``
    processes: micro-batches of ``batch_size`` on the busiest process, ``accumulation`` of them per update."""
    local = math.ceil(num_samples / max(num_processes, 1))
    return math.ceil(math.ceil(local / max(batch_size, 1)) / max(accumulation, 1))


def check_updates_left(max_steps: int, position: int, updates: int) -> None:
    """Refuse a ``step()`` whose ``updates`` would take the schedule past ``max_steps`` (it is at ``position``):
    they would train at the schedule's end value (zero for a linear decay)."""
    if max_steps > 0 and position + updates > max_steps:
        raise ValueError(
            f"This step() would make {updates} optimizer update(s), but the learning-rate schedule is at update "
            f"{position} of max_steps={max_steps}; past it the schedule is over (a decaying one trains at "
            "learning rate 0). Raise max_steps, or pass fewer samples."
        )
