"""The ``iterframe run`` flags that set config keys: one row each, naming the key it sets and the default.

The command line builds its click options from :data:`FLAGS`, so adding a flag is one row here (and a line of
``docs/cli.md``); :func:`apply_flags` sets each given flag's key through the schema like ``--set`` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

from iterframe.run_config.schema import assign, copy_draft

__all__ = ["FLAGS", "Flag", "apply_flags", "flag_by_dest"]


@dataclasses.dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one config key.

    Args:
        options: the flag's spellings, main one first (``("--sample-tokenizer", "--tokenizer")``).
        dest: its parameter name (what :func:`apply_flags` takes).
        key: the dotted config key it sets (``train.learning_rate``); a repeatable flag sets a list key.
        help: one line for ``--help``.
        type: ``str``, ``int``, ``float`` or ``bool`` (an on/off flag).
        metavar: the value's placeholder in ``--help``.
        minimum: the smallest value an ``int``/``float`` flag accepts.
        multiple: repeatable (``--filter A --filter B``).
        choices: the values it accepts, when they are few.
        default: the value a run gets without the flag; ``None`` when there is none.
        default_text: how ``--help`` states a default that depends on the run (overrides ``default``).
    """

    options: tuple[str, ...]
    dest: str
    key: str
    help: str
    type: type = str
    metavar: Optional[str] = None
    minimum: Optional[float] = None
    multiple: bool = False
    choices: tuple[str, ...] = ()
    default: Any = None
    default_text: Optional[str] = None

    @property
    def shown_default(self) -> Optional[str]:
        """The default as ``--help`` shows it (``none`` when a run has none)."""
        if self.default_text is not None:
            return self.default_text
        return "none" if self.default is None else str(self.default)


def _flag(option: str, key: str, help: str, **details) -> Flag:
    dest = details.pop("dest", option.lstrip("-").replace("-", "_"))
    aliases = details.pop("aliases", ())
    return Flag(options=(option, *aliases), dest=dest, key=key, help=help, **details)


