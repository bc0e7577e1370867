"""The output directory before and after a run: checked without writing, cleaned up when a new run stops early."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from iterframe.run_config import CONFIG_FILE, RunConfigError

__all__ = ["check_output_dir", "remove_unstarted_run", "resume_hint"]


def check_output_dir(output_dir: str, existing_output: str) -> None:
    """Check the output directory against the existing-output policy and prove it is writable, changing nothing.

    A folder "holds a run" when it has any of the run's artifacts (:data:`iterframe.loop.run_state.RUN_ARTIFACTS`).
    A folder that holds no run but a ``config.yaml`` is the user's: a run would overwrite that file, so it is
    refused. Writability is proven by creating the folder (and missing parents) and a probe file, then removing
    them.

    Raises:
        RunConfigError: the path is a file, is not writable, holds a run while ``existing_output`` is
            ``"error"``, holds none while it is ``"resume"``, or holds someone's ``config.yaml`` but no run.
    """
    from iterframe.loop.run_state import RUN_ARTIFACTS, RUN_FILE

    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise RunConfigError(f"Output directory {output_dir!r} is a file; choose another --output-dir.")
    found = [name for name in RUN_ARTIFACTS if os.path.lexists(os.path.join(output_dir, name))]
    if found and existing_output == "error":
        raise RunConfigError(
            f"Output directory {output_dir!r} already holds a run ({', '.join(found)}). Pass --resume to continue "
            "it, --overwrite to replace it, or choose another --output-dir."
        )
    if RUN_FILE not in found and existing_output == "resume":
        raise RunConfigError(
            f"Nothing to resume in {output_dir!r}: it holds no iterframe run (no {RUN_FILE}). Leave out --resume "
            "to start a run there, or point --output-dir at the run to continue."
        )
    if not found and os.path.lexists(os.path.join(output_dir, CONFIG_FILE)):
        raise RunConfigError(
            f"Output directory {output_dir!r} holds a {CONFIG_FILE} but no iterframe run; the run would overwrite "
            f"that file with its resolved config. Choose another --output-dir (e.g. {output_dir}/run), or move "
            f"{CONFIG_FILE} elsewhere."
        )
    _prove_writable(output_dir)


def _prove_writable(output_dir: str, attempts: int = 3) -> None:
    """Create the folder and a probe file in it, then remove what was created. The processes of one launch prove
    the same folder at once: one may remove the folder it created while another is about to probe it (that
    probe is tried again), or probe it while the other removes it (then the folder stays, for the run to use)."""
    created, path = [], output_dir
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    try:
        for attempt in range(attempts):
            os.makedirs(output_dir, exist_ok=True)
            try:
                handle, probe = tempfile.mkstemp(dir=output_dir, prefix=".iterframe-write-probe-")
                break
            except FileNotFoundError:  # removed by another process since makedirs
                if attempt == attempts - 1:
                    raise
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or error
        raise RunConfigError(
            f"Cannot write to output directory {output_dir!r}: {reason}. Make it writable or choose another "
            "--output-dir."
        ) from None
    finally:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):  # gone already, or another process's probe is in it
                os.rmdir(folder)


def remove_unstarted_run(output_dir: str, existed: bool) -> None:
    """Remove what a new run wrote when it stopped before finishing an iteration (nothing there to resume), so
    the same command can simply be run again; the folder itself goes too when the run created it."""
    from iterframe.loop.artifacts import METRICS_FILE, read_metrics
    from iterframe.loop.run_state import RUN_ARTIFACTS

    if not os.path.isdir(output_dir) or read_metrics(os.path.join(output_dir, METRICS_FILE)):
        return
    for name in (*RUN_ARTIFACTS, CONFIG_FILE):
        path = os.path.join(output_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
    if not existed and not os.listdir(output_dir):
        os.rmdir(output_dir)


def resume_hint(output_dir: str) -> str:
    """After a failure: a sentence saying that finished iterations are kept and how to continue, or ``""``."""
    from iterframe.loop.artifacts import METRICS_FILE, read_metrics

    if read_metrics(os.path.join(output_dir, METRICS_FILE)):
        return f"\nFinished iterations are kept in {output_dir}; add --resume to the command to continue the run."
    return ""
