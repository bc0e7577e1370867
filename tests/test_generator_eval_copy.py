"""A generator's eval copy when it does not define ``eval_copy()``: greedy through its ``do_sample`` option, else
the generator itself with a warning, once, that the eval samples."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from iterframe.plugins.components import Generator


class SamplingOnly(Generator):
    name = "sampling-only"

    @dataclasses.dataclass
    class Options:
        temperature: float = 1.0
        do_sample: bool = True

    def generate(self, prompts, num_samples):
        raise NotImplementedError


class NoDoSample(Generator):
    name = "no-do-sample"

    @dataclasses.dataclass
    class Options:
        temperature: float = 1.0

    def generate(self, prompts, num_samples):
        raise NotImplementedError


def test_a_generator_with_a_do_sample_option_evaluates_with_a_greedy_copy():
    generator = SamplingOnly(SamplingOnly.Options(temperature=0.7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        copy = generator.eval_copy()
    assert copy is not generator and type(copy) is SamplingOnly
    assert copy.options == SamplingOnly.Options(temperature=0.7, do_sample=False)
    assert generator.options.do_sample


def test_a_generator_without_do_sample_evaluates_itself_and_warns_once_that_the_eval_samples(monkeypatch):
    from iterframe.plugins import components

    monkeypatch.setattr(components, "_EVAL_SAMPLES_WARNED", set(), raising=False)
    generator = NoDoSample(NoDoSample.Options())
    with pytest.warns(
        UserWarning, match="'no-do-sample' has no eval_copy\\(\\) and no do_sample option: .* the eval samples too"
    ):
        assert generator.eval_copy() is generator
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert NoDoSample(NoDoSample.Options()).eval_copy() is not None
