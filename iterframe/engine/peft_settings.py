"""The ``peft:`` section of a run config (``--peft lora``): which adapters to train, and how to export them."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["PEFT_METHODS", "PeftSettings"]

#: Adapter methods ``--peft`` accepts.
PEFT_METHODS = ("lora",)


@dataclasses.dataclass
class PeftSettings:
    """LoRA adapters: only they train; checkpoints and ``final/`` hold them (``final/merged/`` on request)."""

    method: str = dataclasses.field(metadata={"help": "Adapter method: lora."})
    r: int = dataclasses.field(default=8, metadata={"help": "Adapter rank (>= 1)."})
    alpha: int = dataclasses.field(default=16, metadata={"help": "LoRA scaling numerator, lora_alpha (>= 1)."})
    dropout: float = dataclasses.field(default=0.05, metadata={"help": "Dropout on the adapter input, in [0, 1)."})
    target_modules: list[str] = dataclasses.field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Module names to adapt (e.g. q_proj,v_proj), or all-linear."},
    )
    merge_final: bool = dataclasses.field(
        default=False, metadata={"help": "Also write final/merged/: the base weights with the adapters merged in."}
    )

    def __post_init__(self):
        # Module names hold no comma, so ``q_proj,v_proj`` (one string from the command line) names two modules.
        self.target_modules = [
            name.strip() for item in self.target_modules for name in str(item).split(",") if name.strip()
        ]
        if self.method not in PEFT_METHODS:
            raise ValueError(f"method {self.method!r} is not supported; use one of: {', '.join(PEFT_METHODS)}.")
        if self.r < 1:
            raise ValueError(f"r={self.r} must be a positive integer (the adapter rank), e.g. peft.r=8.")
        if self.alpha < 1:
            raise ValueError(f"alpha={self.alpha} must be a positive integer, e.g. peft.alpha=16.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1), e.g. peft.dropout=0.05.")
        if not self.target_modules:
            raise ValueError("target_modules is empty; name modules (e.g. q_proj,v_proj) or use all-linear.")
        if "all-linear" in self.target_modules and len(self.target_modules) > 1:
            raise ValueError("target_modules: all-linear stands alone; do not list module names with it.")

    def lora_config(self, is_encoder_decoder: bool):
        """The ``peft.LoraConfig`` these settings describe."""
        from iterframe.engine.adapters import build_lora_config

        target_modules = "all-linear" if self.target_modules == ["all-linear"] else list(self.target_modules)
        return build_lora_config(
            r=self.r,
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=target_modules,
            is_encoder_decoder=is_encoder_decoder,
        )

    def to_config(self) -> dict[str, Any]:
        """The YAML form of the ``peft:`` section."""
        return dataclasses.asdict(self)
