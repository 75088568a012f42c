"""Pictures of samples: an image grid for (B, C, H, W) in [-1, 1], a scatter plot for 2-D points.

Built on ``matplotlib.figure.Figure`` (no pyplot state, no backend change: safe inside a Jupyter kernel) and
torchvision's ``save_image``. Both are optional dependencies (extras ``notebooks`` / ``data``): without them the
picture is skipped with a warning, and training goes on.
"""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import torch

from .io import atomic_write


def save_samples(samples: torch.Tensor, path, data_ref: torch.Tensor | None = None) -> Path | None:
    """Write the picture of ``samples`` to ``path`` (PNG, atomically); returns the path, or None if skipped."""
    path = Path(path)
    samples = samples.detach().float().cpu()
    buf = io.BytesIO()
    try:
        if samples.ndim == 4:
            from torchvision.utils import save_image
            save_image((samples.clamp(-1, 1) + 1) / 2, buf, format="png",
                       nrow=max(1, int(math.ceil(math.sqrt(len(samples))))))
        else:
            _scatter(samples, data_ref, buf)
    except ImportError as e:
        warnings.warn(f"sample picture {path} skipped: {e.name} is not installed (pip install 'gclib[notebooks]')",
                      RuntimeWarning, stacklevel=2)
        return None
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def _scatter(samples: torch.Tensor, data_ref, buf) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    if data_ref is not None and data_ref.shape[-1] == 2:
        ax.scatter(*data_ref[:2000].float().T.numpy(), s=2, c="0.7", label="data")
    pts = samples.reshape(len(samples), -1)
    if pts.shape[1] >= 2:
        ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=3, c="C0", label="samples")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
