"""Which checkpoints ``iterframe run`` writes: only the loop's own (``checkpoints/iteration-N``, every
``loop.save_every`` iterations, the newest ``loop.keep_checkpoints`` kept), never the trainer's ``checkpoint-N``
folders that ``TrainingArguments.save_steps`` would pile up in the run directory."""

from __future__ import annotations

from typing import Any

__all__ = ["loop_checkpoint_settings"]


def loop_checkpoint_settings(loop: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """The ``loop:`` section with ``train.save_total_limit`` honoured as ``loop.keep_checkpoints``, once the
    ``train:`` section is checked for trainer checkpoints (the resolved arguments get ``save_strategy="no"``).

    Raises:
        ValueError: ``train.save_strategy`` / ``train.save_steps`` ask for trainer checkpoints, or
            ``train.save_total_limit`` and ``loop.keep_checkpoints`` disagree.
    """
    train = {str(key).replace("-", "_"): value for key, value in train.items()}
    loop = dict(loop)
    strategy = str(train.get("save_strategy", "no")).lower()
    if strategy != "no" or train.get("save_steps") is not None:
        asked = f"save_steps={train['save_steps']}" if "save_steps" in train else f"save_strategy={strategy!r}"
        raise ValueError(
            f"train.{asked} asks the trainer for its own checkpoint-N folders, but iterframe run writes the "
            "loop's checkpoints (weights, optimizer and loop state, which resume needs): set loop.save_every "
            "(every N iterations) and loop.keep_checkpoints (how many to keep) instead."
        )
    limit = train.get("save_total_limit")
    if limit is not None:
        keep = loop.get("keep_checkpoints", loop.get("keep-checkpoints"))
        if keep is not None and str(keep) != str(limit):
            raise ValueError(
                f"train.save_total_limit={limit} and loop.keep_checkpoints={keep} disagree; both limit the loop's "
                "checkpoints kept on disk: set one of them."
            )
        loop["keep_checkpoints"] = limit
    return loop
