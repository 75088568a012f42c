"""Noise schedules of improved consistency training (iCT; Song & Dhariwal 2023), docs/method.md section 2.

All grids are ascending 1-D float64 tensors ``sigmas`` of length N (N - 1 intervals); interval ``i`` is
the pair (sigmas[i], sigmas[i + 1]).
"""
from __future__ import annotations

import math

import torch

from .checks import check_sigma_range

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
SIGMA_DATA = 0.5
RHO = 7.0


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> torch.Tensor:
    """Karras grid, ascending: sigma_i = (smin^(1/rho) + i/(n-1) (smax^(1/rho) - smin^(1/rho)))^rho.

    Returns a float64 tensor of shape (n,) with sigmas[0] == sigma_min and sigmas[-1] == sigma_max exactly.
    """
    if int(n) != n or n < 2:
        raise ValueError(f"n={n!r}: a sigma grid needs an integer number of points >= 2")
    check_sigma_range(sigma_min, sigma_max)
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = (lo + i * (hi - lo)) ** rho
    sigmas[0], sigmas[-1] = sigma_min, sigma_max  # remove round-off at the ends
    return sigmas


def num_points(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT curriculum N(k): number of grid points (intervals + 1) at training step k of K.

    K' = floor(K / (log2(floor(s1 / s0)) + 1)),  N(k) = min(s0 * 2^floor(k / K'), s1) + 1.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r} must be >= 1")
    if not (1 <= s0 <= s1):
        raise ValueError(f"s0={s0!r}, s1={s1!r}: need 1 <= s0 <= s1")
    k_prime = max(1, math.floor(total_steps / (math.log2(math.floor(s1 / s0)) + 1)))
    return int(min(s0 * 2 ** (step // k_prime), s1)) + 1


def interval_probs(sigmas: torch.Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> torch.Tensor:
    """Lognormal interval probabilities, shape (N - 1,), float64, summing to 1.

    p(i) ∝ erf((log s_{i+1} - P_mean) / (sqrt(2) P_std)) - erf((log s_i - P_mean) / (sqrt(2) P_std)).
    """
    s = torch.as_tensor(sigmas, dtype=torch.float64)
    cdf = torch.erf((torch.log(s) - p_mean) / (math.sqrt(2.0) * p_std))
    p = cdf[1:] - cdf[:-1]
    return p / p.sum()


def sample_intervals(sigmas: torch.Tensor, batch: int, generator: torch.Generator | None = None,
                     p_mean: float = -1.1, p_std: float = 2.0) -> torch.Tensor:
    """Draw ``batch`` interval indices i in {0..N-2} (int64, shape (batch,)) from ``interval_probs``."""
    p = interval_probs(sigmas, p_mean, p_std)
    return torch.multinomial(p, batch, replacement=True, generator=generator)


def loss_weights(sigmas: torch.Tensor) -> torch.Tensor:
    """lambda_i = 1 / (sigma_{i+1} - sigma_i), shape (N - 1,), float64."""
    s = torch.as_tensor(sigmas, dtype=torch.float64)
    return 1.0 / (s[1:] - s[:-1])


def ema_decay(step: int, max_decay: float = 0.9999, power: float = 2.0 / 3.0) -> float:
    """EMA decay with warm-up: min(1 - (1 + k)^(-power), max_decay)."""
    return float(min(1.0 - (1.0 + step) ** (-power), max_decay))


ECT_R_CLIPS = ("zero", "sigma_min")


def ect_stage(step: int, total_steps: int, stages: int = 8) -> int:
    """ECT's stage at 0-based step k of K: a = floor(k / (K / stages)) = floor(stages k / K), in [0, stages - 1]
    (integer arithmetic, so stage boundaries are exact)."""
    return min(int(stages * step // max(total_steps, 1)), stages - 1)


def ect_pairs(batch: int, step: int, total_steps: int, generator: torch.Generator | None = None,
              sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, p_mean: float = -1.1, p_std: float = 2.0,
              q: float = 2.0, stages: int = 8, k: float = 8.0, b: float = 1.0, stage_offset: int = 1,
              r_floor: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous-time pairs of easy consistency tuning (ECT; Geng et al. 2024): (r, t), each (batch,) float64.

    t ~ LogNormal(p_mean, p_std) clipped to [2 sigma_min, sigma_max] (gclib; ECT leaves t unclipped) and, at stage
    a = ``ect_stage(step, total_steps, stages)``,
        r = t (1 - n(t) / q^(a + stage_offset)),   n(t) = 1 + k sigmoid(-b t),   r clipped below at ``r_floor``.
    Defaults are ECT's: stage_offset = 1 (the gap t - r = t n(t) / q^(a+1) already at stage 0) and r_floor = 0,
    where r <= 0 becomes 0 and the target there is the data itself (f(x, 0) = x; ``gclib.step.step_loss`` applies
    it). gclib's earlier choice, stage_offset = 0 and r_floor = sigma_min, made stage 0 pure denoising (r =
    sigma_min for every t) and kept every later stage one behind ECT's. The loss weight is 1 / (t - r).
    """
    a = ect_stage(step, total_steps, stages)
    z = torch.randn(batch, generator=generator, dtype=torch.float64)
    t = torch.exp(p_mean + p_std * z).clamp(2 * sigma_min, sigma_max)
    n = 1.0 + k * torch.sigmoid(-b * t)
    r = (t * (1.0 - n / q ** (a + stage_offset))).clamp(min=r_floor)
    return r, t


def denoising_sigmas(batch: int, generator: torch.Generator | None = None, sigma_min: float = SIGMA_MIN,
                     sigma_max: float = SIGMA_MAX, p_mean: float = -1.1, p_std: float = 2.0) -> torch.Tensor:
    """Noise levels of denoising (diffusion) pre-training: LogNormal(p_mean, p_std) clipped to [sigma_min,
    sigma_max] (EDM's training distribution), (batch,) float64."""
    z = torch.randn(batch, generator=generator, dtype=torch.float64)
    return torch.exp(p_mean + p_std * z).clamp(sigma_min, sigma_max)


def denoising_weights(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """EDM's loss weight (sigma^2 + sigma_data^2) / (sigma sigma_data)^2: unit effective weight per level."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
