"""The ``reward-model`` reward: a sequence-classification model's logit for prompt + completion."""

from __future__ import annotations

import dataclasses
from typing import Optional

import iterframe
from iterframe.builtin.http_reward import query_text

__all__ = ["RewardModelReward", "reward_text"]


#: The text the reward model reads for a prompt and its completion (shared with the ``http`` reward's queries).
reward_text = query_text


class RewardModelReward(iterframe.Reward):
    """Scores each sample with a sequence-classification reward model loaded from ``path``."""

    name = "reward-model"
    description = "Score prompt + completion with a sequence-classification reward model loaded from a path."

    @dataclasses.dataclass
    class Options:
        path: str = dataclasses.field(
            metadata={"help": "Folder or Hub id of the sequence-classification model and its tokenizer."}
        )
        label: int = dataclasses.field(default=0, metadata={"help": "Index of the logit used as the score."})
        batch_size: int = dataclasses.field(default=8, metadata={"help": "Texts per forward pass."})
        max_length: Optional[int] = dataclasses.field(
            default=None, metadata={"help": "Truncate longer texts to this many tokens, keeping their end."}
        )
        device: Optional[str] = dataclasses.field(
            default=None, metadata={"help": "Device of the reward model (default: the trained model's, else cpu)."}
        )

        def __post_init__(self):
            if self.batch_size < 1:
                raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
            if self.max_length is not None and self.max_length < 1:
                raise ValueError(f"max_length must be >= 1 or none, got {self.max_length}.")

    def setup(self, context: iterframe.RunContext) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.options.path)
            self.model = AutoModelForSequenceClassification.from_pretrained(self.options.path)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"reward-model: cannot load a sequence-classification model from path={self.options.path!r}: "
                f"{error}"
            ) from error
        num_labels = self.model.config.num_labels
        if not 0 <= self.options.label < num_labels:
            raise ValueError(
                f"reward-model: label={self.options.label} but the model at {self.options.path!r} has "
                f"{num_labels} label(s); use 0..{num_labels - 1}."
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"
        trained_model = context.model
        device = self.options.device or (str(trained_model.device) if trained_model is not None else "cpu")
        self.model.to(device).eval()

    def score(self, samples: list[iterframe.Sample]) -> list[float]:
        texts = [reward_text(self.tokenizer, sample.prompt, sample.completion) for sample in samples]
        return self.score_texts(texts)

    def score_texts(self, texts: list[str]) -> list[float]:
        """The model's score of each text, in batches of ``batch_size`` texts of similar length."""
        lengths = [len(text) for text in texts]
        longest_first = sorted(range(len(texts)), key=lambda index: -lengths[index])
        scores: list[float] = [0.0] * len(texts)
        for start in range(0, len(longest_first), self.options.batch_size):
            batch = longest_first[start : start + self.options.batch_size]
            for index, value in zip(batch, self._score_texts([texts[index] for index in batch])):
                scores[index] = value
        return scores

    def _score_texts(self, texts: list[str]) -> list[float]:
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=self.options.max_length is not None,
            max_length=self.options.max_length,
            return_tensors="pt",
        ).to(self.model.device)
        import torch  # only when scoring: listing plugins and --help stay free of torch

        config = self.model.config.get_text_config()
        saved_pad_id = config.pad_token_id
        if "attention_mask" in encoded:  # pad with an id the model pools on and that no text has
            vocab_size = self.model.get_input_embeddings().num_embeddings
            config.pad_token_id = _unambiguous_pad_id(encoded, saved_pad_id, vocab_size)
            padding = encoded["attention_mask"] == 0
            encoded["input_ids"] = encoded["input_ids"].masked_fill(padding, config.pad_token_id)
        try:
            with torch.inference_mode():
                logits = self.model(**encoded).logits
        finally:
            config.pad_token_id = saved_pad_id
        return logits[:, self.options.label].float().cpu().tolist()

    def close(self) -> None:
        self.model = None


def _unambiguous_pad_id(encoded, pad_id: Optional[int], vocab_size: int) -> int:
    """The id to pad with, which the model also pools on: a sequence-classification decoder scores a text at its
    last token that is not the pad id, so when a real token is the pad id (pad == eos and a text with eos in it),
    the padding takes an id that no text of the batch has."""
    real_ids = set(encoded["input_ids"][encoded["attention_mask"] == 1].tolist())
    if pad_id is not None and pad_id not in real_ids:
        return pad_id
    return next(token_id for token_id in range(vocab_size) if token_id not in real_ids)
