"""Distances and the ONE consistency loss (docs/method.md sections 2-4).

A consistency step compares the model at the two ends of an interval (sigma_i, sigma_{i+1}):
    lambda_i * D( sg f(x_lo, sigma_i), f(x_hi, sigma_{i+1}) ).
CT, CD and GC differ only in where the points (x_lo, x_hi) come from:
- CT (``ct_points``): x_lo = x + sigma_i z, x_hi = x + sigma_{i+1} z (the same z);
- GC: ``ct_points`` applied to the GC endpoint x^ (from ``gclib.couplings``);
- CD (``cd_points``): x_hi = x + sigma_{i+1} z and x_lo = x_hi + (sigma_i - sigma_{i+1}) v(x_hi, sigma_{i+1}),
  one Euler step of an exact (``gclib.exact.velocity``) or teacher velocity.
The target is the ONLINE network under stop-grad, evaluated with the student's dropout mask.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable

import torch

from .checks import check_choice, check_same_shape
from .precond import pad_dims

DISTANCES = ("pseudo_huber", "l2", "l2_norm")
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _flat_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    check_same_shape("a", a, "b", b)
    return (a - b).reshape(a.shape[0], -1).pow(2).sum(1)


def pseudo_huber_c(dim: int) -> float:
    """c = 0.00054 sqrt(d) (0.0299 for 3x32x32)."""
    return 0.00054 * math.sqrt(dim)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float | None = None) -> torch.Tensor:
    """sqrt(||a - b||^2 + c^2) - c per sample over the whole flattened sample: (B, ...) -> (B,)."""
    if c is None:
        c = pseudo_huber_c(a[0].numel())
    return torch.sqrt(_flat_sq(a, b) + c * c) - c


def squared_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a - b||^2 per sample (summed, not averaged over dimensions): (B, ...) -> (B,)."""
    return _flat_sq(a, b)


def l2_norm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a - b||_2 per sample over the whole flattened sample (pseudo-Huber with c = 0; ECT's distance):
    (B, ...) -> (B,). Its gradient at a == b is 0 (not NaN)."""
    check_same_shape("a", a, "b", b)
    return torch.linalg.vector_norm((a - b).reshape(a.shape[0], -1), dim=1)


def get_distance(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    check_choice("distance", name, DISTANCES)
    return {"pseudo_huber": pseudo_huber, "l2": squared_l2, "l2_norm": l2_norm}[name]


def ct_points(x: torch.Tensor, z: torch.Tensor, sigma_lo: torch.Tensor, sigma_hi: torch.Tensor):
    """(x + sigma_lo z, x + sigma_hi z) with per-row sigmas (B,)."""
    return x + pad_dims(sigma_lo, x) * z, x + pad_dims(sigma_hi, x) * z


def cd_points(x: torch.Tensor, z: torch.Tensor, sigma_lo: torch.Tensor, sigma_hi: torch.Tensor, velocity: Velocity):
    """(x_hi + (sigma_lo - sigma_hi) v(x_hi, sigma_hi), x_hi) with x_hi = x + sigma_hi z."""
    x_hi = x + pad_dims(sigma_hi, x) * z
    with torch.no_grad():
        v = velocity(x_hi, sigma_hi)
    return x_hi + pad_dims(sigma_lo - sigma_hi, x) * v, x_hi


@contextmanager
def same_rng(device: torch.device):
    """Run a block, then restore the RNG as it was before it, so the next block draws the same numbers
    (the same dropout mask). Covers the CPU generator and, on CUDA, the device's generator."""
    device = torch.device(device)
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)


def consistency_loss(model: Callable, x_lo: torch.Tensor, x_hi: torch.Tensor, sigma_lo: torch.Tensor,
                     sigma_hi: torch.Tensor, weight: torch.Tensor, distance: str | Callable = "pseudo_huber",
                     reduce: bool = True) -> torch.Tensor:
    """lambda_i D(sg f(x_lo, sigma_lo), f(x_hi, sigma_hi)), averaged over the batch (or per row if not reduce).

    The stop-grad target is the same online ``model``; it runs first and the RNG is rewound so the student
    pass draws the same dropout mask. x_lo, x_hi: (B, ...); sigma_lo, sigma_hi, weight: (B,).
    """
    dist = get_distance(distance) if isinstance(distance, str) else distance
    with same_rng(x_hi.device), torch.no_grad():
        target = model(x_lo, sigma_lo)
    pred = model(x_hi, sigma_hi)
    per_row = weight.to(pred.dtype) * dist(pred, target.detach())
    return per_row.mean() if reduce else per_row
