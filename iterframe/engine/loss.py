"""The training loss of one micro-batch: summed token cross-entropy, padded or packed."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Optional

import torch
import torch.nn.functional as F

from iterframe.engine import batching, label_logits
from iterframe.engine.packing_support import base_model

__all__ = ["router_aux_loss", "summed_token_loss"]


def router_aux_loss(model, outputs, attention_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``router_aux_loss_coef`` times the router's load-balancing loss of a mixture-of-experts model that outputs
    its router logits (``output_router_logits=True``), as transformers adds it to its own loss; ``None`` for
    other models. Computed here over the micro-batch's real tokens (``attention_mask``; ``None``: every token),
    since a padded micro-batch may run without its mask."""
    router_logits = getattr(outputs, "router_logits", None)
    if not router_logits:
        return None
    base = base_model(model)
    coefficient = getattr(base, "router_aux_loss_coef", getattr(base.config, "router_aux_loss_coef", None))
    balancing_loss = getattr(sys.modules[type(base).__module__], "load_balancing_loss_func", None)
    num_experts = getattr(base, "num_experts", None)
    if coefficient is None or balancing_loss is None or num_experts is None:
        raise ValueError(
            f"{type(base).__name__} outputs router logits (output_router_logits=True), but iterframe does not "
            "know how transformers turns them into its load-balancing loss for this model; set "
            "output_router_logits=False in the model's config to train without it."
        )
    top_k = getattr(base, "num_experts_per_tok", 2)
    return coefficient * balancing_loss(router_logits, num_experts, top_k, attention_mask)


def summed_token_loss(
    model,
    batch: batching.MicroBatch,
    *,
    is_encoder_decoder: bool,
    padding_mask: bool = True,
    head_transform: Optional[Callable] = None,
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
        head_transform: for a causal model whose head may be run apart from its forward
            (:func:`~iterframe.engine.label_logits.logit_transform`): the head runs only at the positions whose
            label carries loss, and the cross-entropy in chunks. ``None``: the loss comes from the model's logits.
    """
    mask = None
    if head_transform is not None and not is_encoder_decoder:
        loss, outputs, mask = _loss_at_label_positions(model, batch, padding_mask, head_transform)
        return _with_router_aux_loss(loss, model, outputs, mask, batch.num_loss_tokens)
    if is_encoder_decoder:
        outputs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
        logits, targets = outputs.logits, batch.labels
    elif batch.segments is not None:
        # Packed row: the head runs only where a target carries loss.
        targets = batching.packed_targets(batch)
        keep = _loss_positions(targets)
        outputs = model(input_ids=batch.input_ids, position_ids=batch.position_ids, logits_to_keep=keep)
        logits, targets = outputs.logits, targets[keep]
    else:
        mask = batch.attention_mask
        outputs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask if padding_mask else None)
        # Shift the labels, not the logits: slicing the logits would copy them (and their gradient) whole.
        logits = outputs.logits
        targets = F.pad(batch.labels[:, 1:], (0, 1), value=batching.IGNORE_INDEX)
    loss = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=batching.IGNORE_INDEX,
        reduction="sum",
    )
    if is_encoder_decoder:
        return loss
    return _with_router_aux_loss(loss, model, outputs, mask, batch.num_loss_tokens)


def _loss_positions(targets: torch.Tensor) -> torch.Tensor:
    """The flat positions of ``targets`` that carry loss; position 0 when none does, so that the head still
    runs once and every parameter is in the graph, as DDP needs."""
    keep = (targets != batching.IGNORE_INDEX).nonzero().squeeze(-1)
    return keep if keep.numel() else targets.new_zeros(1)


def _with_router_aux_loss(loss, model, outputs, mask, num_loss_tokens: int) -> torch.Tensor:
    """``loss`` plus the router aux loss (:func:`router_aux_loss`) weighted by the micro-batch's label tokens, as
    its cross-entropy is: the update's mean then adds each micro-batch's aux loss in proportion to its tokens
    (exactly transformers' loss for a single micro-batch)."""
    aux_loss = router_aux_loss(model, outputs, mask)
    return loss if aux_loss is None else loss + aux_loss.to(loss.device) * num_loss_tokens


def _loss_at_label_positions(model, batch: batching.MicroBatch, padding_mask: bool, head_transform: Callable):
    """The summed cross-entropy of a causal micro-batch with the head run only where a target carries loss;
    returns it, the model's outputs and the mask of its real tokens (``None``: all are)."""
    if batch.segments is not None:
        targets, mask = batching.packed_targets(batch), None
        inputs = {"input_ids": batch.input_ids, "position_ids": batch.position_ids}
    else:
        targets = F.pad(batch.labels[:, 1:], (0, 1), value=batching.IGNORE_INDEX).reshape(-1)
        mask = batch.attention_mask
        inputs = {"input_ids": batch.input_ids, "attention_mask": mask if padding_mask else None}
    with label_logits.head_inputs(model) as captured:
        outputs = model(**inputs)
    hidden_states = captured.hidden_states.reshape(-1, captured.hidden_states.shape[-1])
    keep = _loss_positions(targets)
    loss = label_logits.chunked_cross_entropy(model, head_transform, hidden_states[keep], targets[keep])
    return loss, outputs, mask
