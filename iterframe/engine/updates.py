"""The optimizer updates of ``step()``: micro-batches grouped into accumulated updates, each one's loss, backward,
clipping, optimizer and scheduler step, and what follows an update (callbacks, logs, evaluation, checkpoints)."""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Optional

import torch

from iterframe.engine import batching, label_logits, packing, schedule
from iterframe.engine.clipping import clip_grad_norm
from iterframe.engine.loss import summed_token_loss
from iterframe.engine.process_sync import accumulating, backward, equalized_across_processes, global_sum

__all__ = ["MicroBatchUpdates"]


class MicroBatchUpdates:
    """The part of :class:`~iterframe.engine.trainer.IterativeSFTTrainer` that trains on built micro-batches
    (a mixin of a ``transformers.Trainer``)."""

    def _loss_sum(self, batch: batching.MicroBatch) -> torch.Tensor:
        return summed_token_loss(
            self.model_wrapped,
            batch,
            is_encoder_decoder=self.is_encoder_decoder,
            padding_mask=self._padding_mask,
            head_transform=self._label_logits_transform(),
        )

    def _label_logits_transform(self):
        """What :func:`~iterframe.engine.label_logits.logit_transform` gives for the model (its head then runs
        only at label positions), decided once; ``None`` under FSDP and DeepSpeed, whose head weights are
        gathered only inside the model's forward."""
        if "_head_transform" not in self.__dict__:
            sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
            self._head_transform = None if sharded else label_logits.logit_transform(self.model)
        return self._head_transform

    def _train_micro_batches(self, micro_batches: list[batching.MicroBatch]) -> dict[str, Any]:
        if not self._train_begun:
            self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)
            self._train_begun = True
        model = self.model_wrapped
        model.train()
        micro_batches = equalized_across_processes(self.accelerator, micro_batches)
        accumulation = max(1, self.args.gradient_accumulation_steps)
        position = getattr(self.lr_scheduler, "last_epoch", self.state.global_step)
        schedule.check_updates_left(self.args.max_steps, position, math.ceil(len(micro_batches) / accumulation))
        groups = [micro_batches[i : i + accumulation] for i in range(0, len(micro_batches), accumulation)]
        loss_sum, num_tokens, num_updates, grad_norm = 0.0, 0, 0, None
        for group in groups:
            group_tokens = global_sum(self.accelerator, sum(batch.num_loss_tokens for batch in group))
            if group_tokens == 0:
                warnings.warn(
                    "A group of micro-batches has no label tokens (all -100); it is skipped.", stacklevel=4
                )
                continue
            scale = self.accelerator.num_processes / group_tokens
            update_loss, update_tokens = 0.0, 0
            for position, batch in enumerate(group):
                batch = batch.to(self.accelerator.device)
                closes_update = position == len(group) - 1
                attention = (
                    packing.packed_attention(self.model, batch.segments)
                    if batch.segments is not None
                    else contextlib.nullcontext()
                )
                with accumulating(self.accelerator, model, closes_update), self.compute_loss_context_manager():
                    with attention:  # gradient checkpointing runs the forward again in backward
                        batch_loss = self._loss_sum(batch)
                        backward(self.accelerator, batch_loss * scale)
                update_loss += float(batch_loss.detach())
                update_tokens += batch.num_loss_tokens
            grad_norm = self._optimizer_update()
            loss_sum, num_tokens, num_updates = loss_sum + update_loss, num_tokens + update_tokens, num_updates + 1
            self._after_update(update_loss, update_tokens, grad_norm)
        return {
            "loss": loss_sum / num_tokens if num_tokens else math.nan,
            "learning_rate": self._get_learning_rate(),
            "grad_norm": grad_norm,
            "num_tokens": num_tokens,
            "num_updates": num_updates,
        }

    def _optimizer_update(self) -> Optional[float]:
        grad_norm = None
        if self.args.max_grad_norm is not None and self.args.max_grad_norm > 0:
            # under DeepSpeed the engine has clipped already; accelerate hands back its norm (or None)
            norm = clip_grad_norm(self.accelerator, self.model_wrapped.parameters(), self.args.max_grad_norm)
            grad_norm = None if norm is None else float(norm.item() if hasattr(norm, "item") else norm)
        self.control = self.callback_handler.on_pre_optimizer_step(self.args, self.state, self.control)
        self.optimizer.step()
        self.control = self.callback_handler.on_optimizer_step(self.args, self.state, self.control)
        if not self.accelerator.optimizer_step_was_skipped:  # fp16: the grad scaler found inf/nan and skipped it
            self.lr_scheduler.step()
        self.optimizer.zero_grad()  # the optimizer's own default (None), so that a patched zero_grad decides
        self.state.global_step += 1
        return grad_norm

    def _after_update(self, update_loss: float, update_tokens: int, grad_norm: Optional[float]) -> None:
        """Log, evaluate and save as ``logging_steps``, ``eval_steps`` and ``save_steps`` ask."""
        pending = self._pending_logs
        pending["loss_sum"] += update_loss
        pending["tokens"] += update_tokens
        self.control = self.callback_handler.on_step_end(self.args, self.state, self.control)
        control, args = self.control, self.args
        control.should_log |= self._due(args.logging_strategy, args.logging_steps) or (
            self.state.global_step == 1 and args.logging_first_step
        )
        control.should_evaluate |= self._due(args.eval_strategy, args.eval_steps or args.logging_steps)
        control.should_save |= self._due(args.save_strategy, args.save_steps)
        if self.control.should_log:
            self.control.should_log = False
            loss = pending["loss_sum"] / pending["tokens"] if pending["tokens"] else math.nan
            self.log({"loss": round(loss, 6), "grad_norm": grad_norm, "learning_rate": self._get_learning_rate()})
            pending["loss_sum"], pending["tokens"] = 0.0, 0
        if self.control.should_evaluate:
            self.control.should_evaluate = False
            if self.eval_dataset is not None:
                self.evaluate()
        if self.control.should_save:
            self.control.should_save = False
            self.save_checkpoint()

    def _due(self, strategy, interval) -> bool:
        """Whether an ``*_strategy="steps"`` action with ``*_steps=interval`` is due at this update."""
        if str(getattr(strategy, "value", strategy)) != "steps" or not interval:
            return False
        if interval < 1:  # a ratio of max_steps, as in TrainingArguments
            interval = max(1, math.ceil(interval * max(self.args.max_steps, 1)))
        return self.state.global_step % int(interval) == 0

    def _get_learning_rate(self) -> float:
        return float(self.lr_scheduler.get_last_lr()[0])
