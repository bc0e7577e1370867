"""Is the model there? Checked before anything is written: a path that does not exist is refused at once, and a Hub
id is refused at once when the Hub cannot be asked (offline) and the local cache does not have it."""

from __future__ import annotations

import os
import socket
from typing import Optional
from urllib.parse import urlparse

from iterframe.loop.datasets import similar_paths
from iterframe.run_config import RunConfigError

__all__ = ["check_model_reference", "hub_is_offline", "inspect_model", "looks_like_path"]

_TRUE_WORDS = {"1", "on", "yes", "true"}
#: Seconds the connectivity check waits for the Hub.
CONNECT_TIMEOUT_S = 3.0


def looks_like_path(model: str) -> bool:
    """Whether ``model`` is meant as a local folder: it starts with ``.``, ``/`` or ``~``, has more than one
    ``/`` (a Hub id has at most one), or names a folder inside one that exists."""
    if model.startswith((".", "/", "~", os.sep)) or model.count("/") > 1:
        return True
    parent = os.path.dirname(model)
    return bool(parent) and os.path.isdir(os.path.expanduser(parent))


def hub_is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) tells Hugging Face libraries not to use the
    network."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE_WORDS
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _hub_reachable(endpoint: str) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def _in_local_cache(model: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:  # an id the Hub library cannot even parse is not in its cache
        return False


def _similar_folders(path: str) -> str:
    close = similar_paths(path, folders_only=True)
    return f" Similar folders there: {', '.join(close)}." if close else ""


def _check_model_folder(model: str, path: str) -> None:
    """A model folder holds ``config.json`` (a full model) or ``adapter_config.json`` (adapters)."""
    if any(os.path.isfile(os.path.join(path, name)) for name in ("config.json", "adapter_config.json")):
        return
    inside = sorted(name for name in os.listdir(path) if os.path.isfile(os.path.join(path, name, "config.json")))
    hint = f" Folders in it that hold one: {', '.join(inside[:3])}." if inside else ""
    raise RunConfigError(
        f"Model folder {model!r} has no config.json, so it holds no saved model (save_pretrained writes "
        f"one).{hint} Pass the folder that holds the model's config.json with --model."
    )


def _check_gguf(model: str, init_kwargs: Optional[dict]) -> None:
    """A GGUF model (a ``.gguf`` file, or ``gguf_file`` in ``init_kwargs``) needs the ``gguf`` package, and a
    ``gguf_file`` in a local folder must be there."""
    gguf_file = (init_kwargs or {}).get("gguf_file")
    if not (model.lower().endswith(".gguf") or gguf_file):
        return
    from iterframe.engine.loading import GGUF_INSTALL_HINT

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise RunConfigError(
            f"Model {model!r} is a GGUF file, and reading it needs the gguf package: {GGUF_INSTALL_HINT}"
        ) from None
    folder = os.path.expanduser(model)
    if gguf_file and os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, gguf_file)):
        raise RunConfigError(
            f"model_init_kwargs names gguf_file={gguf_file!r}, which is not in the model folder {model!r}; "
            f"name one of its .gguf files, or pass the file itself with --model."
        )


def check_model_reference(model: str, init_kwargs: Optional[dict] = None) -> None:
    """Refuse, at once and without writing anything, a model that cannot be there.

    - a path-looking ``model`` (see :func:`looks_like_path`) that does not exist, naming the folder;
    - a file that is not a ``.gguf`` file;
    - a GGUF model (a ``.gguf`` file, or ``gguf_file`` in ``init_kwargs``) without the ``gguf`` package, or with
      a ``gguf_file`` its folder does not have;
    - a Hub id not in the local cache while ``HF_HUB_OFFLINE`` is set, or while the Hub does not answer a
      connection within a few seconds.

    Raises:
        RunConfigError: saying which and what to do.
    """
    path = os.path.expanduser(model)
    if os.path.exists(path):
        if not os.path.isdir(path) and not path.lower().endswith(".gguf"):
            raise RunConfigError(
                f"Model {model!r} is a file; --model takes a model folder (with config.json), a .gguf file or a "
                "Hub id."
            )
        _check_gguf(model, init_kwargs)
        if os.path.isdir(path) and not (init_kwargs or {}).get("gguf_file"):
            _check_model_folder(model, path)
        return
    if looks_like_path(model):
        raise RunConfigError(
            f"Model folder {os.path.abspath(path)!r} does not exist.{_similar_folders(path)} Pass an existing "
            "folder with --model (a Hub id looks like org/name)."
        )
    if _in_local_cache(model):
        return
    if hub_is_offline():
        raise RunConfigError(
            f"Model {model!r} is neither a local folder nor in the Hugging Face cache, and HF_HUB_OFFLINE is set, "
            "so the Hub is not asked. Pass a local model folder with --model, or unset HF_HUB_OFFLINE to download "
            "it."
        )
    endpoint = _hub_endpoint()
    if not _hub_reachable(endpoint):
        raise RunConfigError(
            f"Model {model!r} is not a local folder and {endpoint} does not answer (offline?), and it is not in "
            "the Hugging Face cache. Pass a local model folder with --model, or connect and try again."
        )


def inspect_model(prepared) -> str:
    """Load the prepared run's model config and tokenizer (not its weights), check that the tokenizer has a chat
    template when the prompts or the sample tokenizer need one; return a one-line description.

    Raises:
        RunConfigError: either does not load, or the chat template is missing.
    """
    from iterframe.engine.loading import load_config, load_tokenizer
    from iterframe.generation.prompt_encoding import NO_CHAT_TEMPLATE_ADVICE

    model = prepared.config.model
    try:
        config = load_config(model, prepared.config.model_init_kwargs)
        tokenizer = load_tokenizer(model, prepared.config.model_init_kwargs)
    except (OSError, ValueError, ImportError) as error:
        raise RunConfigError(f"Cannot load model {model!r}: {error}") from None
    has_template = bool(getattr(tokenizer, "chat_template", None))
    chat_prompts = any(not isinstance(record.prompt, str) for record in prepared.prompts)
    if not has_template and chat_prompts:
        raise RunConfigError(
            f"The prompts are chat messages but the tokenizer of {model!r} has no chat template; "
            f"{NO_CHAT_TEMPLATE_ADVICE}."
        )
    if not has_template and prepared.config.sample_tokenizer.name == "chat":
        raise RunConfigError(
            f"The 'chat' sample tokenizer needs a chat template and the tokenizer of {model!r} has none; use "
            "--sample-tokenizer completion-only (sample_tokenizer: completion-only)."
        )
    architecture = ", ".join(getattr(config, "architectures", None) or [config.model_type])
    template = "with a chat template" if has_template else "no chat template"
    return f"{architecture}; tokenizer {type(tokenizer).__name__}, {len(tokenizer)} tokens, {template}"
