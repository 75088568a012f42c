"""Checkpoints: atomic writes, rotation, newest-valid lookup, and every RNG state as plain data.

A checkpoint is a dict of tensors and plain containers saved with ``torch.save`` and read back with
``torch.load(weights_only=True)`` (data, never code). Files are ``<dir>/ckpt-<step:08d>.pt``; a write goes to a
temporary file in the same directory, is fsync'ed and then renamed over the target (``os.replace``), so a
crash never leaves a half-written file under a checkpoint name.

Rotation keeps the ``keep`` newest checkpoints that are *verified* (written by this process, or read back once
with ``load_checkpoint``): a corrupt file never counts as one of them, whatever its step, so it can never push a
good checkpoint out. A corrupt checkpoint newer than the ones kept is moved aside (``ckpt-<step>.pt.corrupt``) with
a one-line warning, never deleted.
"""
from __future__ import annotations

import io
import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from .io import atomic_write

CKPT_RE = re.compile(r"^ckpt-(\d{8})\.pt$")
REQUIRED_KEYS = ("step", "model", "ema", "optimizer", "rng", "config")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, not a gclib checkpoint, or from another configuration."""


def ckpt_path(directory, step: int) -> Path:
    return Path(directory) / f"ckpt-{step:08d}.pt"


def list_checkpoints(directory) -> list[Path]:
    """Checkpoint files in ``directory``, newest (highest step) first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    files = [p for p in d.iterdir() if CKPT_RE.match(p.name)]
    return sorted(files, key=lambda p: int(CKPT_RE.match(p.name).group(1)), reverse=True)


_VERIFIED: set = set()   # (path, size, mtime_ns) of checkpoint files known to be whole in this process


def _identity(path: Path):
    st = path.stat()
    return (str(Path(path).absolute()), st.st_size, st.st_mtime_ns)


def _mark_verified(path: Path) -> None:
    try:
        _VERIFIED.add(_identity(path))
    except OSError:
        pass


def is_verified(path) -> bool:
    """Whether checkpoint ``path`` is whole: written by this process or loaded by it before (both remembered by
    file identity), else read back now with ``load_checkpoint``."""
    path = Path(path)
    try:
        if _identity(path) in _VERIFIED:
            return True
    except OSError:
        return False
    try:
        load_checkpoint(path)
    except Exception:  # noqa: BLE001 - any failure to read means "not whole"
        return False
    return True


def atomic_save(obj, path) -> Path:
    """Serialise in memory, then write to a temporary file next to ``path``, fsync, os.replace
    (``gclib.io.atomic_write``). Serialising first turns a full disk into the OSError (ENOSPC) of the write,
    not torch's opaque zip-writer error, and the previous checkpoints stay intact."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    out = atomic_write(path, lambda f: f.write(buf.getbuffer()))
    _mark_verified(out)
    return out


def load_checkpoint(path, map_location="cpu", mmap: bool = False) -> dict:
    """torch.load(weights_only=True) and check the expected keys; CheckpointError naming the file when it is
    missing, corrupt, truncated or not a gclib checkpoint. ``mmap``: the tensors are mapped, not read (a cheap look
    at the configuration; the file is not marked verified then)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, **({"mmap": True} if mmap else {}))
    except FileNotFoundError:  # removed between the check and the read: rotated away by its run, not corrupt
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist any more (removed while it was being "
                              f"read, e.g. rotated away by its run: keep_checkpoints); use a newer one") from None
    except Exception as e:  # noqa: BLE001 - zip, pickle and EOF errors all mean "unreadable"
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read "
                              f"({type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''})"
                              ) from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a gclib checkpoint (expected keys {', '.join(REQUIRED_KEYS)})")
    if not mmap:
        _mark_verified(path)
    return ckpt


def newest_valid(directory, map_location="cpu"):
    """(path, checkpoint) of the newest checkpoint that loads, or (None, None).

    A truncated or corrupt file is reported with a warning naming it, and the next older one is tried.
    """
    for p in list_checkpoints(directory):
        try:
            return p, load_checkpoint(p, map_location)
        except Exception as e:  # noqa: BLE001 - any failure to read means "not valid"
            warnings.warn(f"checkpoint {p} is corrupt or truncated ({type(e).__name__}: {e}); "
                          f"trying the next older one", RuntimeWarning, stacklevel=2)
    return None, None


def set_aside(path) -> Path:
    """Rename a corrupt checkpoint to ``<name>.corrupt`` (``.corrupt.1``, ... if taken) with a one-line
    warning; returns the new path. Nothing is deleted."""
    path = Path(path)
    target, k = path.with_name(path.name + ".corrupt"), 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.corrupt.{k}")
    os.replace(path, target)
    warnings.warn(f"checkpoint {path} is corrupt or truncated: moved aside to {target.name} (not counted among "
                  f"the kept checkpoints)", RuntimeWarning, stacklevel=3)
    return target


def rotate(directory, keep: int) -> None:
    """Keep the ``keep`` newest *verified* checkpoints (``is_verified``) and delete the older ones; a corrupt
    checkpoint newer than the last one kept is moved aside (``set_aside``), so it never pushes a good one out.
    (Temporary files of a killed writer are removed by the next owner of the run directory when it takes the run
    lock, never here: see ``gclib.rundir``.)"""
    good = 0
    for p in list_checkpoints(directory):
        if good >= keep:
            p.unlink(missing_ok=True)
        elif is_verified(p):
            good += 1
        elif p.exists():
            set_aside(p)


# ---------------------------------------------------------------------------------------------- RNG states
def rng_state(generator=None, device: torch.device | None = None) -> dict:
    """Every RNG state as weights_only-loadable data: the step's generator (a ``torch.Generator``) or streams
    (``gclib.rng.Streams``), torch CPU (and CUDA), numpy, python."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch_cpu": torch.get_rng_state(),
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "internal": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss_next": py_state[2]},
        "cuda": None,
        "generator": generator.get_state() if isinstance(generator, torch.Generator) else None,
        "streams": generator.state_dict() if hasattr(generator, "state_dict") else None,
    }
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_state(state: dict, generator=None, device: torch.device | None = None) -> None:
    """Inverse of ``rng_state``."""
    torch.set_rng_state(state["torch_cpu"].to(torch.uint8).cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
    if isinstance(generator, torch.Generator) and state.get("generator") is not None:
        generator.set_state(state["generator"].to(torch.uint8).cpu())
    elif hasattr(generator, "load_state_dict"):
        if state.get("streams") is None:
            raise KeyError("the checkpoint holds no RNG streams (written by an older gclib): start the run afresh")
        generator.load_state_dict(state["streams"])
    if device is not None and torch.device(device).type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8).cpu(), torch.device(device))


class preserve_rng:
    """Context manager: run a block (evaluation, sample grids) without disturbing any global RNG stream."""

    def __init__(self, device=None):
        self.device = device

    def __enter__(self):
        self.state = rng_state(None, self.device)

    def __exit__(self, *exc):
        set_rng_state(self.state, None, self.device)
        return False
