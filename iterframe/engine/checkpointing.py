"""Activation (gradient) checkpointing as ``TrainingArguments`` asks for it: ``Trainer.train()`` turns it on,
but ``IterativeSFTTrainer`` never calls ``train()``, so it turns it on itself."""

from __future__ import annotations

__all__ = ["enable_activation_checkpointing"]


def enable_activation_checkpointing(model, args) -> bool:
    """Turn on activation checkpointing in ``model`` when ``args`` asks for it (``gradient_checkpointing``, or
    ``activation_checkpointing`` in transformers 5), with ``gradient_checkpointing_kwargs`` (or
    ``activation_checkpointing_kwargs``): keyword arguments of ``torch.utils.checkpoint.checkpoint`` such as
    ``use_reentrant``, and in transformers 5 also ``every_n_layers`` and ``offload``. Returns whether it did."""
    enabled = getattr(args, "activation_checkpointing", None) or getattr(args, "gradient_checkpointing", False)
    if not enabled:
        return False
    kwargs = dict(
        getattr(args, "activation_checkpointing_kwargs", None)
        or getattr(args, "gradient_checkpointing_kwargs", None)
        or {}
    )
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5
        every_n_layers, offload = kwargs.pop("every_n_layers", 1), kwargs.pop("offload", False)
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs=kwargs or None, every_n_layers=every_n_layers, offload=offload
        )
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None)
    return True
