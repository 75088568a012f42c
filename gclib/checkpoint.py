"""Checkpoints: atomic writes, rotation, newest-valid lookup, and every RNG state as plain data.

A checkpoint is a dict of tensors and plain containers saved with ``torch.save`` and read back with
``torch.load(weights_only=True)`` (data, never code). Files are ``<dir>/ckpt-<step:08d>.pt``; a write goes to a
temporary file in the same directory, is fsync'ed and then renamed over the target (``os.replace``), so a
crash never leaves a half-written file under a checkpoint name.
"""
from __future__ import annotations

import io
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


def atomic_save(obj, path) -> Path:
    """Serialise in memory, then write to a temporary file next to ``path``, fsync, os.replace
    (``gclib.io.atomic_write``). Serialising first turns a full disk into the OSError (ENOSPC) of the write,
    not torch's opaque zip-writer error, and the previous checkpoints stay intact."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write(path, lambda f: f.write(buf.getbuffer()))


def load_checkpoint(path, map_location="cpu") -> dict:
    """torch.load(weights_only=True) and check the expected keys; CheckpointError naming the file when it is
    missing, corrupt, truncated or not a gclib checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip, pickle and EOF errors all mean "unreadable"
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read "
                              f"({type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''})"
                              ) from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a gclib checkpoint (expected keys {', '.join(REQUIRED_KEYS)})")
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


def rotate(directory, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints. (Temporary files of a killed writer are removed by the
    next owner of the run directory when it takes the run lock, never here: see ``gclib.rundir``.)"""
    for p in list_checkpoints(directory)[keep:]:
        p.unlink(missing_ok=True)


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
