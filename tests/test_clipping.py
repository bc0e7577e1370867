"""Gradient clipping that skips the rescaling pass when nothing is clipped, and otherwise matches the library."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator

from iterframe.engine.clipping import clip_grad_norm


def _model_with_gradients(scale: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3, bias=False))
    model(torch.randn(4, 6)).sum().mul(scale).backward()
    model[0].bias.grad = None  # a parameter without a gradient is left out, as the library leaves it
    return model


@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 2.0])
def test_gradients_and_norm_are_the_librarys(scale, max_norm):
    ours, reference = _model_with_gradients(scale), _model_with_gradients(scale)
    norm = clip_grad_norm(Accelerator(cpu=True), ours.parameters(), max_norm)
    expected = Accelerator(cpu=True).clip_grad_norm_(reference.parameters(), max_norm)
    torch.testing.assert_close(norm, expected, rtol=0, atol=0, equal_nan=True)
    for mine, theirs in zip(ours.parameters(), reference.parameters()):
        if theirs.grad is None:
            assert mine.grad is None
        else:
            torch.testing.assert_close(mine.grad, theirs.grad, rtol=0, atol=0, equal_nan=True)


def test_gradients_below_the_limit_are_not_rewritten():
    model = _model_with_gradients(1e-3)
    versions = [parameter.grad._version for parameter in model.parameters() if parameter.grad is not None]
    norm = clip_grad_norm(Accelerator(cpu=True), model.parameters(), 1.0)
    assert float(norm) < 1.0
    assert [parameter.grad._version for parameter in model.parameters() if parameter.grad is not None] == versions


def test_gradients_above_the_limit_are_rescaled_to_it():
    model = _model_with_gradients(50.0)
    norm = clip_grad_norm(Accelerator(cpu=True), model.parameters(), 1.0)
    assert float(norm) > 1.0
    after = torch.nn.utils.get_total_norm(
        [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
    )
    assert float(after) == pytest.approx(1.0, rel=1e-5)


def test_no_gradients_give_a_zero_norm():
    model = torch.nn.Linear(2, 2)
    assert float(clip_grad_norm(Accelerator(cpu=True), model.parameters(), 1.0)) == 0.0
