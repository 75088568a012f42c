"""Small helpers shared by the metrics: input conversion and Monte Carlo summaries (no state)."""
from __future__ import annotations

import math


import numpy as np
import torch


def as_tensor(x, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """numpy array / list / tensor -> tensor (a tensor keeps its device unless ``device`` is given)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        t = torch.as_tensor(np.asarray(x))
    if dtype is not None or device is not None:
        t = t.to(device=device if device is not None else t.device, dtype=dtype if dtype is not None else t.dtype)
    return t


def as_rows64(x) -> np.ndarray:
    """(n, ...) array/tensor -> C-contiguous float64 numpy array (n, d) of flattened rows."""
    t = as_tensor(x)
    if t.ndim == 0:
        raise ValueError("expected samples of shape (n, ...), got a scalar")
    if t.ndim == 1:
        t = t[:, None]
    return np.ascontiguousarray(t.reshape(t.shape[0], -1).to("cpu", torch.float64).numpy())


def mean_stderr(values: torch.Tensor) -> tuple[float, float]:
    """(mean, standard error of the mean) of a 1-D tensor of i.i.d. per-sample values, in float64."""
    v = values.detach().to(torch.float64).reshape(-1)
    n = v.numel()
    if n == 0:
        raise ValueError("no samples")
    se = float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return float(v.mean()), se


def sq_norm_rows(a: torch.Tensor) -> torch.Tensor:
    """||a_k||^2 over all non-batch dimensions: (B, ...) -> (B,)."""
    return a.reshape(a.shape[0], -1).pow(2).sum(1)


def model_device_dtype(model, fallback: torch.Tensor):
    """Device and floating dtype of a module's first parameter, else those of ``fallback``."""
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device, p.dtype
    return fallback.device, fallback.dtype


class eval_mode:
    """Context manager: put an nn.Module in eval mode, restore its previous mode on exit (no-op otherwise)."""

    def __init__(self, model):
        self.model = model if isinstance(model, torch.nn.Module) else None

    def __enter__(self):
        if self.model is not None:
            self.was_training = self.model.training
            self.model.eval()
        return self.model

    def __exit__(self, *exc):
        if self.model is not None:
            self.model.train(self.was_training)
        return False


def draw_data(data, n: int, generator: torch.Generator) -> torch.Tensor:
    """n data rows: ``data`` is a tensor/array (rows drawn uniformly with replacement) or a sampler
    ``data(n, generator) -> (n, ...)``."""
    if callable(data) and not isinstance(data, (torch.Tensor, np.ndarray)):
        out = data(n, generator)
        out = as_tensor(out)
        if out.shape[0] != n:
            raise ValueError(f"data sampler returned {out.shape[0]} rows; asked for {n}")
        return out
    d = as_tensor(data)
    idx = torch.randint(0, d.shape[0], (n,), generator=generator)
    return d[idx.to(d.device)]
