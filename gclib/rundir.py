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

A folder is gclib's only when it carries the marker ``.gclib-run`` (written when gclib creates or adopts the run
directory; ``claim_run_dir``). An existing folder without it is refused before a byte is written, unless it is
empty or a run directory of an older gclib (its config.yaml carries a config hash, next to gclib's metrics.csv,
checkpoints or done.json), which is adopted. Cleaning up after a killed writer removes only the temporary files
of the names gclib writes (``.config.yaml.<random>.tmp``, ``checkpoints/.ckpt-<step>.pt.<random>.tmp``, ...),
never anything else. ``wait_for_run`` lets a notebook wait for a run another process is training and then reuse
it. done.json stores its checkpoint relative to the run directory (``done_checkpoint`` reads either form).

``RunPaths`` is the one place that names these files: the training loop, the sweeps and ``gclib reproduce`` ask it
for a run's paths (``RunPaths(run_dir).checkpoint(step)``) instead of spelling them out.
"""
from __future__ import annotations

import csv
import json
import os
import re
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CKPT_RE, ckpt_path, list_checkpoints
from .io import atomic_write, explain, write_json, write_text

MARKER = ".gclib-run"


@dataclass(frozen=True)
class RunPaths:
    """The files of one run directory (the layout above)."""
    run_dir: Path

    lock = property(lambda self: self.run_dir / "lock")
    marker = property(lambda self: self.run_dir / MARKER)
    ckpt_dir = property(lambda self: self.run_dir / "checkpoints")
    metrics_csv = property(lambda self: self.run_dir / "metrics.csv")
    eval_csv = property(lambda self: self.run_dir / "eval.csv")
    done_json = property(lambda self: self.run_dir / "done.json")
    config_yaml = property(lambda self: self.run_dir / "config.yaml")
    samples = property(lambda self: self.run_dir / "samples")

    def checkpoint(self, step: int) -> Path:
        """checkpoints/ckpt-<step, 8 digits>.pt"""
        return ckpt_path(self.ckpt_dir, int(step))

    def checkpoint_steps(self) -> list[int]:
        """The steps of the checkpoint files present, newest first (none: [])."""
        return [int(CKPT_RE.match(p.name).group(1)) for p in list_checkpoints(self.ckpt_dir)]


RUN_FILES = ("lock", MARKER, "config.yaml", "metrics.csv", "eval.csv", "done.json")   # what gclib writes there
RUN_FOLDERS = ("checkpoints", "samples")
_RANDOM = r"[a-z0-9_]{8}"   # the random part of tempfile.mkstemp's names (gclib.io.atomic_write)
TEMPORARIES = {  # folder of the run directory -> the temporary files gclib's atomic writes leave there
    ".": re.compile(rf"^\.(?:config\.yaml|metrics\.csv|eval\.csv|done\.json|\.gclib-run)\.{_RANDOM}\.tmp$"),
    "checkpoints": re.compile(rf"^\.ckpt-\d{{8}}\.pt\.{_RANDOM}\.tmp$"),
    "samples": re.compile(rf"^\.step-\d{{8}}\.png\.{_RANDOM}\.tmp$"),
}
LOCK_TIMEOUT_ENV = "GCLIB_LOCK_TIMEOUT"
LOCK_TIMEOUT = 6 * 3600.0   # seconds a notebook waits for a run another process trains (default)


class NotARunDirError(ValueError):
    """A run directory that gclib may not write into: a file, or a folder that is not a gclib run."""


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
        claim_run_dir(self.run_dir)  # refuses a folder that is not gclib's before anything is written
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
    """Delete the temporary files that interrupted atomic writes of gclib's own files left (``TEMPORARIES``: the
    run directory, checkpoints/ and samples/, not below; nothing else is touched). Only the owner of the run lock
    calls this, so no other process can be writing them."""
    for folder, pattern in TEMPORARIES.items():
        d = Path(run_dir) / folder
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if pattern.match(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)


def _is_older_run(d: Path, names: set) -> bool:
    """Whether folder ``d`` (holding ``names``) is a run directory written by a gclib from before the marker:
    only a lock file (a run killed while it started), or a config.yaml with the config hash gclib writes there
    next to gclib's metrics.csv, checkpoints or done.json."""
    if names and all(n == "lock" or TEMPORARIES["."].match(n) for n in names):
        return True
    p = RunPaths(Path(d))
    if p.config_yaml.name not in names:
        return False
    try:
        import yaml
        cfg = yaml.safe_load(p.config_yaml.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - unreadable: not recognisably gclib's
        return False
    if not isinstance(cfg, dict) or not isinstance(cfg.get("config_hash"), str):
        return False
    try:
        with open(p.metrics_csv, encoding="utf-8") as f:
            if f.readline().startswith("step,loss,"):
                return True
    except (OSError, UnicodeDecodeError):
        pass
    return bool(list_checkpoints(p.ckpt_dir)) or p.done_json.is_file()


def claim_run_dir(run_dir) -> Path:
    """Make ``run_dir`` a gclib run directory, or refuse it before anything is written (``NotARunDirError``, one
    line naming the folder): a missing folder is created with the marker ``.gclib-run``; an existing one must
    carry the marker, be empty, or be a run directory of an older gclib (then the marker is added); a file in
    place of the folder, of checkpoints/ or samples/, or a folder in place of one of gclib's files is refused."""
    d = check_run_dir(run_dir)
    try:
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
        names = {p.name for p in d.iterdir()}
    except OSError as e:
        raise explain(e, d) from None
    _check_folder(d, names)
    if MARKER not in names:
        write_text(d / MARKER, json.dumps({"gclib_run": 1, "created": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    return d


def check_run_dir(run_dir) -> Path:
    """``run_dir`` as a Path if gclib can train there, checked without writing anything (``NotARunDirError`` or an
    OSError naming the folder otherwise): an existing folder must be a gclib run, empty, or a run of an older gclib
    (``_check_folder``); a missing one must be creatable (its nearest existing parent a writable folder)."""
    d = Path(run_dir)
    try:
        if d.is_symlink() and not d.exists():
            raise NotARunDirError(f"run directory {d} is a broken symbolic link (to {os.readlink(d)}): remove it or "
                                  f"choose another run_dir / --run-dir")
        if d.exists():
            if not d.is_dir():
                raise NotARunDirError(f"run directory {d} is a file, not a folder: choose another run_dir / "
                                      f"--run-dir, or move the file away")
            _check_folder(d, {p.name for p in d.iterdir()})
            return d
        for parent in d.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    raise NotARunDirError(f"run directory {d} cannot be created: {parent} is a file, not a folder")
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise NotARunDirError(f"run directory {d} cannot be created: {parent} is not writable; choose "
                                          f"a writable runs_dir / --run-dir")
                break
    except NotARunDirError:
        raise
    except OSError as e:
        raise explain(e, d) from None
    return d


def _check_folder(d: Path, names: set) -> None:
    """Refuse the existing folder ``d`` (holding ``names``) unless gclib may write into it (see claim_run_dir)."""
    if MARKER not in names:
        if names and not _is_older_run(d, names):
            shown = ", ".join(sorted(names)[:4]) + (", ..." if len(names) > 4 else "")
            raise NotARunDirError(
                f"run directory {d} is not a gclib run (it has no {MARKER} and holds {shown}): gclib writes only "
                f"into folders it created; give a new or empty folder as run_dir / --run-dir (nothing was written)")
    elif not (d / MARKER).is_file():
        raise NotARunDirError(f"{d / MARKER} is not a file: this is not a gclib run directory")
    for name in RUN_FOLDERS:
        if (d / name).exists() and not (d / name).is_dir():
            raise NotARunDirError(f"{d / name} is a file, but gclib keeps its {name} in a folder of that name: move "
                                  f"the file away")
    for name in RUN_FILES:
        if (d / name).is_dir():
            raise NotARunDirError(f"{d / name} is a folder, but gclib writes a file of that name there: move the "
                                  f"folder away")


def lock_timeout() -> float:
    """Seconds to wait for a run another process trains: ``$GCLIB_LOCK_TIMEOUT`` or ``LOCK_TIMEOUT`` (6 h)."""
    text = os.environ.get(LOCK_TIMEOUT_ENV)
    if not text:
        return LOCK_TIMEOUT
    try:
        value = float(text)
        if not value >= 0 or value == float("inf"):
            raise ValueError
    except ValueError:
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={text!r} is not valid; give a number of seconds >= 0") from None
    return value


def wait_for_run(fn, run_dir, timeout: float | None = None, poll: float = 2.0, say=None):
    """``fn()`` (a call of ``gclib.train.train``), waiting while another process trains ``run_dir``: on
    ``RunLockedError`` say so once (``say``, default: a line on stderr) and try again every ``poll`` seconds, so
    the finished run is reused (or resumed, if its trainer died); after ``timeout`` seconds (default
    ``lock_timeout()``) raise RunLockedError saying how long it waited."""
    timeout = lock_timeout() if timeout is None else float(timeout)
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    deadline = None
    while True:
        try:
            return fn()
        except RunLockedError as e:
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
                say(f"run {run_dir} is being trained by another process; waiting for it to finish to reuse it "
                    f"(up to {timeout:.0f} s, ${LOCK_TIMEOUT_ENV})")
            if now >= deadline:
                raise RunLockedError(f"{e}; still locked after waiting {timeout:.0f} s (${LOCK_TIMEOUT_ENV})") from None
            time.sleep(max(0.0, min(poll, deadline - now)))


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


TRAINED_BY_ENV = "GCLIB_TRAINED_BY"   # set by gclib.reproduce around a notebook: its runs' done.json carry the tag


def write_done(path, info: dict) -> Path:
    """done.json (atomic); its ``checkpoint`` is stored relative to the run directory (the folder of ``path``),
    so a run directory can be moved or shared. Under ``$GCLIB_TRAINED_BY`` it also records that tag as
    ``trained_by`` (the process that trained the run: see ``gclib.reproduce.finished_runs``)."""
    info = dict(info)
    if os.environ.get(TRAINED_BY_ENV):
        info["trained_by"] = os.environ[TRAINED_BY_ENV]
    if info.get("checkpoint"):
        ck, base = Path(info["checkpoint"]), Path(path).parent
        try:
            info["checkpoint"] = ck.relative_to(base).as_posix()
        except ValueError:
            try:
                info["checkpoint"] = ck.resolve().relative_to(base.resolve()).as_posix()
            except (ValueError, OSError):
                info["checkpoint"] = str(ck)
    return write_json(path, info)


def done_checkpoint(run_dir, done: dict) -> Path:
    """The final checkpoint that done.json names: relative to ``run_dir`` (this gclib) or absolute (older ones;
    when that path is gone, the file of the same name in ``run_dir``/checkpoints)."""
    text = str(done.get("checkpoint") or "")
    ckpt_dir = RunPaths(Path(run_dir)).ckpt_dir
    if not text:
        return ckpt_dir / "missing"
    ck = Path(text)
    if not ck.is_absolute():
        return Path(run_dir) / ck
    if not ck.is_file() and (ckpt_dir / ck.name).is_file():
        return ckpt_dir / ck.name
    return ck


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
