"""The Python front door for whole runs: :func:`run` resolves a config, validates every input without writing,
then builds the trainer and runs the loop. ``iterframe run`` is a thin shell over it.

- :mod:`iterframe.api.preparation`: the config from its layers; every input checked and built, nothing written;
- :mod:`iterframe.api.model_check`: is the model there (local folder, Hub id offline);
- :mod:`iterframe.api.output_dir`: the output directory checked, and cleaned up after an early stop;
- :mod:`iterframe.api.execution`: trainer loading, PEFT, the loop, the merged final model, SIGTERM, a clean exit;
- :mod:`iterframe.api.runner`: :func:`run`, :func:`prepare`, :func:`execute` and :class:`RunResult`;
- :mod:`iterframe.api.rescore`: :func:`rescore`, a run's saved samples judged again without generating.
"""

from iterframe.api.execution import Terminated, execute_run, leave_process_group, stop_on_sigterm
from iterframe.api.output_dir import resume_hint
from iterframe.api.preparation import PreparedRun, build_run_config, prepare_run
from iterframe.api.rescore import rescore
from iterframe.api.runner import RunResult, execute, prepare, run

__all__ = [
    "PreparedRun",
    "RunResult",
    "Terminated",
    "build_run_config",
    "execute",
    "execute_run",
    "leave_process_group",
    "prepare",
    "prepare_run",
    "rescore",
    "resume_hint",
    "run",
    "stop_on_sigterm",
]
