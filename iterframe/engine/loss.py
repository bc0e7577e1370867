"""The training loss of one micro-batch: summed token cross-entropy, padded or packed."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from iterframe.engine import batching

__all__ = ["summed_token_loss"]


def summed_token_loss(
    model, batch: batching.MicroBatch, *, is_encoder_decoder: bool, padding_mask: bool = True
) -> torch.Tensor:
    """Summed token cross-entropy of one micro-batch (the mean is taken over the whole update).

    Args:
        model: the (wrapped) model to run.
        batch: a padded micro-batch, or a packed one (``batch.segments`` set).
        is_encoder_decoder: whether ``batch.labels`` are decoder targets.
        padding_mask: whether a padded causal micro-batch gives the model its attention mask. Without it the
            model builds no padding mask (on tiny models that costs as much as its layers); only for models
            whose real positions never see the right padding after them
            (:func:`~iterframe.engine.packing_support.ignores_right_padding`).
    """
    if is_encoder_decoder:
        outputs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
        logits, targets = outputs.logits, batch.labels
    elif batch.segments is not None:
        # Packed row: the head runs only where a target carries loss (at least once, so that every parameter
        # is in the graph, as DDP needs).
        targets = batching.packed_targets(batch)
        keep = (targets != batching.IGNORE_INDEX).nonzero().squeeze(-1)
        keep = keep if keep.numel() else targets.new_zeros(1)
        outputs = model(input_ids=batch.input_ids, position_ids=batch.position_ids, logits_to_keep=keep)
        logits, targets = outputs.logits, targets[keep]
    else:
        outputs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask if padding_mask else None)
        # Shift the labels, not the logits: slicing the logits would copy them (and their gradient) whole.
        logits = outputs.logits
        targets = F.pad(batch.labels[:, 1:], (0, 1), value=batching.IGNORE_INDEX)
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=batching.IGNORE_INDEX,
        reduction="sum",
    )
