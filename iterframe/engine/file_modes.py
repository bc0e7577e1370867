"""File permissions that follow the process umask.

Temporary files (``tempfile.mkstemp``, ``mkdtemp``) and safetensors' own writer create files with mode 0600 and
folders with 0700 whatever the umask says, so anything written that way and then renamed into place would be
private to its owner. These helpers give such files the mode a plain ``open(path, "w")`` or ``os.makedirs`` would
have: under umask 022, 0644 files and 0755 folders that teammates and services running as other users can read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Union

__all__ = ["current_umask", "follow_umask", "folder_built_in_place"]


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it, then restore it at once
    os.umask(mask)
    return mask


def follow_umask(path: Union[str, os.PathLike]) -> None:
    """Give ``path`` (a file, or a folder and everything under it) the modes the umask asks for: ``0666`` files
    and ``0777`` folders less the umask's bits. Symbolic links are left alone."""
    mask = current_umask()
    file_mode, folder_mode = 0o666 & ~mask, 0o777 & ~mask
    path = os.fspath(path)
    if os.path.islink(path):
        return
    if not os.path.isdir(path):
        os.chmod(path, file_mode)
        return
    os.chmod(path, folder_mode)
    for root, folders, files in os.walk(path):
        for name in folders:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), folder_mode)
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), file_mode)


@contextlib.contextmanager
def folder_built_in_place(path: str) -> Iterator[str]:
    """A temporary folder beside ``path`` to write into. When the block ends without error it takes the modes the
    umask asks for and replaces ``path`` (a folder that existed there is removed); on an error it is removed and
    ``path`` is left as it was."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temp_path = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.")
    try:
        yield temp_path
        follow_umask(temp_path)  # a shared cache folder: readable as the umask allows, not private like mkdtemp
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(temp_path, path)
    except BaseException:
        shutil.rmtree(temp_path, ignore_errors=True)
        raise
