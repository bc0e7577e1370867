"""Code a saved run config names: ``--resume`` and ``iterframe rescore`` read a run folder's ``config.yaml``, and a
``python`` or ``trl`` reward there names a function (``file.py:function``, ``package.module:function``) that would
be imported, so running someone else's run folder would run their code. Such code runs only when the user says so
(``--trust-config-code``) or names it again on the command line."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Optional

from iterframe.run_config import RunConfigError

__all__ = ["TRUST_FLAG", "check_config_code", "functions_named"]

TRUST_FLAG = "--trust-config-code"


def _function_of(spec: Any) -> Optional[str]:
    """The code a component spec names: its ``function`` option, or the function of a ``trl:file.py:function``
    shorthand name."""
    if spec is None or getattr(spec, "instance", None) is not None:
        return None
    function = (spec.options or {}).get("function")
    if isinstance(function, str) and function:
        return function
    name = spec.name or ""
    return name.split(":", 1)[1] if ":" in name else None


def functions_named(specs: Iterable[Any]) -> dict[str, str]:
    """``{function: "KIND 'NAME'"}`` for every spec that names code to import."""
    return {function: f"{spec.kind} {spec.name!r}" for spec in specs if (function := _function_of(spec))}


def _where(function: str) -> str:
    module = function.rpartition(":")[0]
    if module.endswith(".py"):
        return f"the file {os.path.abspath(module)}"
    return f"the module {module!r} (from the current directory or an installed package)"


def check_config_code(saved: Iterable[Any], given: Iterable[Any], config_path: str, trusted: bool) -> None:
    """Refuse to import the code that the component specs ``saved`` (from the saved config at ``config_path``)
    name and the ``given`` ones (the command line's, the caller's) do not, unless ``trusted``.

    Raises:
        RunConfigError: naming each function, the component that names it and the file or module it is in.
    """
    named_here = functions_named(given)
    foreign = {function: who for function, who in functions_named(saved).items() if function not in named_here}
    if not foreign or trusted:
        return
    listed = "".join(f"\n  - {who}: function={code}, in {_where(code)}" for code, who in foreign.items())
    raise RunConfigError(
        f"The saved config {config_path} names code that would be imported and run:{listed}\n"
        "A run folder made by someone else runs their code this way. If you trust it, pass "
        f"{TRUST_FLAG} (trust_config_code=True in Python); or name the reward on the command line yourself."
    )
