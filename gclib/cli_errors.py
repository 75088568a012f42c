"""The error boundary of every ``gclib`` command (``run_command``): one line on stderr and an exit status.

2 for the user's input or machine (``_user_errors``), 1 for a NaN/inf loss or a failed notebook, 130 for Ctrl-C
(``INTERRUPTED``: whether the work can be resumed), 128 + the signal for SIGTERM / SIGUSR1 (``TERMINATED``); an
installed optional package that fails to import is named (``_extra_in_traceback``). Part of ``gclib.cli``.
"""
from __future__ import annotations

import os
import sys

from . import signals


def _user_errors() -> tuple:
    """Exceptions that mean the user's input or machine is at fault: reported in one line, exit status 2.
    (Every OSError is one: a full disk, a read-only folder, a too-long name, an unreadable state file, ...)"""
    from .checkpoint import CheckpointError
    from .checks import MissingExtraError
    from .config import ConfigError
    from .data import DataMissingError
    from .rundir import RunLockedError
    return (ConfigError, CheckpointError, DataMissingError, RunLockedError, MissingExtraError, OSError, ValueError)


def _one_line(command: str, e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return f"gclib {command}: error: {msg}"


INTERRUPTED = {"train": "interrupted; the run can be resumed: run the same command again (it continues from its "
                        "newest checkpoint)",
               "reproduce": "interrupted; the runs it trained can be resumed: run it again (finished runs are "
                            "reused from the cache)"}
NOTEBOOK_USER_ERRORS = ("ValueError", "ConfigError", "FileNotFoundError", "DataMissingError", "DataCorruptError",
                        "CheckpointError", "MissingExtraError", "ModuleNotFoundError", "PermissionError",
                        "RunLockedError")


TERMINATED = {"train": "the run resumes from its newest checkpoint: run the same command again",
              "reproduce": "the results of the notebook it was running were left as they were; the runs it trained "
                           "resume from their checkpoints: run it again",
              "sample": "nothing was written (--out is written whole or not at all)",
              "evaluate": "nothing was written (--out is written whole or not at all)"}


def _terminated(command: str, e) -> int:
    """One line for a command stopped by SIGTERM / SIGUSR1 (on rank 0 only, under torchrun); exit 128 + signal."""
    if os.environ.get("RANK", "0") == "0":
        text = str(e) if isinstance(e, signals.TrainingStopped) else f"{e}; {TERMINATED.get(command, 'stopped')}"
        print(f"gclib {command}: {' '.join(text.split())}", file=sys.stderr, flush=True)
    return e.exit_status


def run_command(command: str, fn) -> int:
    """The error boundary of every command: ``fn()``'s exit status, or ONE line on stderr and the status:
    2 for the user's input or machine (bad value or file, missing data or extra, corrupt or mismatched
    checkpoint, a locked run, any OSError), 1 for a NaN/inf loss or a notebook that failed, 130 for Ctrl-C
    (saying whether the work can be resumed), 128 + the signal number for SIGTERM / SIGUSR1 (``gclib.signals``:
    train first saves a checkpoint at its step and names it); anything else is a bug and shows its traceback.
    Warnings are printed as one line each."""
    import warnings
    from .checks import EXTRAS, broken_extra, missing_extra
    from .step import NonFiniteLossError
    show = warnings.showwarning

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"gclib {command}: warning: {' '.join(str(message).split())}", file=file or sys.stderr)
    warnings.showwarning = one_line_warning
    try:
        with signals.handle():   # SIGTERM / SIGUSR1: gclib.signals (train saves a checkpoint at its step first)
            return fn()
    except signals.Terminated as e:
        return _terminated(command, e)
    except KeyboardInterrupt:
        print(f"gclib {command}: {INTERRUPTED.get(command, 'interrupted')}", file=sys.stderr)
        return 130
    except NonFiniteLossError as e:
        print(_one_line(command, e), file=sys.stderr)
        return 1
    except _user_errors() as e:
        print(_one_line(command, e), file=sys.stderr)
        return 2
    except ImportError as e:
        if (e.name or "").split(".")[0] not in EXTRAS:
            broken = _extra_in_traceback(e)   # an installed optional package that fails to import
            if broken is None:
                raise
            print(_one_line(command, broken_extra(broken, f"gclib {command}", e)), file=sys.stderr)
            return 2
        print(_one_line(command, missing_extra(e.name, f"gclib {command}")), file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - only papermill's failure is reported here; the rest re-raised
        if type(e).__name__ != "PapermillExecutionError":
            raise
        evalue = " ".join(str(getattr(e, "evalue", "")).split())
        where = getattr(e, "executed_notebook", None) or "the executed notebook under results/"
        print(f"gclib {command}: error: a notebook failed in cell {getattr(e, 'exec_count', '?')}: "
              f"{getattr(e, 'ename', 'Error')}: {evalue} ({where} holds its traceback; the results of the last "
              f"successful run are kept)", file=sys.stderr)
        return 2 if getattr(e, "ename", "") in NOTEBOOK_USER_ERRORS else 1
    finally:
        warnings.showwarning = show


def _extra_in_traceback(e: BaseException) -> str | None:
    """The optional package (a key of gclib.checks.EXTRAS) whose own code raised ``e`` while it was imported, or
    None: a broken install shows as an ImportError from inside the package, not as the package missing."""
    from .checks import EXTRAS
    tb, found = e.__traceback__, None
    while tb is not None:
        top = str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        if top in EXTRAS and found is None:
            found = top
        tb = tb.tb_next
    return found
