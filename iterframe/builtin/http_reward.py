"""The ``http`` reward: scores come from a server, in batches, in the protocol of OpenRLHF's remote reward models.

Each batch is one ``POST`` of a JSON object to the URL::

    {"query": ["<prompt + completion>", ...], "prompts": ["<prompt>", ...], "labels": ["<reference>" or null, ...]}

and the answer is a JSON object whose ``rewards`` key (the ``score_key`` option) holds one number per query, or
``null`` for one the server could not score. A request that times out, cannot connect, gets a 5xx or 429 answer or
a malformed reply (not HTTP, cut short) is tried again (``retries`` times, waiting ``backoff_s``, doubled each
time); when every attempt failed, the batch's samples fail (``failed-reward:timeout`` or ``failed-reward:error``)
and the run goes on. ``timeout_s`` is a deadline for the whole request (connecting, the headers and the body),
replies are read up to ``max_reply_bytes``, and a redirect to another origin is never followed, so the bearer token
goes only to ``url``'s origin.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from iterframe.builtin.http_client import JsonService, RewardServerError, short
from iterframe.plugins.components import Reward, RunContext, Sample

__all__ = ["HttpReward", "RewardServerError", "prompt_text", "query_text"]


def query_text(tokenizer, prompt, completion: str) -> str:
    """The text a reward model reads: ``prompt + completion`` for text prompts; for chat prompts, the conversation
    with the completion as the assistant's reply, through the tokenizer's chat template (or the contents joined by
    newlines when there is no template)."""
    if isinstance(prompt, str):
        return prompt + completion
    conversation = [*prompt, {"role": "assistant", "content": completion}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(conversation, tokenize=False)
    return "\n".join(str(message["content"]) for message in conversation)


def prompt_text(tokenizer, prompt) -> str:
    """The prompt as text: itself, or chat messages through the chat template (with the generation prompt)."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "\n".join(str(message["content"]) for message in prompt)


class HttpReward(Reward):
    """Posts batches of samples to a reward server and reads one score per sample back."""

    name = "http"
    description = "Scores from a reward server: POST {'query': [...]} -> {'rewards': [...]} (OpenRLHF's protocol)."

    @dataclasses.dataclass
    class Options:
        url: str = dataclasses.field(
            metadata={"help": "The server's scoring URL, e.g. http://host:5000/get_reward."}
        )
        batch_size: int = dataclasses.field(default=32, metadata={"help": "Samples per request."})
        timeout_s: float = dataclasses.field(
            default=60.0,
            metadata={
                "help": "Seconds one request may take, connecting and the whole reply included, before it is "
                "given up (and retried)."
            },
        )
        retries: int = dataclasses.field(
            default=2,
            metadata={"help": "Further attempts after a request times out, cannot connect, or gets 5xx/429."},
        )
        backoff_s: float = dataclasses.field(
            default=1.0, metadata={"help": "Seconds before the first retry; doubled before each further one."}
        )
        score_key: str = dataclasses.field(
            default="rewards", metadata={"help": "Key of the answer's list of scores."}
        )
        max_reply_bytes: int = dataclasses.field(
            default=16 * 1024 * 1024,
            metadata={"help": "Largest reply read; a longer one fails its batch (16 MiB)."},
        )
        token_env: Optional[str] = dataclasses.field(
            default=None,
            metadata={
                "help": "Name of an environment variable holding a token, sent as 'Authorization: Bearer TOKEN' "
                "(the token itself never goes into the run's config)."
            },
        )

        def __post_init__(self):
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url must start with http:// or https://, got {self.url!r}.")
            for name, minimum in (("batch_size", 1), ("retries", 0), ("max_reply_bytes", 1)):
                if getattr(self, name) < minimum:
                    raise ValueError(f"{name} must be >= {minimum}, got {getattr(self, name)}.")
            if not self.timeout_s > 0 or self.backoff_s < 0:
                raise ValueError(
                    f"timeout_s must be > 0 and backoff_s >= 0, got {self.timeout_s}, {self.backoff_s}."
                )

    def setup(self, context: RunContext) -> None:
        self.tokenizer = context.tokenizer
        if self.options.token_env and not os.environ.get(self.options.token_env):
            raise ValueError(
                f"token_env={self.options.token_env!r}, but that environment variable is not set; export it or "
                "leave token_env out."
            )

    def score(self, samples: list[Sample]) -> list:
        scores: list = []
        for start in range(0, len(samples), self.options.batch_size):
            batch = samples[start : start + self.options.batch_size]
            try:
                scores.extend(self._scored_batch(batch))
            except (TimeoutError, RewardServerError) as error:  # the batch fails; the next one is tried
                scores.extend([error] * len(batch))
        return scores

    def _payload(self, samples: list[Sample]) -> dict[str, Any]:
        tokenizer = getattr(self, "tokenizer", None)
        return {
            "query": [query_text(tokenizer, sample.prompt, sample.completion) for sample in samples],
            "prompts": [prompt_text(tokenizer, sample.prompt) for sample in samples],
            "labels": [None if sample.reference is None else str(sample.reference) for sample in samples],
        }

    def _scored_batch(self, samples: list[Sample]) -> list:
        answer = self._post(self._payload(samples))
        key = self.options.score_key
        rewards = answer.get(key) if isinstance(answer, dict) else None
        if not isinstance(rewards, list) or len(rewards) != len(samples):
            got = f"{len(rewards)} scores" if isinstance(rewards, list) else f"{short(answer)}"
            raise RewardServerError(
                f"{self.options.url} answered {got} for {len(samples)} queries; the protocol wants an object "
                f"whose {key!r} holds one number (or null) per query."
            )
        return [_number_or_failure(value, self.options.url) for value in rewards]

    def _post(self, payload: dict[str, Any]) -> Any:
        """POST ``payload`` under the reward's deadline, retries and reply cap; the decoded JSON answer."""
        options = self.options
        service = JsonService(
            options.url, options.retries, options.backoff_s, options.max_reply_bytes, options.token_env
        )
        return service.post(payload, options.timeout_s)


def _number_or_failure(value: Any, url: str) -> Any:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    return RewardServerError(f"{url} answered {short(value)} for a query; scores must be numbers or null")
