"""Gradient clipping by the global norm, without the rescaling pass when nothing is clipped.

``torch.nn.utils.clip_grad_norm_`` multiplies every gradient by ``min(max_norm / (norm + 1e-6), 1)``, a pass over
all of them on every update even when the factor is 1. Where the gradients are plain local tensors (one process or
DDP), :func:`clip_grad_norm` computes the same norm and rescales only when the factor is below 1, so the gradients
it leaves are exactly the library's. Sharded engines (FSDP, DeepSpeed, XLA) and tensor-parallel gradients go
through ``accelerator.clip_grad_norm_`` unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional, Union

import torch

__all__ = ["clip_grad_norm"]

#: ``torch.nn.utils.clip_grad_norm_``'s guard against dividing by a zero norm.
_EPSILON = 1e-6


def _plain_gradients(accelerator, parameters: list[torch.nn.Parameter]) -> Optional[list[torch.Tensor]]:
    """The parameters' gradients when every one is a local tensor of a one-process or DDP run, else ``None``."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type not in (
        DistributedType.NO,
        DistributedType.MULTI_CPU,
        DistributedType.MULTI_GPU,
    ):
        return None
    gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if any(type(gradient) is not torch.Tensor for gradient in gradients):  # DTensor, or another subclass
        return None
    return gradients


def clip_grad_norm(
    accelerator, parameters: Iterable[torch.nn.Parameter], max_norm: float
) -> Union[torch.Tensor, float, None]:
    """``accelerator.clip_grad_norm_(parameters, max_norm)``: the same gradients afterwards and the same norm
    returned (``None`` under DeepSpeed, which clips inside its engine)."""
    parameters = list(parameters)
    gradients = _plain_gradients(accelerator, parameters)
    if gradients is None:
        return accelerator.clip_grad_norm_(parameters, max_norm)
    accelerator.unscale_gradients()  # fp16: the grad scaler's factor out first, as accelerate does
    if not gradients:
        return torch.tensor(0.0)
    norm = torch.nn.utils.get_total_norm(gradients, 2.0)
    factor = max_norm / (norm + _EPSILON)
    if not bool(factor >= 1.0):  # a non-finite norm rescales too, as the library does
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm
