"""The language-model head runs only where a label carries loss, the cross-entropy in chunks, and loss and
gradients are those of the full-logits path: packed and padded, with and without accumulation, on the zoo's
SmolLM2 (49k vocabulary, tied embeddings) and on every architecture that may pack."""

from __future__ import annotations

import pytest
import torch
from test_packing_architectures import build_tiny

from iterframe import IterativeSFTConfig, IterativeSFTTrainer
from iterframe.engine import batching, label_logits
from iterframe.engine.loss import summed_token_loss
from iterframe.engine.packing_support import PACKABLE_ARCHITECTURES, unsupported_reason
from iterframe.engine.step_inputs import TokenizedSample

#: (prompt, answer) lengths of chat-like samples: most positions are prompt.
SHAPES = [(30, 4), (45, 12), (38, 3), (52, 9), (33, 20), (41, 6)]


def chat_samples(vocab: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    input_ids, labels = [], []
    for prompt, answer in SHAPES:
        ids = torch.randint(3, vocab, (prompt + answer,), generator=generator)
        label = ids.clone()
        label[:prompt] = -100
        input_ids.append(ids)
        labels.append(label)
    return input_ids, labels


def make_trainer(tmp_path, model_path, **settings):
    args = dict(output_dir=str(tmp_path), report_to="none", max_grad_norm=0.0, use_cpu=True, seed=0)
    trainer = IterativeSFTTrainer(model_path, args=IterativeSFTConfig(**{**args, **settings}))
    trainer.optimizer = trainer.accelerator.prepare(torch.optim.SGD(trainer.model.parameters(), lr=1.0))
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
    return trainer


def step_and_gradient(trainer, input_ids, labels):
    """The statistics of one step() and its update's gradient (plain SGD with lr 1: the weight change)."""
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    stats = trainer.step(input_ids=input_ids, labels=labels)
    return stats, {name: before[name] - p.detach() for name, p in trainer.model.named_parameters()}


class HeadOutputs:
    """Records the number of positions of every output of the model's head while active."""

    def __init__(self, model):
        self.head, self.rows = model.get_output_embeddings(), []

    def __enter__(self):
        self.handle = self.head.register_forward_hook(
            lambda m, a, output: self.rows.append(output[..., 0].numel())
        )
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.fixture(scope="module")
def smollm2(zoo_models):
    return zoo_models["smollm2-instruct"]


@pytest.mark.parametrize("padding_free", [False, True], ids=["padded", "packed"])
def test_the_head_computes_logits_only_at_positions_whose_label_carries_loss(tmp_path, smollm2, padding_free):
    trainer = make_trainer(tmp_path, smollm2, per_device_train_batch_size=3, padding_free=padding_free)
    input_ids, labels = chat_samples(trainer.model.config.vocab_size)
    with HeadOutputs(trainer.model) as head:
        stats = trainer.step(input_ids=input_ids, labels=labels)
    assert sum(head.rows) == stats["num_tokens"] == sum(answer for _, answer in SHAPES)


def test_no_micro_batch_materialises_a_logit_for_every_token_and_word(tmp_path, smollm2, monkeypatch):
    monkeypatch.setattr(label_logits, "CHUNK_LOGITS", 8 * 49152)  # 8 positions of the 49k vocabulary at a time
    trainer = make_trainer(tmp_path, smollm2, per_device_train_batch_size=6, padding_free=False)
    input_ids, labels = chat_samples(trainer.model.config.vocab_size)
    with HeadOutputs(trainer.model) as head:
        trainer.step(input_ids=input_ids, labels=labels)
    assert max(head.rows) == 8 and len(head.rows) > 2 * 54 / 8  # chunks, run again in backward


@pytest.mark.parametrize("chunk_logits", [2**23, 5 * 49152], ids=["one chunk", "chunks of 5"])
@pytest.mark.parametrize(("batch_size", "accumulation"), [(6, 1), (2, 3)])
@pytest.mark.parametrize("padding_free", [False, True], ids=["padded", "packed"])
def test_loss_and_gradients_at_label_positions_equal_the_full_logits_path(
    tmp_path, smollm2, monkeypatch, padding_free, batch_size, accumulation, chunk_logits
):
    monkeypatch.setattr(label_logits, "CHUNK_LOGITS", chunk_logits)
    settings = dict(
        per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, padding_free=padding_free
    )
    full = make_trainer(tmp_path / "full", smollm2, **settings)
    full._head_transform = None  # the loss from the model's own logits at every position
    at_labels = make_trainer(tmp_path / "labels", smollm2, **settings)
    assert at_labels._label_logits_transform() is not None
    input_ids, labels = chat_samples(full.model.config.vocab_size)
    full_stats, full_gradient = step_and_gradient(full, input_ids, labels)
    stats, gradient = step_and_gradient(at_labels, input_ids, labels)
    assert stats["num_updates"] == full_stats["num_updates"] == -(-len(SHAPES) // (batch_size * accumulation))
    assert stats["loss"] == pytest.approx(full_stats["loss"], rel=1e-5)
    for name, expected in full_gradient.items():
        torch.testing.assert_close(gradient[name], expected, atol=1e-7, rtol=1e-4, msg=name)


def micro_batches(vocab: int):
    generator = torch.Generator().manual_seed(2)
    samples = []
    for length in (9, 5, 12):
        ids = torch.randint(3, vocab - 1, (length,), generator=generator)
        labels = ids.clone()
        labels[: length // 3] = -100
        samples.append(TokenizedSample(input_ids=ids, labels=labels))
    padded = batching.pad_samples(samples, 0, is_encoder_decoder=False)
    return {"padded": padded, "packed": batching.pack_samples(samples)}


@pytest.mark.parametrize("model_type", sorted(PACKABLE_ARCHITECTURES))
def test_every_packable_architecture_s_loss_at_label_positions_equals_its_full_loss(model_type, monkeypatch):
    """Each architecture's logits as its forward returns them (soft-capping, logit scaling included) are what
    the head path computes: loss and gradients of a padded and a packed micro-batch, in chunks of 4 positions."""
    from iterframe.engine import packing

    model = build_tiny(model_type).train()
    if model_type == "granite":
        model.config.logits_scaling = 4.0  # its default of 1 would not show the scaling
    transform = label_logits.logit_transform(model)
    assert transform is not None
    monkeypatch.setattr(label_logits, "CHUNK_LOGITS", 4 * model.get_output_embeddings().weight.shape[0])
    for layout, batch in micro_batches(model.config.vocab_size).items():
        if layout == "packed" and unsupported_reason(model) is not None:
            continue  # this transformers release cannot pack it: its micro-batches are all padded
        results = []
        for head_transform in (None, transform):
            model.zero_grad()
            torch.manual_seed(0)  # the same dropout both ways
            with packing.packed_attention(model, batch.segments) if batch.segments else torch.enable_grad():
                loss = summed_token_loss(model, batch, is_encoder_decoder=False, head_transform=head_transform)
                loss.backward()
            gradient = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
            results.append((float(loss.detach()), gradient))
        (full_loss, full_gradient), (loss, gradient) = results
        assert loss == pytest.approx(full_loss, rel=1e-5), layout
        for name, expected in full_gradient.items():
            torch.testing.assert_close(gradient[name], expected, atol=1e-6, rtol=1e-4, msg=f"{layout}: {name}")
