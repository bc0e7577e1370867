"""CI installs the known-good versions of .ci/constraints.txt, and says which versions ran."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _versions_module():
    spec = importlib.util.spec_from_file_location("ci_versions", ROOT / ".ci" / "versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_and_the_readme_test_command_install_from_the_constraints_file():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install = next(line for line in ci.splitlines() if '-e ".[test]"' in line)
    assert "-c .ci/constraints.txt" in install
    assert "python .ci/versions.py" in ci  # the CI log shows which versions ran
    test_command = next(line for line in readme.splitlines() if "python -m pytest" in line)
    assert "-c .ci/constraints.txt" in test_command


def test_every_package_the_constraints_pin_is_pinned_exactly():
    pins = _versions_module().read_pins()
    assert {"torch", "transformers", "accelerate", "tokenizers", "peft", "datasets"} <= set(pins)
    assert all(version[0].isdigit() for version in pins.values())


@pytest.mark.skipif(
    not os.environ.get("ITERFRAME_EXPECT_CONSTRAINTS"),
    reason="set by .ci/run, which installs from .ci/constraints.txt (other installs may differ on purpose)",
)
def test_the_installed_versions_are_the_pinned_ones_when_installed_from_the_constraints():
    versions = _versions_module()
    changed = versions.differences(versions.read_pins(), versions.installed_versions())
    assert not changed, versions.report(versions.read_pins(), versions.installed_versions())


def test_differences_name_each_pinned_package_installed_at_another_version():
    versions = _versions_module()
    pins = {"torch": "2.13.0", "transformers": "5.25.0", "absent": "1.0"}
    installed = {"torch": "2.13.0+cpu", "transformers": "5.26.0", "other": "3.0"}
    assert versions.differences(pins, installed) == {"transformers": ("5.25.0", "5.26.0")}
    text = versions.report(pins, installed)
    assert "transformers: known-good 5.25.0, installed 5.26.0" in text
    assert text.startswith("versions: torch 2.13.0+cpu, transformers 5.26.0")


def test_a_constraints_line_without_an_exact_pin_is_refused(tmp_path):
    path = tmp_path / "constraints.txt"
    path.write_text("# header\ntorch==2.13.0\ntransformers>=5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="transformers>=5"):
        _versions_module().read_pins(path)
