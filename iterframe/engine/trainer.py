"""``IterativeSFTTrainer``: supervised fine-tuning one ``step()`` at a time, on data made between steps."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import Any, Optional, Union

import torch
from transformers import (
    DefaultFlowCallback,
    PreTrainedModel,
    ProgressCallback,
    Trainer,
    TrainerState,
    TrainingArguments,
    get_constant_schedule_with_warmup,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from iterframe.engine import batching, optimizer_state, packing_support, schedule, step_inputs
from iterframe.engine.adapters import check_adapters, wrap_with_adapters
from iterframe.engine.checkpointing import enable_activation_checkpointing
from iterframe.engine.config import IterativeSFTConfig
from iterframe.engine.cpu_threads import use_one_thread_for_tiny_models
from iterframe.engine.loading import (
    absolute_if_local,
    empty_device_cache,
    forward_deprecated_kwargs,
    join_process_group,
    load_model,
    load_tokenizer,
    pad_token_id,
    resolve_args,
)
from iterframe.engine.mapped_weights import own_trainable_weights
from iterframe.engine.model_card import write_model_card
from iterframe.engine.model_support import vocab_size
from iterframe.engine.updates import MicroBatchUpdates

__all__ = ["IterativeSFTTrainer"]


class IterativeSFTTrainer(MicroBatchUpdates, Trainer):
    """Trains a causal or encoder-decoder language model one ``step()`` at a time.

    Args:
        model: a model id or local directory (loaded with ``args.model_init_kwargs``), or a ``PreTrainedModel``.
        args: an :class:`IterativeSFTConfig`; a plain ``TrainingArguments`` is converted; ``None`` makes a default
            one whose ``output_dir`` is named after the model.
        data_collator: collator for ``eval_dataset`` (``step()`` collates its own inputs).
        eval_dataset: tokenized evaluation data (``input_ids`` [+ ``attention_mask``] [+ ``labels``]).
        processing_class: the tokenizer; ``None`` loads it from the model's id or path. A tokenizer without a pad
            token pads with its eos token.
        optimizers: ``(optimizer, lr_scheduler)``; ``None`` entries are created from ``args``.
        preprocess_logits_for_metrics, compute_metrics: as in ``transformers.Trainer`` (evaluation only).
        max_length, truncation_mode, optimize_device_cache: deprecated; set them in ``args``.
        peft_config: a ``peft.PeftConfig`` (e.g. ``LoraConfig``): the model is wrapped so that only the adapters
            train, and checkpoints hold the adapters. A ``PeftModel`` may also be passed as ``model`` directly.
    """

    _tag_names = ["iterframe", "iterative-sft"]

    def __init__(
        self,
        model: Union[str, PreTrainedModel],
        args: Optional[Union[IterativeSFTConfig, TrainingArguments]] = None,
        data_collator: Optional[Callable] = None,
        eval_dataset=None,
        processing_class=None,
        optimizers: tuple = (None, None),
        preprocess_logits_for_metrics: Optional[Callable] = None,
        compute_metrics: Optional[Callable] = None,
        max_length: Optional[int] = None,
        truncation_mode: Optional[str] = None,
        optimize_device_cache: Optional[bool] = None,
        peft_config=None,
    ):
        model = absolute_if_local(model) if isinstance(model, str) else model
        model_id = model if isinstance(model, str) else getattr(model.config, "_name_or_path", None)
        args = resolve_args(args, model_id)
        forward_deprecated_kwargs(
            args,
            max_length=max_length,
            truncation_mode=truncation_mode,
            optimize_device_cache=optimize_device_cache,
        )
        if isinstance(model, str):
            join_process_group(args)
            model = load_model(model, args.model_init_kwargs or {})
        elif args.model_init_kwargs:
            warnings.warn(
                "model_init_kwargs is set in the config but the model is already instantiated; it is ignored.",
                UserWarning,
                stacklevel=2,
            )
        if peft_config is not None:
            set_seed(args.seed)  # the adapters' random initial weights follow the run's seed, as in train()
            model = wrap_with_adapters(model, peft_config)
        check_adapters(model)
        if processing_class is None:
            if not model_id:
                raise ValueError("processing_class is required when the model has no id or path to load it from.")
            processing_class = load_tokenizer(model_id, args.model_init_kwargs)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token

        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        self.base_model_id = model_id
        if data_collator is None:
            pad_id = pad_token_id(tokenizer)

            def data_collator(features):
                return batching.collate_features(features, pad_id, is_encoder_decoder=self.is_encoder_decoder)

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            compute_metrics=compute_metrics,
        )
        self.remove_callback(DefaultFlowCallback)  # step() decides log/eval/save itself (see _after_update)
        self.remove_callback(ProgressCallback)  # the caller of step() owns progress display
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)
        enable_activation_checkpointing(self.model, self.args)  # train() would; step() is called instead
        schedule.require_horizon(self.args)
        own_trainable_weights(self.model)  # the first update would copy them page by page
        self.create_optimizer_and_scheduler(num_training_steps=max(self.args.max_steps, 0))
        self.model_wrapped, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.state = TrainerState(
            is_local_process_zero=self.is_local_process_zero(),
            is_world_process_zero=self.is_world_process_zero(),
            stateful_callbacks=[
                cb for cb in self.callback_handler.callbacks + [self.control] if hasattr(cb, "state")
            ],
        )
        self.state.max_steps = max(self.args.max_steps, 0)
        self.padding_free = packing_support.resolve_padding_free(
            self.model, self.args.padding_free, self.args.pad_to_multiple_of
        )
        self._packing_costs = (
            packing_support.PackingCostModel(self.model, head_at_labels=self._label_logits_transform() is not None)
            if self.padding_free
            else None
        )
        self._padding_mask = not packing_support.ignores_right_padding(self.model)
        use_one_thread_for_tiny_models(self.model, self.accelerator.device)
        self._pending_logs = {"loss_sum": 0.0, "tokens": 0}
        self._train_begun = False

    # --- optimizer / scheduler ------------------------------------------------------------------------------

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """``lr_scheduler_type`` over ``max_steps`` updates; constant after warmup when ``max_steps`` is -1."""
        if self.lr_scheduler is None and self.args.max_steps <= 0:
            optimizer = optimizer if optimizer is not None else self.optimizer
            warmup = self.args.get_warmup_steps(0) if self.args.warmup_steps else 0
            self.lr_scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=warmup)
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps=num_training_steps, optimizer=optimizer)

    # --- step -----------------------------------------------------------------------------------------------

    def step(
        self,
        input_ids=None,
        attention_mask=None,
        labels=None,
        texts: Optional[list[str]] = None,
        texts_labels: Optional[list[str]] = None,
    ) -> dict[str, Any]:
        """Train once on every given sample, in micro-batches (see ``group_by_length``); return the statistics.

        Give either tensors (``input_ids`` [+ ``attention_mask``] [+ ``labels``]) or strings (``texts``
        [+ ``texts_labels``]). Inputs are validated before anything changes. Returns a dict with ``loss``
        (token-weighted mean), ``learning_rate``, ``grad_norm``, ``num_samples``, ``num_tokens`` (label tokens
        trained), ``num_updates``, ``global_step``, ``tokens_per_second`` and ``padding_fraction``.
        """
        start = time.perf_counter()
        samples = self._prepare_samples(input_ids, attention_mask, labels, texts, texts_labels)
        micro_batches = self._micro_batches(samples)
        stats = self._train_micro_batches(micro_batches)
        elapsed = max(time.perf_counter() - start, 1e-9)
        if self.args.optimize_device_cache:
            empty_device_cache()
        input_tokens = sum(batch.num_input_tokens for batch in micro_batches)
        padded_tokens = sum(batch.input_ids.numel() for batch in micro_batches)
        stats.update(
            num_samples=len(samples),
            global_step=self.state.global_step,
            tokens_per_second=stats["num_tokens"] / elapsed,
            input_tokens_per_second=input_tokens / elapsed,
            num_input_tokens=input_tokens,
            padding_fraction=1.0 - input_tokens / padded_tokens,
        )
        return stats

    def _prepare_samples(self, input_ids, attention_mask, labels, texts, texts_labels):
        tensors_given = any(value is not None for value in (input_ids, attention_mask, labels))
        if texts is None and texts_labels is not None:
            raise ValueError("texts_labels was given without texts; pass texts=[...] as well.")
        if texts is not None:
            if tensors_given:
                warnings.warn(
                    "Both tensors and texts were passed to step(); the texts are used and the tensors ignored.",
                    UserWarning,
                    stacklevel=3,
                )
            samples = step_inputs.samples_from_texts(
                self.processing_class, texts, texts_labels, is_encoder_decoder=self.is_encoder_decoder
            )
        elif input_ids is not None:
            samples = step_inputs.samples_from_tensors(
                input_ids,
                attention_mask,
                labels,
                is_encoder_decoder=self.is_encoder_decoder,
                vocab_size=vocab_size(self.model),
            )
        elif tensors_given:
            raise ValueError("step() got attention_mask or labels without input_ids; pass input_ids as well.")
        else:
            raise ValueError("step() needs inputs: pass input_ids=[...] (token ids) or texts=[...] (strings).")
        return step_inputs.truncate(samples, self.args.max_length, self.args.truncation_mode)

    def _micro_batches(self, samples):
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        return batching.build_micro_batches(
            samples,
            self.args.per_device_train_batch_size,
            pad_token_id(tokenizer),
            is_encoder_decoder=self.is_encoder_decoder,
            pad_to_multiple_of=self.args.pad_to_multiple_of,
            generator=torch.Generator().manual_seed(self.args.seed + self.state.global_step),
            packed=self.padding_free and (bool(self.args.padding_free) or self._packing_costs),
            group_by_length=self.args.group_by_length,
        )

    # --- checkpoints ----------------------------------------------------------------------------------------

    def save_checkpoint(self) -> str:
        """Write ``checkpoint-<global_step>`` (weights, tokenizer, optimizer, scheduler, RNG, state, model card).

        Honours ``save_total_limit``. Returns the checkpoint's path.
        """
        self._save_checkpoint(self.model, trial=None)
        path = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
        if self.args.should_save:
            self.create_model_card(output_dir=path)
        return path

    def load_checkpoint(self, path: Optional[str] = None) -> str:
        """Restore weights, optimizer, scheduler, RNG and trainer state from a checkpoint folder.

        Args:
            path: a ``checkpoint-N`` folder; ``None`` takes the newest one in ``output_dir``.
        """
        path = path or get_last_checkpoint(self.args.output_dir)
        if path is None or not os.path.isdir(path):
            raise FileNotFoundError(f"No checkpoint to resume from in {self.args.output_dir!r}.")
        self._load_from_checkpoint(path)
        optimizer_state.load(self, path)
        self._load_rng_state(path)
        self.state = TrainerState.load_from_json(os.path.join(path, "trainer_state.json"))
        # the file was written by the main process: which process this is comes from here, not from it
        self.state.is_local_process_zero = self.is_local_process_zero()
        self.state.is_world_process_zero = self.is_world_process_zero()
        return path

    # --- model card -----------------------------------------------------------------------------------------

    def create_model_card(
        self,
        model_name: Optional[str] = None,
        dataset_name: Optional[str] = None,
        tags: Union[str, list[str], None] = None,
        output_dir: Optional[str] = None,
    ) -> str:
        """Write ``README.md`` (a Hugging Face model card) into ``output_dir`` and return its path.

        Args:
            model_name: name of the trained model (default: the output directory's name).
            dataset_name: name of the dataset used for training.
            tags: extra tags; ``iterframe`` and ``iterative-sft`` are always present.
            output_dir: where to write it (default: ``args.output_dir``).
        """
        output_dir = output_dir or self.args.output_dir
        extra_tags = [tags] if isinstance(tags, str) else list(tags or [])
        return write_model_card(
            output_dir,
            base_model=self.base_model_id,
            model_name=model_name or os.path.basename(os.path.abspath(output_dir)),
            dataset_name=dataset_name,
            tags=list(dict.fromkeys(self._tag_names + extra_tags)),
            global_step=self.state.global_step,
        )
