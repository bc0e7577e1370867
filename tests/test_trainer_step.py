"""step() semantics: input modes, labels, truncation, micro-batching, accumulation, schedule, stats."""

import math
import warnings

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback, TrainingArguments

from iterframe import IterativeSFTConfig, IterativeSFTTrainer

#: A warmup given as a ratio of the horizon: ``warmup_ratio`` in transformers 4, a ``warmup_steps`` below 1 in 5.
WARMUP_RATIO = (
    {"warmup_ratio": 0.5} if "warmup_ratio" in TrainingArguments.__dataclass_fields__ else {"warmup_steps": 0.5}
)

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "abc", "twelve plus seven is 19"]


def make_trainer(tmp_path, model_path, **overrides):
    settings = {
        "output_dir": str(tmp_path / "out"),
        "report_to": "none",
        "learning_rate": 1e-3,
        "save_strategy": "no",
    }
    settings.update(overrides)
    return IterativeSFTTrainer(model_path, args=IterativeSFTConfig(**settings))


def record_micro_batches(trainer):
    """Wrap the trainer's loss so every micro-batch it trains on is recorded (on CPU)."""
    seen = []
    original = trainer._loss_sum

    def spy(batch):
        seen.append(batch.to("cpu"))
        return original(batch)

    trainer._loss_sum = spy
    return seen


def weights(trainer):
    return {name: param.detach().clone() for name, param in trainer.model.named_parameters()}


def encode(trainer, texts):
    return [trainer.processing_class(text)["input_ids"] for text in texts]


# --- 1. input modes -----------------------------------------------------------------------------------------


