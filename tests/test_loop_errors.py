"""Bad loop input and misbehaving components fail with errors that say what is wrong."""

from __future__ import annotations

import pytest
from loop_fakes import (
    MinReward,
    PromptCompletionTokenizer,
    RecordingLogger,
    ScriptedGenerator,
    make_loop,
    make_trainer,
)

from iterframe.loop import IterativeLoop, LoopConfig, PromptRecord
from iterframe.plugins.components import Completion


@pytest.fixture(scope="module")
def trainer(tiny_llama_path, tmp_path_factory):
    return make_trainer(tiny_llama_path, str(tmp_path_factory.mktemp("trainer")))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("iterations", -1, "iterations must be an integer >= 0"),
        ("samples_per_prompt", 0, "samples_per_prompt must be an integer >= 1"),
        ("replay_buffer_size", -2, "replay_buffer_size must be an integer >= 0"),
        ("existing_output", "keep", "existing_output='keep' is not one of"),
    ],
)
def test_loop_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig(output_dir="out", **{field: value})


def test_loop_config_needs_an_output_dir():
    with pytest.raises(ValueError, match="output_dir is required"):
        LoopConfig(output_dir="")


def test_empty_prompt_set_is_an_error(tiny_llama_path, tmp_path, trainer):
    with pytest.raises(ValueError, match="prompts is empty"):
        make_loop(tiny_llama_path, tmp_path / "out", trainer=trainer, prompts=[])


def test_prompts_must_be_prompt_records(tiny_llama_path, tmp_path, trainer):
    with pytest.raises(TypeError, match=r"prompts\[0\] must be an iterframe.loop.PromptRecord"):
        make_loop(tiny_llama_path, tmp_path / "out", trainer=trainer, prompts=["2+2="])


def test_components_must_implement_their_interface(tiny_llama_path, tmp_path, trainer):
    with pytest.raises(TypeError, match=r"filters\[1\] must be an iterframe.Filter instance.*create_component"):
        make_loop(tiny_llama_path, tmp_path / "out", trainer=trainer, filters=[MinReward(0.0), "dedup"])


def test_generator_returning_wrong_number_of_completions_is_named(tiny_llama_path, tmp_path, trainer):
    class ShortGenerator(ScriptedGenerator):
        name = "short"

        def generate(self, prompts, num_samples):
            return [[Completion("x")] for _ in prompts]

    with pytest.raises(ValueError, match=r"Generator 'short' must return 2 Completion objects per prompt"):
        make_loop(tiny_llama_path, tmp_path / "out", trainer=trainer, generator=ShortGenerator()).run()


def test_reward_returning_wrong_number_of_scores_is_named(tiny_llama_path, tmp_path, trainer):
    def one_score(prompts, completions, references):
        return [1.0]

    with pytest.raises(ValueError, match=r"Reward 'one_score' returned 1 scores for 4 samples"):
        make_loop(tiny_llama_path, tmp_path / "out", trainer=trainer, reward=one_score).run()


def test_reward_returning_non_numbers_is_named(tiny_llama_path, tmp_path, trainer):
    def words(prompts, completions, references):
        return ["good"] * len(completions)

    with pytest.raises(TypeError, match=r"Reward 'words' returned 'good' for sample 0; scores must be numbers"):
        make_loop(tiny_llama_path, tmp_path / "out", trainer=trainer, reward=words).run()


def test_filter_returning_wrong_mask_length_is_named(tiny_llama_path, tmp_path, trainer):
    class HalfMask(MinReward):
        def select(self, samples):
            return [True]

    with pytest.raises(ValueError, match=r"Filter 'half' must return a list of 4 booleans"):
        make_loop(tiny_llama_path, tmp_path / "out", trainer=trainer, filters=[HalfMask(0.0, name="half")]).run()


def test_components_are_closed_after_an_error(tiny_llama_path, tmp_path, trainer):
    logger = RecordingLogger()

    def failing(prompts, completions, references):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        make_loop(tiny_llama_path, tmp_path / "out", trainer=trainer, reward=failing, loggers=[logger]).run()
    assert logger.closed


def test_default_config_uses_the_trainer_output_dir(trainer):
    loop = IterativeLoop(
        trainer,
        [PromptRecord(0, "1+1=")],
        ScriptedGenerator(),
        lambda p, c, r: [1.0] * len(c),
        [],
        PromptCompletionTokenizer(),
    )
    assert loop.config.output_dir == trainer.args.output_dir
