"""Property tests of step(): for random shapes and settings, every label token is trained exactly once."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iterframe import IterativeSFTConfig, IterativeSFTTrainer

PAD = 0


@st.composite
def step_inputs(draw):
    """Random samples: lengths, padding side, label masks, plus batch/accumulation/truncation settings."""
    num_samples = draw(st.integers(1, 9))
    samples = []
    for _ in range(num_samples):
        length = draw(st.integers(1, 24))
        ids = draw(st.lists(st.integers(3, 200), min_size=length, max_size=length))
        labels = [token if draw(st.booleans()) else -100 for token in ids]
        samples.append((ids, labels))
    return {
        "samples": samples,
        "batch_size": draw(st.integers(1, 4)),
        "accumulation": draw(st.integers(1, 3)),
        "max_length": draw(st.one_of(st.none(), st.integers(1, 24))),
        "mode": draw(st.sampled_from(["keep_end", "keep_start"])),
        "left_pad": draw(st.booleans()),
    }


def padded(samples, left_pad):
    """Pad samples into 2-D tensors (left or right), the way a user would hand them over."""
    width = max(len(ids) for ids, _ in samples)
    input_ids, masks, labels = [], [], []
    for ids, sample_labels in samples:
        gap = width - len(ids)
        pad_ids, pad_mask, pad_labels = [PAD] * gap, [0] * gap, [-100] * gap
        if left_pad:
            input_ids.append(pad_ids + ids), masks.append(pad_mask + [1] * len(ids))
            labels.append(pad_labels + sample_labels)
        else:
            input_ids.append(ids + pad_ids), masks.append([1] * len(ids) + pad_mask)
            labels.append(sample_labels + pad_labels)
    return torch.tensor(input_ids), torch.tensor(masks), torch.tensor(labels)


def expected_trained_tokens(samples, max_length, mode):
    """(sample index, position-in-truncated-sample, token) for every label that should carry loss once."""
    expected = []
    for index, (ids, labels) in enumerate(samples):
        kept = list(zip(ids, labels))
        if max_length is not None and len(kept) > max_length:
            kept = kept[-max_length:] if mode == "keep_end" else kept[:max_length]
        for position, (_, label) in enumerate(kept):
            if position > 0 and label != -100:  # a causal LM predicts token t from tokens < t
                expected.append((index, position, label))
    return sorted(expected)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tiny_llama_path):
    args = IterativeSFTConfig(
        output_dir=str(tmp_path_factory.mktemp("props") / "out"), report_to="none", save_strategy="no"
    )
    trainer = IterativeSFTTrainer(tiny_llama_path, args=args)
    trainer.model.resize_token_embeddings(256)
    return trainer


def sample_rows(batch):
    """``(sample index, labels, attention mask)`` of each sample of a padded or a packed micro-batch."""
    if batch.segments is None:
        return [
            (index, batch.labels[row], batch.attention_mask[row]) for row, index in enumerate(batch.sample_indices)
        ]
    return [
        (index, batch.labels[0, start:end], batch.attention_mask[0, start:end])
        for index, (start, end) in zip(batch.sample_indices, batch.segments)
    ]


@pytest.mark.parametrize("padding_free", [False, True])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=step_inputs())
def test_every_label_token_contributes_exactly_once(trainer, case, padding_free):
    trainer.padding_free = trainer.args.padding_free = padding_free  # set: every micro-batch packed, or none
    trainer.args.per_device_train_batch_size = case["batch_size"]
    trainer.args.gradient_accumulation_steps = case["accumulation"]
    trainer.args.max_length = case["max_length"]
    trainer.args.truncation_mode = case["mode"]
    trainer.args.learning_rate = 0.0
    seen = []
    build = trainer._micro_batches

    def record(samples):
        seen.extend(build(samples))
        return seen

    input_ids, attention_mask, labels = padded(case["samples"], case["left_pad"])
    step_before = trainer.state.global_step
    trainer._micro_batches = record
    try:
        stats = trainer.step(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    finally:
        del trainer._micro_batches

    trained = []
    for batch in seen:
        # padding never carries loss, and labels stay aligned with their ids after truncation
        assert ((batch.labels == -100) | (batch.attention_mask == 1)).all()
        assert (batch.segments is not None) == padding_free
        for sample_index, row_labels, row_mask in sample_rows(batch):
            real = int(row_mask.sum())
            assert (row_mask[:real] == 1).all() and (row_mask[real:] == 0).all()
            for position in range(1, real):
                label = int(row_labels[position])
                if label != -100:
                    trained.append((sample_index, position, label))
    expected = expected_trained_tokens(case["samples"], case["max_length"], case["mode"])
    assert sorted(trained) == expected
    assert stats["num_tokens"] == len(expected)

    assert len(seen) == math.ceil(len(case["samples"]) / case["batch_size"])
    groups = [seen[start : start + case["accumulation"]] for start in range(0, len(seen), case["accumulation"])]
    updates = sum(1 for group in groups if sum(batch.num_loss_tokens for batch in group) > 0)
    assert trainer.state.global_step - step_before == stats["num_updates"] == updates
