"""One-step and multistep consistency sampling, one signature (docs/method.md section 2).

``sample(model, noise, sigmas)``: x = f(sigmas[0] * z_0, sigmas[0]); then for each further sigma s,
re-noise x + sqrt(s^2 - sigma_min^2) z_j and denoise with f(., s). One step is ``sigmas=(sigma_max,)``.
Fresh noise comes from ``generator`` (explicit seeds).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .schedules import SIGMA_MAX, SIGMA_MIN


@torch.no_grad()
def sample(model, noise: torch.Tensor, sigmas: Sequence[float] = (SIGMA_MAX,), sigma_min: float = SIGMA_MIN,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Consistency sampling from standard-normal ``noise`` (B, ...) through decreasing ``sigmas``."""
    sigmas = [float(s) for s in sigmas]
    if not sigmas or any(b >= a for a, b in zip(sigmas, sigmas[1:])) or sigmas[-1] <= sigma_min:
        raise ValueError(f"sigmas={sigmas}: need a non-empty strictly decreasing list above sigma_min={sigma_min}")
    x = model(sigmas[0] * noise, sigmas[0])
    for s in sigmas[1:]:
        z = torch.randn(noise.shape, generator=generator, device=noise.device, dtype=noise.dtype)
        x = model(x + math.sqrt(s * s - sigma_min * sigma_min) * z, s)
    return x


def one_step(model, noise: torch.Tensor, sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    """x = f(sigma_max z, sigma_max)."""
    return sample(model, noise, (sigma_max,))
