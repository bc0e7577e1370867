"""The demo model: a tiny character-level Llama built from ``model_config.json``, cached after the first build.

The freshly initialised model gets a short *format warm-up*: supervised steps on ``"a+b="`` prompts whose
answers are random numbers. It learns the answer format (one or two digits, then stop) but no arithmetic, so
its samples are right only by chance (about one in nineteen) and the verifier's signal is what teaches it to
add.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import tempfile
from typing import Any

from iterframe import __version__
from iterframe.engine.file_modes import folder_built_in_place
from iterframe.engine.progress_bars import without_transformers_progress_bars

__all__ = ["MODEL_CONFIG_FILE", "build_demo_model", "demo_cache_dir", "demo_model_path", "load_model_config"]

MODEL_CONFIG_FILE = os.path.join(os.path.dirname(__file__), "model_config.json")
CACHE_ENV = "ITERFRAME_CACHE_DIR"
#: Files a finished build leaves; a cache folder without them is rebuilt.
_BUILT_MARKER = "demo_build.json"


def load_model_config() -> dict[str, Any]:
    """The shipped ``model_config.json``: alphabet, model sizes and format warm-up settings."""
    with open(MODEL_CONFIG_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def demo_cache_dir() -> str:
    """``$ITERFRAME_CACHE_DIR``, else ``$XDG_CACHE_HOME/iterframe``, else ``~/.cache/iterframe``."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "iterframe")


def _library_versions() -> dict[str, str]:
    """The versions the cached files depend on: transformers and tokenizers write the saved model and tokenizer
    (a tokenizer saved by transformers 5 does not load under 4.x), torch the weights' warm-up."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"iterframe": __version__}
    for name in ("transformers", "tokenizers", "torch"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover - all three are dependencies
            versions[name] = "missing"
    return versions


def demo_model_path(build: bool = True, quiet: bool = False) -> str:
    """The cached demo model's folder; the name hashes the config and the versions of iterframe, transformers,
    tokenizers and torch, so each combination gets its own build.

    Args:
        build: build the model there when it is not built yet (saying so on stderr unless ``quiet``).
        quiet: build without a word.
    """
    config = load_model_config()
    key = json.dumps([config, _library_versions()], sort_keys=True)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    path = os.path.join(demo_cache_dir(), f"demo-model-{digest}")
    if build and not os.path.isfile(os.path.join(path, _BUILT_MARKER)):
        if not quiet:
            print(f"Building the demo model into {path} (first run only) ...", file=sys.stderr, flush=True)
        build_demo_model(path, config)
    return path


def _warmup_batch(tokenizer, rng: random.Random, batch_size: int, max_operand: int):
    """Prompts ``a+b=`` with random answers in ``0..2*max_operand``; loss on answer + eos only."""
    input_ids, labels = [], []
    for _ in range(batch_size):
        a, b, answer = rng.randint(0, max_operand), rng.randint(0, max_operand), rng.randint(0, 2 * max_operand)
        prompt_ids = tokenizer(f"{a}+{b}=")["input_ids"]
        answer_ids = tokenizer(str(answer), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        input_ids.append(prompt_ids + answer_ids)
        labels.append([-100] * len(prompt_ids) + answer_ids)
    return input_ids, labels


def _format_warmup(model, tokenizer, settings: dict[str, Any]) -> float:
    """Train the answer format on random answers; return the last step's loss."""
    from iterframe.engine.config import IterativeSFTConfig
    from iterframe.engine.trainer import IterativeSFTTrainer

    rng = random.Random(settings["seed"])
    with tempfile.TemporaryDirectory() as scratch:
        args = IterativeSFTConfig(
            output_dir=scratch,
            learning_rate=settings["learning_rate"],
            per_device_train_batch_size=settings["batch_size"],
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            seed=settings["seed"],
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = IterativeSFTTrainer(model, args=args, processing_class=tokenizer)
        loss = float("nan")
        for _ in range(settings["steps"]):
            input_ids, labels = _warmup_batch(tokenizer, rng, settings["batch_size"], settings["max_operand"])
            loss = trainer.step(input_ids=input_ids, labels=labels)["loss"]
    return loss


def build_demo_model(path: str, config: dict[str, Any] | None = None) -> str:
    """Build the demo model and tokenizer into ``path`` (atomically: a temp folder renamed when complete).

    Args:
        path: destination folder (replaced if it exists).
        config: the model config; default the shipped ``model_config.json``.

    Returns:
        ``path``.
    """
    from iterframe.testing import build_char_tokenizer, build_tiny_causal_lm

    config = config or load_model_config()
    sizes = dict(config["model"])
    tokenizer = build_char_tokenizer(config["alphabet"])
    model, tokenizer = build_tiny_causal_lm(None, tokenizer, **sizes)
    final_loss = _format_warmup(model, tokenizer, config["format_warmup"])
    with folder_built_in_place(path) as temp_path:
        with without_transformers_progress_bars():
            model.save_pretrained(temp_path)
            tokenizer.save_pretrained(temp_path)
        with open(os.path.join(temp_path, _BUILT_MARKER), "w", encoding="utf-8") as handle:
            json.dump({"config": config, "iterframe_version": __version__, "warmup_loss": final_loss}, handle)
    return path
