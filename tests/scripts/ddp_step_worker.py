"""Worker for tests/test_trainer_ddp.py: one SGD update on this rank's share of samples; weights saved."""

import sys

import torch
from engine_step_worker import leave_and_exit

from iterframe import IterativeSFTConfig, IterativeSFTTrainer

TEXTS = ["hello world", "abc", "the quick brown fox jumps over", "x y", "one two three four five six", "q"]


def main(model_path: str, output_path: str, batch_size: int, split: str) -> None:
    args = IterativeSFTConfig(
        output_dir=output_path + ".out",
        report_to="none",
        per_device_train_batch_size=batch_size,
        save_strategy="no",
        max_grad_norm=0.0,
    )
    trainer = IterativeSFTTrainer(model_path, args=args)
    trainer.optimizer = trainer.accelerator.prepare(torch.optim.SGD(trainer.model.parameters(), lr=1.0))
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    if split == "uneven" and world == 2:
        share = TEXTS[:5] if rank == 0 else TEXTS[5:]
    else:
        share = TEXTS[rank::world]
    stats = trainer.step(texts=share)
    print(f"rank={rank} world={world} updates={stats['num_updates']} step={stats['global_step']}", flush=True)
    torch.save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, f"{output_path}.rank{rank}")
    if rank == 0:
        torch.save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, output_path)
    leave_and_exit()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