FLAGS: tuple[Flag, ...] = (
    _flag("--model", "model", "Model folder, .gguf file or Hub id to fine-tune.", metavar="PATH_OR_ID",
          default_text="required"),
    _flag(
        "--model-init-kwargs",
        "model_init_kwargs",
        'Keyword arguments for from_pretrained, as a JSON object, e.g. \'{"dtype": "float32"}\'.',
        metavar="JSON",
    ),
    _flag(
        "--dataset",
        "dataset.path",
        "Prompts: a .json/.jsonl/.csv/.parquet file, a save_to_disk folder, or a Hub id.",
        metavar="PATH_OR_ID",
        default_text="required",
    ),
    _flag("--prompt-column", "dataset.prompt_column", "Column holding the prompts (text or chat messages).",
          metavar="NAME", default="prompt"),
    _flag("--reference-column", "dataset.reference_column", "Column holding reference answers for the reward.",
          metavar="NAME", default_text="reference, if the dataset has it"),
    _flag("--split", "dataset.split", "Dataset split to train on.", metavar="NAME", default="train"),
    _flag("--eval-split", "dataset.eval_split", "Dataset split holding the eval prompts.", metavar="NAME"),
    _flag("--eval-dataset", "dataset.eval_dataset", "Separate file, folder or Hub id of eval prompts.",
          metavar="PATH_OR_ID"),
    _flag("--eval-fraction", "dataset.eval_fraction", "Hold out this fraction of the prompts for eval.",
          type=float, metavar="F"),
    _flag("--generator", "generator", "Generator component.", metavar="NAME", default="hf"),
    _flag("--reward", "reward", "Reward component, e.g. answer-match, math-verify, trl:module:function.",
          metavar="NAME", default_text="required"),
    _flag("--filter", "filters", "Filter component; repeat for a chain.", metavar="NAME", multiple=True,
          dest="filters", default_text="none: train on every sample"),
    _flag("--sample-tokenizer", "sample_tokenizer", "Sample tokenizer: kept samples -> training inputs.",
          metavar="NAME", aliases=("--tokenizer",), default_text="chat for chat prompts, else completion-only"),
    _flag("--logger", "loggers", "Logger component; repeat for several.", metavar="NAME", multiple=True,
          dest="loggers", default="console"),
    _flag(
        "--peft",
        "peft.method",
        "Train adapters instead of the full model; options via --set peft.r=8, peft.alpha=16, peft.dropout, "
        "peft.target_modules=q_proj,v_proj, peft.merge_final=true.",
        choices=("lora",),
        default_text="none: train the full model",
    ),
    _flag("--iterations", "loop.iterations", "Iterations to run.", type=int, metavar="N", minimum=1, default=5),
    _flag("--prompts-per-iteration", "loop.prompts_per_iteration", "Prompts drawn per iteration.", type=int,
          metavar="N", minimum=1, default=16),
    _flag("--samples-per-prompt", "loop.samples_per_prompt", "Completions generated per prompt.", type=int,
          metavar="K", minimum=1, default=4),
    _flag("--train-from", "loop.train_from",
          "Train on the kept samples of a recorded set (an `iterframe rescore` or `iterframe run` output "
          "directory) instead of generating: iteration i takes the set's i-th iteration.", metavar="RUN_DIR",
          default_text="none: generate"),
    _flag("--eval-every", "loop.eval_every", "Evaluate every N iterations and after the last (0: never).",
          type=int, metavar="N", minimum=0, default=1),
    _flag("--seed", "loop.seed", "Seed of prompt order, sampling, eval hold-out and training.", type=int,
          metavar="N", default=0),
    _flag("--learning-rate", "train.learning_rate", "Learning rate (train.learning_rate).", type=float,
          metavar="LR", default=5e-05),
    _flag("--batch-size", "train.per_device_train_batch_size",
          "Training samples per device and step (train.per_device_train_batch_size).", type=int, metavar="N",
          minimum=1, default=8),
    _flag("--max-length", "train.max_length", "Longest training sequence in tokens; longer ones are truncated.",
          type=int, metavar="N", minimum=1, default_text="none: no truncation"),
    _flag("--max-new-tokens", "generator.max_new_tokens", "Most tokens generated per completion.", type=int,
          metavar="N", minimum=1, default=64, default_text="64 (hf generator)"),
    _flag("--temperature", "generator.temperature", "Sampling temperature of the generator (> 0).", type=float,
          metavar="T", default=1.0, default_text="1.0 (hf generator)"),
    _flag("--output-dir", "output_dir", "Where the run writes metrics, samples and checkpoints.", metavar="DIR",
          default_text="required"),
    _flag("--quiet", "loop.quiet", "Errors and the closing summary only: no progress bars, no per-iteration "
          "lines.", type=bool, aliases=("-q",), default=False),
    _flag("--verbose", "loop.verbose", "Every metric of each iteration as a table, and iterframe's info messages.",
          type=bool, aliases=("-v",), default=False),
)  # fmt: skip


def flag_by_dest(dest: str) -> Flag:
    """The flag whose parameter is ``dest`` (``"tokenizer"`` is the old name of ``sample_tokenizer``)."""
    dest = {"tokenizer": "sample_tokenizer"}.get(dest, dest)
    for flag in FLAGS:
        if flag.dest == dest:
            return flag
    raise TypeError(f"apply_flags() got an unknown flag {dest!r}.")


def apply_flags(config: Mapping[str, Any], **flags: Any) -> dict[str, Any]:
    """Return a copy of ``config`` with command-line flags applied (``None``, ``False`` or an empty tuple means
    "not given"). A component flag replaces the configured component(s); a component named again keeps the
    options the config gave it."""
    draft = copy_draft(config)
    for dest, value in flags.items():
        flag = flag_by_dest(dest)
        if value is None or value == () or (flag.type is bool and value is False):
            continue
        assign(draft, flag.key, list(value) if flag.multiple else value, flag.options[0])
    return draft
