"""The device choice, written once: ``resolve_device("auto")`` is "cuda" when a GPU is visible, else "cpu".

Used by the command line, the training loop's process setup, the configuration's preflight, the Inception
feature extractors and the notebook drivers. Nothing hard-codes ``cuda:0``: an explicit device string other
than the three choices (e.g. ``cuda:1`` or a ``torch.device``) is the caller's and is not passed here.
"""
from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto", *, name: str = "device", error: type = ValueError) -> str:
    """"auto" -> "cuda" when CUDA is available, else "cpu"; "cpu" and "cuda" are returned as they are.

    Raises ``error`` (one line naming ``name``) for a value outside ``DEVICES`` and for "cuda" on a machine
    without CUDA."""
    if device not in DEVICES:
        raise error(f"{name}={device!r} is not valid; allowed values: {', '.join(map(repr, DEVICES))}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise error(f"{name}='cuda' but CUDA is not available; allowed values here: 'auto', 'cpu'")
    return device
