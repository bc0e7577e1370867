"""Config files: reading a YAML run config (paths relative to the file) and saving the resolved one."""

from __future__ import annotations

import os
from typing import Any

import yaml

from iterframe.run_config.components import RunConfigError
from iterframe.run_config.schema import normalise_config

__all__ = ["CONFIG_FILE", "load_config_file", "save_run_config"]

#: The resolved config a run saves in its output directory.
CONFIG_FILE = "config.yaml"


def _local_path_next_to(value: Any, base_dir: str) -> Any:
    """``value`` made absolute when it is a relative path that exists next to the config file."""
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return value
    candidate = os.path.join(base_dir, value)
    return os.path.abspath(candidate) if os.path.exists(candidate) else value


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML run config (``yaml.safe_load``) into a draft (see :mod:`iterframe.run_config.schema`).

    Relative paths of ``model``, ``dataset.path`` and ``dataset.eval_dataset`` are looked up next to the file
    first, then in the current directory (a value found in neither is taken as a Hub id).

    Raises:
        RunConfigError: the file is missing, is not valid YAML, is not a mapping, or has an unknown key.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except OSError as error:
        raise RunConfigError(f"Cannot read config file {path!r}: {error.strerror or error}.") from None
    except yaml.YAMLError as error:
        raise RunConfigError(f"Config file {path!r} is not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise RunConfigError(f"Config file {path!r} is not UTF-8 text: {error}.") from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise RunConfigError(f"Config file {path!r} must hold a mapping of keys, got a {type(config).__name__}.")
    try:
        draft = normalise_config(config)
    except RunConfigError as error:
        message = str(error)
        raise RunConfigError(message if path in message else f"Config file {path!r}: {message}") from None
    base_dir = os.path.dirname(os.path.abspath(path))
    draft["model"] = _local_path_next_to(draft["model"], base_dir)
    for key in ("path", "eval_dataset"):
        if key in draft["dataset"]:
            draft["dataset"][key] = _local_path_next_to(draft["dataset"][key], base_dir)
    return draft


def config_text(run_config) -> str:
    """The resolved config as YAML text (what ``--print-config`` prints and ``config.yaml`` holds)."""
    return yaml.safe_dump(run_config.to_config(), sort_keys=False, allow_unicode=True)


def save_run_config(run_config, path: str) -> None:
    """Write the resolved config as YAML (atomically), so ``iterframe run PATH`` repeats the run."""
    from iterframe.loop.artifacts import atomic_write_bytes

    atomic_write_bytes(path, config_text(run_config).encode("utf-8"))
