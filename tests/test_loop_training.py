"""What the loop trains on: epochs, the replay buffer, and restart-from-base (ReST-EM)."""

from __future__ import annotations

import math

import torch
from loop_fakes import PromptCompletionTokenizer, make_loop

from iterframe.loop.replay import ReplayBuffer
from iterframe.plugins.components import Sample


def sample(index: int) -> Sample:
    return Sample(iteration=0, prompt_id=index, prompt=f"p{index}", completion=f"c{index}", reward=1.0, kept=True)


def test_replay_buffer_keeps_newest_samples_up_to_capacity():
    buffer = ReplayBuffer(3)
    buffer.add([sample(0), sample(1)])
    buffer.add([sample(2), sample(3)])
    assert [item.prompt_id for item in buffer.samples] == [2, 3, 0]


def test_replay_buffer_of_size_zero_stays_empty():
    buffer = ReplayBuffer(0)
    buffer.add([sample(0)])
    assert len(buffer) == 0


def test_replay_buffer_state_is_json_and_round_trips():
    import json

    buffer = ReplayBuffer(2)
    buffer.add([sample(0), sample(1)])
    restored = ReplayBuffer(2)
    restored.load_state_dict(json.loads(json.dumps(buffer.state_dict())))
    assert restored.samples == buffer.samples


def _copy(prompt_id: int, completion: str, iteration: int) -> Sample:
    return Sample(
        iteration=iteration, prompt_id=prompt_id, prompt=f"p{prompt_id}", completion=completion, kept=True
    )


def test_distinct_replay_buffer_holds_each_prompt_and_completion_once_newest_copy_first():
    buffer = ReplayBuffer(3, distinct=True)
    buffer.add([_copy(0, "a", 0), _copy(1, "b", 0)])
    buffer.add([_copy(0, "a", 1), _copy(0, "other", 1)])
    assert [(item.prompt_id, item.completion, item.iteration) for item in buffer.samples] == [
        (0, "a", 1),
        (0, "other", 1),
        (1, "b", 0),
    ]


def test_distinct_replay_trains_on_a_sample_kept_again_once():
    kept = [_copy(0, "a", 1)]
    for distinct, expected in ((True, [(0, 1), (1, 0)]), (False, [(0, 1), (0, 0), (1, 0)])):
        buffer = ReplayBuffer(5, distinct=distinct)
        buffer.add([_copy(0, "a", 0), _copy(1, "b", 0)])
        assert [(item.prompt_id, item.iteration) for item in buffer.training_samples(kept)] == expected


def test_loop_trains_on_kept_samples_plus_capped_replay(tiny_llama_path, tmp_path):
    tokenizer = PromptCompletionTokenizer()
    rows = make_loop(
        tiny_llama_path,
        tmp_path / "out",
        tokenizer=tokenizer,
        iterations=3,
        prompts_per_iteration=1,
        samples_per_prompt=2,
        replay_buffer_size=3,
    ).run()
    assert tokenizer.batches == [2, 4, 5]
    assert [row["replay/size"] for row in rows] == [2, 3, 3]
    assert [row["train/num_samples"] for row in rows] == [2, 4, 5]
    assert [row["num_kept"] for row in rows] == [2, 2, 2]


def test_loop_with_distinct_replay_trains_on_a_sample_kept_every_iteration_once(tiny_llama_path, tmp_path):
    from loop_fakes import make_prompts

    batches = {}
    for distinct in (False, True):
        tokenizer = PromptCompletionTokenizer()
        rows = make_loop(
            tiny_llama_path,
            tmp_path / f"out-{distinct}",
            prompts=make_prompts(1),  # the same prompt and the same two completions every iteration
            tokenizer=tokenizer,
            iterations=3,
            prompts_per_iteration=1,
            samples_per_prompt=2,
            replay_buffer_size=10,
            replay_distinct=distinct,
        ).run()
        batches[distinct] = (tokenizer.batches, [row["replay/size"] for row in rows])
    assert batches[False] == ([2, 4, 6], [2, 4, 6])
    assert batches[True] == ([2, 2, 2], [2, 2, 2])


def test_train_epochs_repeat_the_step_over_the_same_batch(tiny_llama_path, tmp_path):
    (row,) = make_loop(tiny_llama_path, tmp_path / "out", iterations=1, train_epochs=3).run()
    assert row["global_step"] == 3
    assert row["train/num_updates"] == 3
    assert math.isfinite(row["train/loss"])


def _base_weights(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def _equal(weights, other) -> bool:
    return all(torch.equal(value, other[name]) for name, value in weights.items())


def test_restart_from_base_trains_every_iteration_from_base_weights(tiny_llama_path, tmp_path):
    tokenizer = PromptCompletionTokenizer()
    loop = make_loop(tiny_llama_path, tmp_path / "out", tokenizer=tokenizer, iterations=3, restart_from_base=True)
    optimizer_state_sizes = []
    original_tokenize = tokenizer.tokenize

    def tokenize(samples):
        optimizer_state_sizes.append(len(loop.trainer.optimizer.state))
        return original_tokenize(samples)

    tokenizer.tokenize = tokenize
    tokenizer.snapshot_weights = True
    loop.run()
    base = _base_weights(tiny_llama_path)
    assert len(tokenizer.snapshots) == 3
    assert all(_equal(snapshot, base) for snapshot in tokenizer.snapshots)
    assert optimizer_state_sizes == [0, 0, 0]
    assert not _equal(loop.trainer.model.state_dict(), base)
    assert loop.trainer.state.global_step == 3


def test_without_restart_training_continues_from_the_last_weights(tiny_llama_path, tmp_path):
    tokenizer = PromptCompletionTokenizer()
    loop = make_loop(tiny_llama_path, tmp_path / "out", tokenizer=tokenizer, iterations=2)
    tokenizer.snapshot_weights = True
    loop.run()
    base = _base_weights(tiny_llama_path)
    assert _equal(tokenizer.snapshots[0], base)
    assert not _equal(tokenizer.snapshots[1], base)


def test_restart_from_base_restores_the_learning_rate_schedule(tiny_llama_path, tmp_path):
    from loop_fakes import make_trainer

    trainer = make_trainer(tiny_llama_path, str(tmp_path / "trainer"), warmup_steps=4)
    rows = make_loop(
        tiny_llama_path, tmp_path / "out", trainer=trainer, iterations=3, restart_from_base=True
    ).run()
    learning_rates = [row["train/learning_rate"] for row in rows]
    assert learning_rates[0] == learning_rates[1] == learning_rates[2] < trainer.args.learning_rate
