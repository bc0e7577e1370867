"""What TRL's own tests of ``IterativeSFTTrainer`` rely on: a plain ``TrainingArguments``, an instantiated model
and tokenizer, and an optimizer whose ``zero_grad`` was patched to keep gradients (``set_to_none=False``), after
which every parameter holds a gradient, for a causal LM and an encoder-decoder, from tensors and from texts."""

from __future__ import annotations

from functools import partial

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, TrainingArguments

from iterframe import IterativeSFTTrainer

TEXTS = ["Testing the IterativeSFTTrainer.", "This is a test of the IterativeSFTTrainer"]


def tensor_inputs(tokenizer):
    ids = [tokenizer(text)["input_ids"] for text in (*TEXTS, TEXTS[0])]
    return {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids], "labels": ids}


@pytest.mark.parametrize("input_mode", ["tensor", "text"])
@pytest.mark.parametrize(
    ("model_path", "model_class"),
    [("tiny_qwen2_path", AutoModelForCausalLM), ("tiny_t5_path", AutoModelForSeq2SeqLM)],
)
def test_a_zero_grad_that_keeps_gradients_is_called_as_patched(
    request, tmp_path, model_path, model_class, input_mode
):
    path = request.getfixturevalue(model_path)
    model, tokenizer = model_class.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3, report_to="none"
    )
    trainer = IterativeSFTTrainer(model=model, args=args, processing_class=tokenizer)
    trainer.optimizer.zero_grad = partial(trainer.optimizer.zero_grad, set_to_none=False)
    inputs = tensor_inputs(tokenizer) if input_mode == "tensor" else {"texts": TEXTS, "texts_labels": TEXTS}
    stats = trainer.step(**inputs)
    assert stats["num_updates"] >= 1
    missing = [name for name, param in trainer.model.named_parameters() if param.grad is None]
    assert not missing, f"zero_grad was called with set_to_none=True: {missing[:3]}"
