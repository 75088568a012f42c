"""The files of one training run and the lock that gives one process at a time the right to write them.

    runs/<name>-<hash>/
      lock              held (fcntl.flock) by the process training the run; holds its pid, host and start time
      config.yaml       the configuration and its hash
      metrics.csv       one row per step;  eval.csv: one row per evaluation;  samples/step-*.png
      checkpoints/      ckpt-<step>.pt (atomic);  done.json: written (atomically) once the run finished

``RunLock`` is an exclusive advisory lock on ``lock``: the kernel releases it when its process dies, so a lock
left by a killed run is stale and simply taken over (its leftover temporary files are removed then, by the new
owner, never by anyone else). A second process on a running run stops at once with ``RunLockedError`` naming the
run and the holder. Every state file is written atomically and read with a guard that names the file.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import time
import warnings
from pathlib import Path

from .io import atomic_write, write_json, write_text


class RunLockedError(RuntimeError):
    """Another process is training this run directory."""


class RunLock:
    """Exclusive lock on ``<run_dir>/lock`` for the lifetime of a training process (a context manager)."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "lock"
        self._fh = None

    def acquire(self) -> "RunLock":
        import fcntl
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            fh.close()
            raise RunLockedError(f"run {self.run_dir} is being trained by another process ({holder}); wait for "
                                 f"it to finish or stop it (its lock file: {self.path})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._fh = fh
        remove_stale_temporaries(self.run_dir)
        return self

    def release(self) -> None:
        if self._fh is not None:
            import fcntl
            try:
                self._fh.seek(0)
                self._fh.truncate()
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._fh.close()
                self._fh = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def remove_stale_temporaries(run_dir) -> None:
    """Delete the temporary files of interrupted atomic writes (``.<name>.*.tmp``) in the run directory tree.
    Only the owner of the run lock calls this, so no other process can be writing them."""
    for p in Path(run_dir).rglob(".*.tmp"):
        p.unlink(missing_ok=True)


def read_json_guarded(path) -> dict | None:
    """The JSON object in ``path``, or None (with a warning naming the file) when it is unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        return obj
    except (OSError, ValueError) as e:
        warnings.warn(f"{path} is unreadable ({e}); ignoring it (the run resumes from its checkpoints)",
                      RuntimeWarning, stacklevel=2)
        return None


def write_done(path, info: dict) -> Path:
    return write_json(path, info)


def write_config(path, cfg_dict: dict, chash: str) -> Path:
    import yaml
    return write_text(path, yaml.safe_dump({**cfg_dict, "config_hash": chash}, sort_keys=False))


# --------------------------------------------------------------------------------------------- CSV logs
def _read_rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="") as f:
            return list(csv.reader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise OSError(f"{path} cannot be read ({e}); move it away to start the run's log afresh") from None


def truncate_metrics(path: Path, step: int, columns: list[str]) -> None:
    """Keep the header and the rows with step <= ``step`` (rows logged after the resumed checkpoint are replayed).
    A log with other columns (another configuration) is an error, not something to append to."""
    if not path.exists():
        return start_metrics(path, columns)
    rows = _read_rows(path)
    if not rows:
        return start_metrics(path, columns)
    if rows[0] != columns:
        raise OSError(f"{path} has the columns {rows[0]}, this run logs {columns}: it belongs to another "
                      f"configuration; use another run directory or start afresh (resume: false)")
    kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and _step(r[0]) is not None
                        and _step(r[0]) <= step]
    atomic_write(path, lambda f: csv.writer(f).writerows(kept), binary=False)


def _step(text: str):
    try:
        return int(float(text))
    except ValueError:
        return None


def start_metrics(path: Path, columns: list[str]) -> None:
    atomic_write(path, lambda f: csv.writer(f).writerow(columns), binary=False)


def _fmt(v):
    return repr(float(v)) if isinstance(v, float) else v


def write_eval(path: Path, rows: list[dict]) -> None:
    """eval.csv from all evaluation rows so far (atomic)."""
    keys = ["step"] + sorted({k for r in rows for k in r} - {"step"})

    def write(f):
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
    atomic_write(path, write, binary=False)


def read_eval(path: Path, step: int) -> list[dict]:
    """The evaluation rows with step <= ``step``."""
    if not path.exists():
        return []
    try:
        with open(path, newline="") as f:
            return [{k: (float(v) if k != "step" else int(v)) for k, v in r.items() if v not in ("", None)}
                    for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= step]
    except (OSError, ValueError, csv.Error) as e:
        raise OSError(f"{path} cannot be read ({e}); move it away to rebuild it from a fresh run") from None
