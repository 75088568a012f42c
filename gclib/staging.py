"""Results written whole or not at all: a folder such as ``results/<notebook>/<variant>/`` is replaced only by a run
that succeeded.

    stage = Stage.begin(final)   # a new folder .<name>.partial-<token>/ beside ``final``, held by this process
    ...write into stage.path...
    stage.commit()               # ``final`` is now the staged folder; the old one is removed
    stage.abandon()              # or: the staged folder goes, ``final`` is untouched

The old folder stays byte for byte until the commit, which is two renames in its parent folder (``final`` aside
to ``.<name>.replaced-<token>/``, the staged folder to ``final``) and then the removal of the old one. A process
killed at any moment leaves either the old folder or the new one at ``final`` (killed between the two renames:
none, and the old one beside it); the next ``Stage.begin`` for the same folder, in any process, cleans up: a
staged folder whose owner is gone (its lock file, ``.gclib-staging``, is no longer held) is removed, a replaced
one is put back when ``final`` is missing and removed otherwise. Commits and clean-ups of one parent folder are
serialised by a lock on that folder, so two runs of the same variant never interleave; the last to commit wins.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from pathlib import Path

from .io import explain

LOCK_NAME = ".gclib-staging"   # inside a staged folder, held (flock) by the process that owns it


def _prefixes(final: Path) -> tuple[str, str]:
    return f".{final.name}.partial-", f".{final.name}.replaced-"


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """An exclusive lock on ``folder`` itself (flock of its descriptor), for commits and clean-ups within it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _held(staged: Path) -> bool:
    """Whether a process still owns the staged folder (holds its lock file)."""
    try:
        fd = os.open(staged / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def leftovers(final) -> list[Path]:
    """The staged and replaced folders of ``final`` that no running process owns (what ``clean_up`` removes)."""
    final = Path(final)
    partial, replaced = _prefixes(final)
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir() if p.is_dir() and not p.is_symlink() and (
        p.name.startswith(replaced) or (p.name.startswith(partial) and not _held(p))))


def clean_up(final) -> None:
    """Remove what killed runs left beside ``final`` (the module docstring); call with the parent's lock held."""
    final = Path(final)
    partial, replaced = _prefixes(final)
    for p in leftovers(final):
        if p.name.startswith(replaced) and not final.exists():
            os.rename(p, final)          # killed between the two renames of a commit: the old folder comes back
        else:
            shutil.rmtree(p)


class Stage:
    """A staged folder for ``final`` owned by this process (see the module docstring)."""

    def __init__(self, final: Path, path: Path, lock):
        self.final, self.path, self._lock = final, path, lock
        self.done = False

    @classmethod
    def begin(cls, final) -> "Stage":
        """Clean up ``final``'s leftovers, then create and hold a new staged folder beside it."""
        final = Path(final)
        parent = final.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            with _folder_lock(parent):
                clean_up(final)
                path = parent / f"{_prefixes(final)[0]}{os.getpid()}-{secrets.token_hex(3)}"
                path.mkdir()
                lock = open(path / LOCK_NAME, "w")
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock.write(f"pid {os.getpid()}\n")
                lock.flush()
        except OSError as e:
            raise explain(e, final) from None
        return cls(final, path, lock)

    def commit(self) -> Path:
        """Replace ``final`` by the staged folder (the old one is removed); returns ``final``."""
        if self.done:
            raise RuntimeError(f"{self.path} was already committed or abandoned")
        parent = self.final.parent
        old = parent / f"{_prefixes(self.final)[1]}{self.path.name.rpartition('-')[2]}"
        try:
            with _folder_lock(parent):
                (self.path / LOCK_NAME).unlink()
                if self.final.exists():
                    os.rename(self.final, old)
                os.rename(self.path, self.final)
                _fsync_folder(parent)
        except OSError as e:
            raise explain(e, self.final) from None
        finally:
            self._release()
        shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abandon(self, keep: bool = False) -> None:
        """Give the staged folder up: removed, or kept (``keep``) for a look until the next run cleans it up."""
        if self.done:
            return
        self._release()
        if not keep:
            shutil.rmtree(self.path, ignore_errors=True)

    def _release(self) -> None:
        self.done = True
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
