"""The run configuration: a YAML file, flags, ``--set`` and Python overrides resolved into one typed config."""

from iterframe.run_config.resolve import *  # noqa: F403
from iterframe.run_config.resolve import __all__  # noqa: F401
