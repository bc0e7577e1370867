"""The ``vllm`` generator: K completions per prompt from a vLLM engine that holds the trainer's current weights.

Lifecycle: ``setup`` starts the engine once (or joins the one its greedy twin started) and pushes the current
weights into it; ``generate`` sends token-id prompts with ``SamplingParams(n=K, ...)``; ``update_weights`` pushes
the trainer's new weights into the running engine in place; ``close`` stops the engine when its last user closes.
Every process of a run calls ``setup``, ``generate`` and ``update_weights`` together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable
from typing import Any, Optional

from iterframe.builtin.generators import check_num_samples, cut_at_stop
from iterframe.generation.prompt_encoding import encode_prompt
from iterframe.generation.token_ids import eos_token_ids, ids_spelling, tokenizer_fingerprint
from iterframe.plugins.components import Completion, Generator, Prompt, RunContext

from .engine import (
    EngineHandle,
    SharedEngines,
    check_vllm_installed,
    create_engine,
    engine_kwargs,
    engine_model_source,
    engine_seed,
    launch_environment,
    require_vllm,
    sampling_params_kwargs,
    stop_engine,
)
from .options import VLLMOptions
from .placement import ProcessLayout, hosts_engine, make_generation_group, split_by_counts

__all__ = ["VLLMGenerator"]

#: Engines of this process, shared between generators with the same trainer and engine options.
SHARED_ENGINES = SharedEngines()

#: vLLM finish reasons that mean the same as iterframe's; others (e.g. "abort") are reported as unknown.
FINISH_REASONS = {"stop": "stop", "length": "length"}


def _vllm_sampling_params(**kwargs):
    return require_vllm().SamplingParams(**kwargs)


class VLLMGenerator(Generator):
    """Samples K completions per prompt with vLLM; the trainer's weights are pushed into the engine after each
    step.

    Args:
        options: :class:`~iterframe_vllm.options.VLLMOptions`.
        engine_factory: builds the engine from ``vllm.LLM`` keyword arguments (default ``vllm.LLM``).
        sampling_params_factory: builds sampling parameters from keyword arguments (default
            ``vllm.SamplingParams``).

    Raises:
        VLLMNotInstalledError: vLLM is needed (no ``engine_factory`` given) but not installed.
    """

    name = "vllm"
    description = (
        "Sample K completions per prompt with vLLM; the trainer's weights are pushed into the engine in place "
        "after every step."
    )
    Options = VLLMOptions

    def __init__(
        self,
        options: Optional[VLLMOptions] = None,
        *,
        engine_factory: Optional[Callable[..., Any]] = None,
        sampling_params_factory: Optional[Callable[..., Any]] = None,
    ):
        super().__init__(options)
        if engine_factory is None:
            check_vllm_installed()
        self.engine_factory = engine_factory or create_engine
        self.sampling_params_factory = sampling_params_factory or _vllm_sampling_params
        self.handle: Optional[EngineHandle] = None

    def eval_copy(self) -> VLLMGenerator:
        """A copy that decodes greedily (``do_sample=False``), sharing this generator's engine."""
        return self.with_options(dataclasses.replace(self.options, do_sample=False))

    # --- lifecycle ------------------------------------------------------------------------------------------

    def setup(self, context: RunContext) -> None:
        if context.trainer is None or context.tokenizer is None:
            raise ValueError(
                "The vllm generator needs the run's trainer and tokenizer (context.trainer, context.tokenizer): "
                "its engine is built from the trainer's model and receives the trainer's weights after every step."
            )
        self.context = context
        self.tokenizer = context.tokenizer
        self.layout = ProcessLayout.of_trainer(context.trainer)
        self.engine_key = (id(context.trainer), self.options.engine_settings())
        self.seed = engine_seed(self.options, context.seed, self.layout)
        self.calls = 0
        self.handle = SHARED_ENGINES.acquire(self.engine_key, self._start_engine)

    def state_dict(self) -> dict:
        """The number of ``generate`` calls so far: a resumed run seeds its requests where the interrupted one
        stopped (``seed_requests``)."""
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state["calls"])

    def close(self) -> None:
        if self.handle is not None:
            self.handle = None
            SHARED_ENGINES.release(self.engine_key)

    def _start_engine(self) -> EngineHandle:
        """Start this process's engine (if it hosts one) and push the current weights into it."""
        group = make_generation_group(self.layout, self.options)
        handle = EngineHandle(engine=None, group=group, in_process=self.options.colocate)
        try:
            if hosts_engine(self.layout, self.options):
                handle.workdir = tempfile.mkdtemp(prefix="iterframe-vllm-")
                handle.engine = self._build_engine(handle.workdir)
            self._push(handle, self.context.model)
        except BaseException:
            stop_engine(handle)
            raise
        return handle

    def _build_engine(self, workdir: str):
        model_dir, load_format = engine_model_source(self.context.model, workdir)
        tokenizer_dir = os.path.join(workdir, "tokenizer")
        self.tokenizer.save_pretrained(tokenizer_dir)
        kwargs = engine_kwargs(
            self.options,
            model_dir=model_dir,
            tokenizer_dir=tokenizer_dir,
            load_format=load_format,
            seed=self.seed,
        )
        with launch_environment(self.options, self.layout):
            return self.engine_factory(**kwargs)

    # --- weights --------------------------------------------------------------------------------------------

    def update_weights(self, model) -> None:
        """Push ``model``'s current weights into the running engine (every process calls this together)."""
        if self.handle is None:
            raise RuntimeError("The vllm generator is not set up: call setup(context) before update_weights().")
        self._push(self.handle, model)

    def _push(self, handle: EngineHandle, model) -> None:
        from .weight_sync import push_weights  # torch: only when weights move, not when plugins are listed
        from .weights import full_weights, sync_source

        weights = full_weights(sync_source(model, self.context.trainer))
        if handle.engine is None:  # a process without an engine still takes part in the gathers
            for _ in weights:
                pass
            return
        push_weights(
            handle.engine,
            weights,
            in_process=handle.in_process,
            bucket_bytes=self.options.sync_bucket_mb * 2**20,
        )

    # --- generation -----------------------------------------------------------------------------------------

    def generate(self, prompts: list[Prompt], num_samples: int) -> list[list[Completion]]:
        if self.handle is None:
            raise RuntimeError("The vllm generator is not set up: call setup(context) before generate().")
        check_num_samples(self.name, num_samples, self.options.do_sample)
        encoded = [
            encode_prompt(self.tokenizer, prompt, f"prompt {index}") for index, prompt in enumerate(prompts)
        ]
        group = self.handle.group
        encoded_by_member = group.gather(encoded)
        all_encoded = [ids for member_prompts in encoded_by_member for ids in member_prompts]
        call, self.calls = self.calls, self.calls + 1
        completions = None
        if self.handle.engine is not None:
            completions = self._generate_on_engine(all_encoded, num_samples, call)
        if not self.options.colocate:
            completions = group.broadcast_from_first(completions)
        counts = [len(member_prompts) for member_prompts in encoded_by_member]
        return split_by_counts(completions, counts)[group.index]

    def _stop_token_ids(self) -> list[int]:
        """The eos ids of the model's generation config (end-of-turn tokens too) and the tokenizer's."""
        return list(eos_token_ids(self.context.model, self.tokenizer))

    def _generate_on_engine(self, encoded: list[list[int]], num_samples: int, call: int) -> list[list[Completion]]:
        if not encoded:
            return []
        kwargs = sampling_params_kwargs(self.options, num_samples, self._stop_token_ids())
        if self.options.do_sample and self.options.seed_requests:
            sampling_params = [
                self.sampling_params_factory(**kwargs, seed=request_seed(self.seed, call, index))
                for index in range(len(encoded))
            ]
        else:
            sampling_params = self.sampling_params_factory(**kwargs)
        outputs = self.handle.engine.generate(
            [{"prompt_token_ids": ids} for ids in encoded], sampling_params, use_tqdm=False
        )
        if len(outputs) != len(encoded):
            raise RuntimeError(f"vLLM returned {len(outputs)} results for {len(encoded)} prompts.")
        return [self._completions(output, num_samples, ids) for output, ids in zip(outputs, encoded)]

    def _completions(self, request_output, num_samples: int, prompt_ids: list[int]) -> list[Completion]:
        samples = sorted(request_output.outputs, key=lambda sample: sample.index)
        if len(samples) != num_samples:
            raise RuntimeError(
                f"vLLM returned {len(samples)} completions of a prompt; {num_samples} were asked for."
            )
        return [self._completion(sample, prompt_ids) for sample in samples]

    def _completion(self, sample, prompt_ids: list[int]) -> Completion:
        token_ids = [int(token) for token in sample.token_ids]
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        text, hit_stop = cut_at_stop(text, self.options.stop)
        return Completion(
            text=text,
            num_tokens=len(token_ids),
            finish_reason=FINISH_REASONS.get(sample.finish_reason),
            token_ids=ids_spelling(self.tokenizer, token_ids, text) if hit_stop else token_ids,
            prompt_token_ids=list(prompt_ids),
            tokenizer_hash=tokenizer_fingerprint(self.tokenizer),
        )


def request_seed(seed: int, call: int, index: int) -> int:
    """The seed of prompt ``index``'s request in ``generate`` call ``call``: a 63-bit hash of the three, so each
    prompt of each call samples from its own stream, and a resumed run (the call count restored) from the same
    one as the uninterrupted run."""
    digest = hashlib.sha256(f"{seed}:{call}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
