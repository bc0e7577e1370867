"""docs/plugins.md documents every hook with its signature and every built-in component; every hook has a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from iterframe.plugins import HOOK_NAMES, hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "plugins.md").read_text()
TESTS = {
    path.name: path.read_text() for path in (ROOT / "tests").glob("test_*.py") if path.name != Path(__file__).name
}


def signature(hook_name: str) -> str:
    return f"{hook_name}({', '.join(inspect.signature(getattr(hookspecs, hook_name)).parameters)})"


def test_every_hookspec_is_known():
    assert len(HOOK_NAMES) == 16
    assert HOOK_NAMES[:5] == tuple(
        f"register_{kind}s" for kind in ("generator", "reward", "filter", "tokenizer", "logger")
    )


@pytest.mark.parametrize("hook_name", HOOK_NAMES)
def test_hook_is_documented_with_its_signature(hook_name):
    heading = f"#### `{signature(hook_name)}`"
    assert heading in DOCS.splitlines(), f"docs/plugins.md needs a section headed {heading!r}"


@pytest.mark.parametrize("hook_name", HOOK_NAMES)
def test_hook_has_a_test_that_implements_it(hook_name):
    implementing = [name for name, text in TESTS.items() if re.search(rf"\bdef {hook_name}\(", text)]
    assert implementing, f"no test implements the hook {hook_name!r} (a plugin with `def {hook_name}(...)`)"


def test_documented_hooks_all_exist():
    documented = re.findall(r"^#### `(\w+)\(", DOCS, flags=re.MULTILINE)
    assert sorted(documented) == sorted(HOOK_NAMES)


def test_every_builtin_component_is_documented_with_its_public_class(plugin_manager):
    import iterframe
    from iterframe.plugins import DEFAULT_PLUGINS, registered_components

    table_rows = {tuple(cell.strip() for cell in line.split("|")[1:4]) for line in DOCS.splitlines()}
    for info in registered_components():
        assert info.plugin in DEFAULT_PLUGINS
        class_name = info.component_class.__name__
        assert (info.kind, f"`{info.name}`", f"`{class_name}`") in table_rows, (
            f"docs/plugins.md lacks a row for {info.kind} {info.name} ({class_name})"
        )
        assert getattr(iterframe, class_name) is info.component_class