def test_tensor_mode_trains_on_input_ids(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    ids = [torch.tensor(seq) for seq in encode(trainer, TEXTS)]
    before = weights(trainer)
    stats = trainer.step(input_ids=ids)
    assert stats["num_samples"] == 4
    assert stats["num_tokens"] == sum(len(seq) - 1 for seq in ids)
    assert any(not torch.equal(before[name], param) for name, param in trainer.model.named_parameters())


def test_text_mode_tokenizes_and_trains(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    stats = trainer.step(texts=TEXTS)
    assert stats["num_samples"] == 4
    assert stats["num_tokens"] == sum(len(seq) - 1 for seq in encode(trainer, TEXTS))


@pytest.mark.parametrize("container", [list, tuple, "column"])
def test_lists_tuples_and_dataset_columns_are_accepted(tmp_path, tiny_llama_path, container):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    ids = encode(trainer, TEXTS)
    if container == "column":
        dataset = datasets.Dataset.from_dict({"input_ids": ids, "text": TEXTS})
        text_stats = trainer.step(texts=dataset["text"])
        id_stats = trainer.step(input_ids=dataset["input_ids"])
    else:
        text_stats = trainer.step(texts=container(TEXTS))
        id_stats = trainer.step(input_ids=container(container(seq) for seq in ids))
    assert text_stats["num_tokens"] == id_stats["num_tokens"] == sum(len(seq) - 1 for seq in ids)


def test_two_dimensional_tensor_with_padding_mask(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    batch = trainer.processing_class(TEXTS, padding=True, return_tensors="pt")
    stats = trainer.step(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert stats["num_tokens"] == int((batch["attention_mask"].sum(dim=1) - 1).sum())


def test_both_tensors_and_texts_warn_and_texts_win(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    with pytest.warns(UserWarning, match="texts are used"):
        stats = trainer.step(input_ids=[[5, 6, 7]], texts=TEXTS)
    assert stats["num_samples"] == len(TEXTS)


# --- 2. labels ----------------------------------------------------------------------------------------------


def test_given_labels_are_used_as_given_for_causal_lms(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    seen = record_micro_batches(trainer)
    ids = torch.tensor([[1, 10, 11, 12, 13, 14, 2]])
    labels = torch.tensor([[-100, -100, -100, -100, 13, 14, 2]])
    stats = trainer.step(input_ids=ids, labels=labels)
    assert stats["num_tokens"] == 3
    assert torch.equal(seen[0].labels, labels)


@pytest.mark.parametrize("padding_free", [False, True])
def test_without_labels_a_final_eos_equal_to_pad_is_still_trained(tmp_path, tiny_nopad_llama_path, padding_free):
    trainer = make_trainer(tmp_path, tiny_nopad_llama_path, padding_free=padding_free)
    tokenizer = trainer.processing_class
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    seen = record_micro_batches(trainer)
    short = [1, 20, 21, eos]
    long = [1, 30, 31, 32, 33, eos]
    ids = torch.tensor([short + [eos, eos], long])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    stats = trainer.step(input_ids=ids, attention_mask=mask)
    assert stats["num_tokens"] == (len(short) - 1) + (len(long) - 1)
    (batch,) = seen
    if padding_free:  # one row of both samples, each with its final eos, no padding at all
        (row,) = batch.labels.tolist()
        assert sorted(row[start:end] for start, end in batch.segments) == sorted([short, long])
        assert len(row) == len(short) + len(long)
        return
    short_row = batch.labels[batch.attention_mask.sum(dim=1) == 4][0]
    assert short_row[3] == eos, "the real final eos must carry loss"
    assert (short_row[4:] == -100).all(), "padding must not carry loss"


def test_padding_positions_never_carry_loss_even_with_user_labels(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    ids = torch.tensor([[1, 10, 11, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    labels = torch.tensor([[1, 10, 11, 0, 0]])
    assert trainer.step(input_ids=ids, attention_mask=mask, labels=labels)["num_tokens"] == 2


# --- 3. texts_labels ----------------------------------------------------------------------------------------


def test_seq2seq_texts_labels_are_decoder_targets(tmp_path, tiny_t5_path):
    trainer = make_trainer(tmp_path, tiny_t5_path)
    seen = record_micro_batches(trainer)
    targets = ["ok", "fine thanks"]
    stats = trainer.step(texts=["how are you", "hi"], texts_labels=targets)
    expected = trainer.processing_class(text_target=targets)["input_ids"]
    assert stats["num_tokens"] == sum(len(seq) for seq in expected)
    recorded = sorted([row[row != -100].tolist() for batch in seen for row in batch.labels], key=len)
    assert recorded == sorted(expected, key=len)


def test_causal_texts_labels_that_differ_from_texts_are_an_error(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    with pytest.raises(ValueError, match=r"texts_labels\[1\] differs.*-100"):
        trainer.step(texts=["a b", "c d"], texts_labels=["a b", "d"])
    assert trainer.state.global_step == 0


def test_causal_texts_labels_equal_to_texts_train_normally(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    assert trainer.step(texts=TEXTS, texts_labels=list(TEXTS))["global_step"] == 1


def test_seq2seq_without_any_targets_is_an_error(tmp_path, tiny_t5_path):
    trainer = make_trainer(tmp_path, tiny_t5_path)
    with pytest.raises(ValueError, match="encoder-decoder model needs targets"):
        trainer.step(texts=["hello"])
    with pytest.raises(ValueError, match="encoder-decoder model needs targets"):
        trainer.step(input_ids=[[5, 6, 7]])


def test_seq2seq_tensor_labels(tmp_path, tiny_t5_path):
    trainer = make_trainer(tmp_path, tiny_t5_path)
    stats = trainer.step(input_ids=[[5, 6, 7, 2]], labels=[[8, 9, 2]])
    assert stats["num_tokens"] == 3


# --- 4. truncation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["keep_end", "keep_start"])
@pytest.mark.parametrize("input_mode", ["tensors", "texts"])
def test_max_length_truncates_consistently(tmp_path, tiny_llama_path, mode, input_mode):
    trainer = make_trainer(tmp_path, tiny_llama_path, max_length=5, truncation_mode=mode)
    seen = record_micro_batches(trainer)
    text = "the quick brown fox jumps over the lazy dog"
    ids = trainer.processing_class(text)["input_ids"]
    labels = list(ids)
    labels[:3] = [-100] * 3
    if input_mode == "tensors":
        trainer.step(input_ids=[ids], attention_mask=[[1] * len(ids)], labels=[labels])
        expected_labels = labels[-5:] if mode == "keep_end" else labels[:5]
    else:
        trainer.step(texts=[text])
        expected_labels = ids[-5:] if mode == "keep_end" else ids[:5]
    expected_ids = ids[-5:] if mode == "keep_end" else ids[:5]
    (batch,) = seen
    assert batch.input_ids.tolist() == [expected_ids]
    assert batch.labels.tolist() == [expected_labels]
    assert batch.attention_mask.tolist() == [[1] * 5]


# --- 5. micro-batches, accumulation, token weighting --------------------------------------------------------


@pytest.mark.parametrize(
    ("num_samples", "batch_size", "accumulation"), [(7, 2, 2), (8, 4, 1), (5, 1, 3), (3, 8, 4)]
)
def test_every_sample_is_trained_exactly_once(tmp_path, tiny_llama_path, num_samples, batch_size, accumulation):
    trainer = make_trainer(
        tmp_path, tiny_llama_path, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation
    )
    seen = record_micro_batches(trainer)
    texts = [("word " * (index + 1)).strip() for index in range(num_samples)]
    stats = trainer.step(texts=texts)
    indices = sorted(index for batch in seen for index in batch.sample_indices)
    assert indices == list(range(num_samples))
    assert all(len(batch.sample_indices) <= batch_size for batch in seen)
    expected_updates = math.ceil(math.ceil(num_samples / batch_size) / accumulation)
    assert stats["num_updates"] == expected_updates
    assert trainer.state.global_step == stats["global_step"] == expected_updates


def test_global_step_accumulates_across_calls(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, per_device_train_batch_size=1, gradient_accumulation_steps=2)
    trainer.step(texts=TEXTS[:3])
    trainer.step(texts=TEXTS[:2])
    assert trainer.state.global_step == 3


def test_with_group_by_length_micro_batches_are_grouped_by_length_and_padded_to_their_own_longest(
    tmp_path, tiny_llama_path
):
    trainer = make_trainer(
        tmp_path, tiny_llama_path, per_device_train_batch_size=2, padding_free=False, group_by_length=True
    )
    seen = record_micro_batches(trainer)
    texts = ["a", "a b c d e f g h i j k l", "b", "m n o p q r s t u v w x"]
    stats = trainer.step(texts=texts)
    lengths = sorted(batch.input_ids.shape[1] for batch in seen)
    short, long = lengths
    assert short <= 3 and long >= 12
    assert stats["padding_fraction"] < 0.1


def test_by_default_micro_batches_mix_lengths_in_a_new_order_each_call(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, per_device_train_batch_size=2, padding_free=False)
    assert trainer.args.group_by_length is False
    seen = record_micro_batches(trainer)
    words = "a b c d e f g h i j k l m n o p".split()
    texts = [" ".join(words[: 1 + index]) for index in range(16)]  # lengths 1..16 words
    compositions = []
    for _ in range(4):
        seen.clear()
        trainer.step(texts=texts)
        batches = [sorted(batch.sample_indices) for batch in seen]
        assert sorted(index for batch in batches for index in batch) == list(range(16))  # each sample once
        compositions.append(sorted(batches))
    grouped = [[2 * pair, 2 * pair + 1] for pair in range(8)]  # what length grouping would give
    assert any(composition != grouped for composition in compositions)
    assert len({str(composition) for composition in compositions}) > 1  # drawn afresh per call


def test_pad_to_multiple_of_rounds_micro_batch_length(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, pad_to_multiple_of=8)
    seen = record_micro_batches(trainer)
    trainer.step(texts=["hello world"])
    assert seen[0].input_ids.shape[1] % 8 == 0


def _gradient_after_one_update(tmp_path, model_path, texts, batch_size, accumulation):
    trainer = make_trainer(
        tmp_path,
        model_path,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_grad_norm=0.0,
    )
    optimizer = torch.optim.SGD(trainer.model.parameters(), lr=1.0)
    trainer.optimizer = trainer.accelerator.prepare(optimizer)
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
    before = weights(trainer)
    stats = trainer.step(texts=texts)
    assert stats["num_updates"] == 1
    return {name: before[name] - param.detach() for name, param in trainer.model.named_parameters()}, trainer


def test_accumulated_gradient_equals_the_full_batch_gradient(tmp_path, tiny_llama_path):
    texts = ["a b", "the quick brown fox jumps over the lazy dog", "hello world again", "x"]
    accumulated, _ = _gradient_after_one_update(tmp_path / "a", tiny_llama_path, texts, 2, 2)
    full, trainer = _gradient_after_one_update(tmp_path / "b", tiny_llama_path, texts, 4, 1)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], atol=1e-5, rtol=1e-4, msg=name)


def test_update_gradient_is_the_token_weighted_mean_over_all_samples(tmp_path, tiny_llama_path):
    texts = ["a b", "the quick brown fox jumps over the lazy dog", "hello world again", "x"]
    update, trainer = _gradient_after_one_update(tmp_path, tiny_llama_path, texts, 1, 4)
    reference = IterativeSFTTrainer(tiny_llama_path, args=IterativeSFTConfig(output_dir=str(tmp_path / "r")))
    model = reference.model
    model.zero_grad()
    total_loss, total_tokens = 0.0, 0
    for text in texts:
        ids = torch.tensor([reference.processing_class(text)["input_ids"]])
        logits = model(input_ids=ids).logits
        total_loss = total_loss + F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")
        total_tokens += ids.shape[1] - 1
    (total_loss / total_tokens).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(update[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)


# --- 6. schedule --------------------------------------------------------------------------------------------


def test_default_max_steps_keeps_a_nonzero_learning_rate(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    assert trainer.args.max_steps == -1
    for _ in range(3):
        stats = trainer.step(texts=TEXTS)
    assert stats["learning_rate"] == pytest.approx(1e-3)


def test_warmup_then_constant_when_max_steps_is_unset(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, warmup_steps=2, per_device_train_batch_size=1)
    rates = [trainer.step(texts=["hello"])["learning_rate"] for _ in range(4)]
    assert rates[0] < rates[1] <= rates[2] == rates[3] == pytest.approx(1e-3)


def test_max_steps_uses_the_configured_decay(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, max_steps=4, per_device_train_batch_size=1)
    rates = [trainer.step(texts=["hello"])["learning_rate"] for _ in range(4)]
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"lr_scheduler_type": "cosine"}, "lr_scheduler_type='cosine'"),
        ({"lr_scheduler_type": "linear"}, "lr_scheduler_type='linear'"),
        (WARMUP_RATIO, "a warmup ratio of 0.5"),
        ({"lr_scheduler_type": "cosine", **WARMUP_RATIO}, "'cosine' and a warmup ratio of 0.5"),
    ],
)
def test_a_schedule_that_needs_max_steps_is_refused_without_it(tmp_path, tiny_llama_path, settings, named):
    with pytest.raises(ValueError, match=f"{named} needs the number of optimizer updates, but max_steps is -1"):
        make_trainer(tmp_path, tiny_llama_path, **settings)


def test_a_requested_schedule_is_followed_over_max_steps(tmp_path, tiny_llama_path):
    trainer = make_trainer(
        tmp_path, tiny_llama_path, max_steps=4, lr_scheduler_type="cosine", per_device_train_batch_size=1
    )
    rates = [trainer.step(texts=["hello"])["learning_rate"] for _ in range(3)]
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * step / 4)) for step in (1, 2, 3)]
    assert rates == pytest.approx(expected)


def test_plain_training_arguments_keep_the_constant_default_without_max_steps(tmp_path, tiny_llama_path):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", learning_rate=1e-3, save_strategy="no")
    trainer = IterativeSFTTrainer(tiny_llama_path, args=args)
    assert trainer.step(texts=TEXTS)["learning_rate"] == pytest.approx(1e-3)


def test_a_step_past_max_steps_is_refused_and_changes_nothing(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, max_steps=3, per_device_train_batch_size=1)
    trainer.step(texts=TEXTS[:2])
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    with pytest.raises(ValueError, match="would make 2 optimizer update.* at update 2 of max_steps=3"):
        trainer.step(texts=TEXTS[:2])
    assert trainer.state.global_step == 2
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param, before[name]), name
    assert trainer.step(texts=TEXTS[:1])["global_step"] == 3  # the last update still fits


# --- 8. returned statistics ---------------------------------------------------------------------------------


def test_step_returns_the_documented_statistics(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    stats = trainer.step(texts=TEXTS)
    for key in (
        "loss",
        "learning_rate",
        "grad_norm",
        "num_samples",
        "num_tokens",
        "global_step",
        "tokens_per_second",
    ):
        assert key in stats, key
    assert math.isfinite(stats["loss"]) and stats["loss"] > 0
    assert stats["grad_norm"] > 0 and stats["tokens_per_second"] > 0


def test_loss_is_the_token_weighted_mean_over_the_call(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path, per_device_train_batch_size=1, learning_rate=0.0)
    model = trainer.model
    total, tokens = 0.0, 0
    with torch.no_grad():
        for text in TEXTS:
            ids = torch.tensor([trainer.processing_class(text)["input_ids"]])
            logits = model(input_ids=ids).logits
            total += float(F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum"))
            tokens += ids.shape[1] - 1
    stats = trainer.step(texts=TEXTS)
    assert stats["loss"] == pytest.approx(total / tokens, rel=1e-5)


def test_optimize_device_cache_runs_the_garbage_collector(tmp_path, tiny_llama_path, monkeypatch):
    import gc

    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(1) or 0)
    trainer = make_trainer(tmp_path, tiny_llama_path, optimize_device_cache=True)
    trainer.step(texts=TEXTS)
    assert calls


def test_labels_without_any_loss_token_skip_the_update(tmp_path, tiny_llama_path):
    trainer = make_trainer(tmp_path, tiny_llama_path)
    before = weights(trainer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = trainer.step(input_ids=[[1, 5, 6]], labels=[[-100, -100, -100]])
    assert any("no label tokens" in str(w.message) for w in caught)
    assert stats["num_updates"] == 0 and trainer.state.global_step == 0
    assert all(torch.equal(before[name], param) for name, param in trainer.model.named_parameters())


class OptimizerStepRecorder(TrainerCallback):
    def __init__(self):
        self.events = []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.events.append("pre_optimizer_step")

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.events.append("optimizer_step")


def fp16_style_trainer(tmp_path, model_path, init_scale: float):
    """A trainer whose loss and update go through a real ``GradScaler`` starting at ``init_scale`` (fp16 training's
    loss scaling, runnable on CPU), a linear decay over 4 updates, and a callback recording optimizer steps."""
    trainer = make_trainer(tmp_path, model_path, max_steps=4, lr_scheduler_type="linear", use_cpu=True)
    trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    trainer.optimizer = trainer.accelerator.prepare(torch.optim.SGD(trainer.model.parameters(), lr=0.1))
    trainer.lr_scheduler = None
    trainer.create_scheduler(num_training_steps=4)
    recorder = OptimizerStepRecorder()
    trainer.add_callback(recorder)
    return trainer, recorder


def test_an_update_the_grad_scaler_skips_leaves_the_schedule_where_it_was(tmp_path, tiny_llama_path):
    trainer, _ = fp16_style_trainer(tmp_path / "skipped", tiny_llama_path, init_scale=2.0**127)  # overflows
    before = weights(trainer)
    stats = trainer.step(texts=TEXTS)
    assert trainer.accelerator.optimizer_step_was_skipped
    assert all(torch.equal(before[name], value) for name, value in weights(trainer).items())
    assert trainer.lr_scheduler.last_epoch == 0
    assert stats["learning_rate"] == pytest.approx(0.1)  # the linear decay has not moved

    control, _ = fp16_style_trainer(tmp_path / "control", tiny_llama_path, init_scale=1.0)
    control.step(texts=TEXTS)
    assert not control.accelerator.optimizer_step_was_skipped
    assert control.lr_scheduler.last_epoch == 1


def test_optimizer_step_callbacks_fire_around_every_update(tmp_path, tiny_llama_path):
    trainer, recorder = fp16_style_trainer(tmp_path, tiny_llama_path, init_scale=1.0)
    trainer.args.per_device_train_batch_size = 2
    trainer.step(texts=TEXTS)  # two updates
    assert recorder.events == ["pre_optimizer_step", "optimizer_step"] * 2
