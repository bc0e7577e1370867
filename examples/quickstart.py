"""Quickstart: train a causal LM one `step()` at a time, with tensors and with texts.

python examples/quickstart.py                       # builds a tiny model locally (offline)
python examples/quickstart.py --model Qwen/Qwen2.5-0.5B   # any causal LM id or local path
"""

import argparse
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from iterframe import IterativeSFTConfig, IterativeSFTTrainer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model id or local path (default: a tiny model built locally)")
    parser.add_argument("--output-dir", default=None)
    options = parser.parse_args()

    model_path = options.model
    if model_path is None:
        from iterframe.testing import build_tiny_causal_lm

        model_path = tempfile.mkdtemp(prefix="iterframe-quickstart-model-")
        build_tiny_causal_lm(model_path)

    model = AutoModelForCausalLM.from_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    args = IterativeSFTConfig(
        output_dir=options.output_dir or tempfile.mkdtemp(prefix="iterframe-quickstart-"),
        per_device_train_batch_size=2,
        learning_rate=1e-4,
        max_length=128,
        save_strategy="no",
    )
    trainer = IterativeSFTTrainer(model, args=args, processing_class=tokenizer)

    # 1) Tensors: input_ids + attention_mask (labels default to input_ids, padding masked out).
    batch = tokenizer(["The answer is 4.", "2 + 2 = 4"], padding=True, return_tensors="pt")
    stats = trainer.step(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    print(f"tensor step: loss={stats['loss']:.4f} tokens={stats['num_tokens']} step={stats['global_step']}")

    # 2) Tensors with labels: train only on the completion (prompt tokens set to -100).
    prompt = tokenizer("Q: 2 + 2 = ?  A:")["input_ids"]
    completion = tokenizer(" 4", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = torch.tensor([prompt + completion])
    labels = torch.tensor([[-100] * len(prompt) + completion])
    stats = trainer.step(input_ids=input_ids, labels=labels)
    print(f"completion-only step: loss={stats['loss']:.4f} tokens={stats['num_tokens']} of {len(completion)}")

    # 3) Texts: tokenized for you.
    stats = trainer.step(texts=["Iterative fine-tuning trains on its own best samples.", "Hello!"])
    print(f"text step: loss={stats['loss']:.4f} tokens={stats['num_tokens']} step={stats['global_step']}")

    trainer.save_model(args.output_dir)
    trainer.create_model_card(model_name="quickstart-model")
    print(f"saved to {args.output_dir}")


if __name__ == "__main__":
    main()
