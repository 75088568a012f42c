"""Pictures of samples: an image grid for (B, C, H, W) in [-1, 1], a scatter plot for 2-D points.

``image_grid`` is the one grid builder (the training loop's sample PNGs and ``gclib.experiments.fid_curves``' sample
figure). Built on ``matplotlib.figure.Figure`` (no pyplot state, no backend change: safe inside a Jupyter kernel)
and Pillow's PNG writer. Both are optional dependencies (extras ``notebooks`` / ``data``): without them the
picture is skipped with a warning, and training goes on.
"""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import torch

from .io import atomic_write


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 0.0,
               rows: int | None = None, border: bool = True) -> torch.Tensor:
    """Tile images (B, C, H, W) into one (C, H', W') picture, row by row: ``nrow`` per row (default
    ceil(sqrt(B)), at most B), ``rows`` rows (default as many as the images fill), ``padding`` pixels of
    ``pad_value`` between tiles. ``border=True``: the padding also runs around the whole grid (torchvision's
    ``make_grid`` layout, pixel for pixel); ``border=False``: only after each tile (right of it and below it)."""
    if images.ndim != 4:
        raise ValueError(f"image_grid takes a (B, C, H, W) batch; got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    cols = min(nrow or max(1, math.ceil(math.sqrt(b))), max(b, 1))
    rows = rows or math.ceil(b / cols)
    lead = padding if border else 0
    grid = images.new_full((c, rows * (h + padding) + lead, cols * (w + padding) + lead), pad_value)
    for k in range(b):
        i, j = divmod(k, cols)
        top, left = lead + i * (h + padding), lead + j * (w + padding)
        grid[:, top:top + h, left:left + w] = images[k]
    return grid


def to_uint8(picture: torch.Tensor) -> torch.Tensor:
    """A (C, H, W) picture in [0, 1] as 8-bit values, rounded to nearest (as torchvision's save_image)."""
    return picture.mul(255).add_(0.5).clamp_(0, 255).to("cpu", torch.uint8)


def _png(grid: torch.Tensor, buf) -> None:
    """Write a (C, H, W) picture in [0, 1] as an 8-bit PNG (``to_uint8``)."""
    from PIL import Image
    Image.fromarray(to_uint8(grid).permute(1, 2, 0).numpy()).save(buf, format="png")


def grid_picture(samples: torch.Tensor) -> torch.Tensor:
    """The picture ``save_samples`` writes for images (B, C, H, W) in [-1, 1]: a (3, H', W') float tensor in [0, 1],
    ceil(sqrt(B)) columns, 2 black pixels between and around the tiles (a single image alone, no border)."""
    x = (samples.detach().float().cpu().clamp(-1, 1) + 1) / 2
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x[0] if len(x) == 1 else image_grid(x, padding=2, pad_value=0.0)


def upscale(picture: torch.Tensor, min_width: int = 256) -> torch.Tensor:
    """``picture`` (C, H, W) enlarged by the smallest whole factor that makes it at least ``min_width`` pixels wide,
    each pixel repeated (nearest neighbour, no blur), so that an 8x8 digit in a grid of 64 is 32 pixels wide."""
    factor = max(1, math.ceil(min_width / picture.shape[-1]))
    return picture.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1) if factor > 1 else picture


def save_samples(samples: torch.Tensor, path, data_ref: torch.Tensor | None = None) -> Path | None:
    """Write the picture of ``samples`` to ``path`` (PNG, atomically); returns the path, or None if skipped.
    Images (B, C, H, W): an ``image_grid`` of ceil(sqrt(B)) columns, 2 black pixels between and around the tiles
    (one channel shown as RGB gray; a single image alone, no border); other shapes: a scatter plot."""
    path = Path(path)
    samples = samples.detach().float().cpu()
    buf = io.BytesIO()
    try:
        if samples.ndim == 4:
            _png(grid_picture(samples), buf)
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
