"""The training engine: :class:`IterativeSFTTrainer` and its config, micro-batching, padding-free packing,
LoRA adapters and model cards. It knows nothing of the loop, the plugins or the command line."""
