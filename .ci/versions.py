"""The installed versions of the packages pinned in .ci/constraints.txt, against the pins.

    python .ci/versions.py            # print every pinned package: pinned, installed, and what changed
    python .ci/versions.py --check    # the same, and exit 1 when an installed package differs from its pin

`.ci/run` runs the check before the tests (so the CI log shows which versions ran); `tox -e newest` runs the
report after installing the newest releases, to show what changed since the known-good set.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
from importlib import metadata

CONSTRAINTS = pathlib.Path(__file__).resolve().parent / "constraints.txt"
#: The packages whose versions a reader of the CI log wants first.
HEADLINE = ("torch", "transformers", "accelerate", "tokenizers", "peft", "datasets", "deepspeed", "trl")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _local_free(version: str) -> str:
    return version.split("+", 1)[0]


def read_pins(path: pathlib.Path = CONSTRAINTS) -> dict[str, str]:
    """``{normalised name: version}`` of every ``name==version`` line of a constraints file."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, separator, version = line.partition("==")
        if not separator:
            raise ValueError(f"{path}: {line!r} is not name==version")
        pins[_normal(name)] = version.strip()
    return pins


def installed_versions() -> dict[str, str]:
    """``{normalised name: version}`` of the distributions installed in this interpreter."""
    return {
        _normal(dist.metadata["Name"]): dist.version for dist in metadata.distributions() if dist.metadata["Name"]
    }


def differences(pins: dict[str, str], installed: dict[str, str]) -> dict[str, tuple[str, str]]:
    """``{name: (pinned, installed)}`` for each pinned package installed at another version (local labels such
    as ``+cpu`` ignored); pinned packages that are not installed are not differences."""
    return {
        name: (pinned, installed[name])
        for name, pinned in pins.items()
        if name in installed and _local_free(installed[name]) != _local_free(pinned)
    }


def report(pins: dict[str, str], installed: dict[str, str]) -> str:
    """The headline packages' versions, then every difference from the pins."""
    lines = ["versions: " + ", ".join(f"{name} {installed[name]}" for name in HEADLINE if name in installed)]
    changed = differences(pins, installed)
    if changed:
        lines.append(f"{len(changed)} installed package(s) differ from {CONSTRAINTS.name}:")
        lines += [
            f"  {name}: known-good {pinned}, installed {now}" for name, (pinned, now) in sorted(changed.items())
        ]
    else:
        lines.append(f"every pinned package that is installed matches {CONSTRAINTS.name}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when an installed package differs from its pin"
    )
    args = parser.parse_args(argv)
    pins, installed = read_pins(), installed_versions()
    print(report(pins, installed))
    return 1 if args.check and differences(pins, installed) else 0


if __name__ == "__main__":
    sys.exit(main())
