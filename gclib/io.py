"""Atomic file writes: a temporary file in the same folder, fsync, then os.replace. A crash mid-write leaves
the previous file intact; readers never see half a file."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, IO


HINTS = {errno.ENOSPC: "the disk is full: free space (or write the runs elsewhere: runs_dir / --run-dir)",
         errno.EDQUOT: "the disk quota is exceeded: free space (or write the runs elsewhere: runs_dir / --run-dir)",
         errno.EFBIG: "the disk is full or a file size limit (ulimit -f) was hit: free space (or write the runs "
                      "elsewhere: runs_dir / --run-dir)",
         errno.EROFS: "the file system is read-only: choose a writable runs_dir / --run-dir",
         errno.EACCES: "permission denied: choose a writable folder (runs_dir / --run-dir) or fix its permissions",
         errno.EPERM: "permission denied: choose a writable folder (runs_dir / --run-dir) or fix its permissions"}


def explain(err: OSError, path) -> OSError:
    """An OSError naming ``path``, what went wrong and the fix (same errno, so callers can still test it)."""
    hint = HINTS.get(err.errno, err.strerror or str(err))
    return type(err)(err.errno, f"cannot write {path}: {hint}")


def _umask() -> int:
    """The process's umask (read from /proc where it can be, so that it is never changed, even briefly)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _mode_for(path: Path) -> int:
    """The permissions a file written at ``path`` gets: those of the file it replaces, else 0o666 less the umask
    (0644 with the usual umask), as ``open`` would give it; ``tempfile.mkstemp`` alone would leave 0600."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def atomic_write(path, write: Callable[[IO], None], binary: bool = True) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, then atomically rename it to ``path``. An OSError
    (disk full, read-only folder, permissions) leaves the previous file intact and names the file and the fix.
    The file gets ordinary permissions (those of the file it replaces, else 0666 less the umask)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise explain(e, path) from None
    try:
        try:
            os.fchmod(fd, _mode_for(path))
        except OSError:
            pass  # a file system without permissions (e.g. some network mounts): keep what mkstemp gave
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in HINTS:
            raise explain(e, path) from None
        if isinstance(e, OSError) and e.errno is not None and not e.filename:  # name the file it was for
            raise explain(e, path) from None
        raise
    try:  # make the rename itself durable where the platform allows
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), binary=False)


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def relative_to_cwd(path) -> str:
    """``path`` relative to the working directory when it lies below it, else as given: what logs and stored
    notebooks show, so they carry no machine paths (papermill stores the paths it is given)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
