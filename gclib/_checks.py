"""Small argument checks shared by the package: one clear ValueError naming the parameter."""
from __future__ import annotations

from typing import Iterable

FLOWS = ("ic", "ot", "gc")
PREDICTORS = ("ema", "online")


def check_choice(name: str, value, allowed: Iterable) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not valid; allowed values: {', '.join(map(repr, allowed))}")


def check_flow(flow: str) -> str:
    check_choice("flow", flow, FLOWS)
    return flow


def check_mu(mu: float) -> float:
    try:
        mu = float(mu)
    except (TypeError, ValueError):
        raise ValueError(f"mu={mu!r} is not a number; mu is the probability of a GC sample, in [0, 1]") from None
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"mu={mu!r} is outside [0, 1]; mu is the probability of a GC sample")
    return mu


def check_sigma_range(sigma_min: float, sigma_max: float) -> None:
    if not (sigma_min > 0 and sigma_max > sigma_min):
        raise ValueError(
            f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}: need 0 < sigma_min < sigma_max"
        )


def check_same_shape(name_a: str, a, name_b: str, b) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; they must match")
