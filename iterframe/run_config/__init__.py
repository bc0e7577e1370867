"""The run configuration: a YAML file or dict, flags, ``--set`` and Python overrides, resolved into one typed
config.

The path of a config, in order: :func:`load_config_file` (or :func:`normalise_config` of a dict) makes a draft;
:func:`apply_flags`, :func:`apply_overrides` (``--set``) and :func:`apply_python_overrides` change it, each
through :func:`iterframe.run_config.schema.assign`; :func:`resolve_run_config` types it in one pass into a
:class:`RunConfig`. The keys are the table :data:`iterframe.run_config.schema.SECTIONS`.
"""

from iterframe.run_config.components import ComponentSpec, RunConfigError
from iterframe.run_config.files import CONFIG_FILE, config_text, load_config_file, save_run_config
from iterframe.run_config.flags import FLAGS, Flag, apply_flags
from iterframe.run_config.overrides import apply_overrides, apply_python_overrides, suggest_set_key
from iterframe.run_config.resolve import RunConfig, resolve_run_config
from iterframe.run_config.schema import TOP_LEVEL_KEYS, normalise_config

__all__ = [
    "CONFIG_FILE",
    "FLAGS",
    "TOP_LEVEL_KEYS",
    "ComponentSpec",
    "Flag",
    "RunConfig",
    "RunConfigError",
    "apply_flags",
    "apply_overrides",
    "apply_python_overrides",
    "config_text",
    "load_config_file",
    "normalise_config",
    "resolve_run_config",
    "save_run_config",
    "suggest_set_key",
]
