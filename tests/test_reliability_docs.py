"""docs/reliability.md: every guarantee names a test that exists, and every reliability test is listed there."""

from __future__ import annotations

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "reliability.md")
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
RELIABILITY_TEST_FILES = [
    "tests/test_reliability_bad_input.py",
    "tests/test_reliability_crash.py",
    "tests/test_reliability_plugins.py",
    "tests/test_reliability_properties.py",
    "tests/test_reliability_security.py",
]


def _guarantees() -> list[str]:
    """The bullet items of docs/reliability.md, each joined into one line."""
    with open(DOC, encoding="utf-8") as handle:
        text = handle.read()
    items, current = [], None
    for line in text.splitlines():
        if line.startswith("- "):
            current = [line[2:]]
            items.append(current)
        elif current is not None and line.startswith("  ") and line.strip():
            current.append(line.strip())
        else:
            current = None
    return [" ".join(item) for item in items]


def _test_functions(path: str) -> set[str]:
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_guarantee_names_an_existing_test_function():
    guarantees = _guarantees()
    assert len(guarantees) >= 25
    for guarantee in guarantees:
        references = TEST_REFERENCE.findall(guarantee)
        assert references, f"This guarantee names no test: {guarantee[:100]}"
        for path, name in references:
            assert os.path.isfile(os.path.join(ROOT, path)), f"{path} does not exist"
            assert name in _test_functions(path), f"{path} has no test function {name}"


def test_every_reliability_test_is_listed_as_a_guarantee():
    named = {(path, name) for guarantee in _guarantees() for path, name in TEST_REFERENCE.findall(guarantee)}
    for path in RELIABILITY_TEST_FILES:
        missing = sorted(name for name in _test_functions(path) if (path, name) not in named)
        assert not missing, f"docs/reliability.md does not list {path}::{missing}"
