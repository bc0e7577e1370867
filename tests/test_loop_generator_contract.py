"""What the loop asks of a generator beyond ``generate()`` is declared by the ``Generator`` interface: how many
prompts go to one call (``prompts_per_call``) and which generator scores the eval prompts (``eval_copy()``), never
guessed from the names of its options."""

from __future__ import annotations

import dataclasses

from loop_fakes import ScriptedGenerator, make_loop, make_prompts

from iterframe.plugins import create_component
from iterframe.plugins.components import Generator


class TwoAtATime(ScriptedGenerator):
    """Takes two prompts per call; its eval copy is another object that records its own calls."""

    name = "two-at-a-time"

    def __init__(self, greedy: bool = False):
        super().__init__()
        self.greedy = greedy
        self.copies: list[TwoAtATime] = []

    @property
    def prompts_per_call(self):
        return 2

    def eval_copy(self):
        copy = TwoAtATime(greedy=True)
        self.copies.append(copy)
        return copy


def test_prompts_go_to_the_generator_in_calls_of_prompts_per_call(tiny_llama_path, tmp_path):
    generator = TwoAtATime()
    make_loop(tiny_llama_path, tmp_path / "out", generator=generator, iterations=1, prompts_per_iteration=4).run()
    assert [len(prompts) for prompts, _ in generator.calls] == [2, 2]


def test_eval_prompts_go_to_the_generators_eval_copy(tiny_llama_path, tmp_path):
    generator = TwoAtATime()
    loop = make_loop(
        tiny_llama_path, tmp_path / "out", generator=generator, eval_prompts=make_prompts(3, "e"), iterations=1
    )
    loop.run()
    (copy,) = generator.copies
    assert loop.eval_generator is copy and copy.greedy
    assert copy.calls == [(["e0", "e1"], 1), (["e2"], 1)] * 2  # the starting model, then after the iteration
    assert all(not prompts[0].startswith("e") for prompts, _ in generator.calls)
    assert (generator.weight_updates, copy.weight_updates) == (1, 1)
    assert loop.context.components["generator"] == [generator, copy]


class OptionsNamedLikeHf(ScriptedGenerator):
    """Has options named do_sample and batch_size but overrides neither eval_copy() nor prompts_per_call."""

    name = "options-named-like-hf"

    @dataclasses.dataclass
    class Options:
        do_sample: bool = True
        batch_size: int = 1

    def __init__(self):
        super().__init__()
        self.options = self.Options()


def test_a_do_sample_option_gives_the_eval_a_greedy_copy_and_batch_size_means_nothing(tiny_llama_path, tmp_path):
    generator = OptionsNamedLikeHf()
    loop = make_loop(
        tiny_llama_path, tmp_path / "out", generator=generator, eval_prompts=make_prompts(2, "e"), iterations=1
    )
    loop.run()
    assert loop.eval_generator is not generator
    assert loop.eval_generator.options == OptionsNamedLikeHf.Options(do_sample=False, batch_size=1)
    # all prompts at once: the eval prompts of the starting model, the iteration's, the eval prompts after it
    assert [len(prompts) for prompts, _ in generator.calls] == [2, 2, 2]


def test_the_default_generator_contract():
    generator = OptionsNamedLikeHf()
    assert Generator.prompts_per_call.fget(generator) is None
    copy = Generator.eval_copy(generator)
    assert copy is not generator and copy.options.do_sample is False and generator.options.do_sample is True


def test_hf_generator_declares_batches_and_a_greedy_eval_copy(plugin_manager):
    generator = create_component("generator", "hf", {"batch_size": 3, "temperature": 0.7, "max_new_tokens": 5})
    copy = generator.eval_copy()
    assert generator.prompts_per_call == 3
    assert copy is not generator and copy.name == "hf"
    assert copy.options == dataclasses.replace(
        generator.options, do_sample=False, batch_size=copy.prompts_per_call
    )
    assert generator.options.do_sample is True


def test_hf_eval_copy_evaluates_64_prompts_per_call_unless_eval_batch_size_says_otherwise(plugin_manager):
    sampling = create_component("generator", "hf", {"batch_size": 3})
    assert (sampling.prompts_per_call, sampling.eval_copy().prompts_per_call) == (3, 64)
    sized = create_component("generator", "hf", {"batch_size": 3, "eval_batch_size": 20})
    assert (sized.prompts_per_call, sized.eval_copy().prompts_per_call) == (3, 20)
    larger = create_component("generator", "hf", {"batch_size": 100})
    assert larger.eval_copy().prompts_per_call == 100
