"""Sample quality by optimal transport: exact W2 (POT) and the sliced Wasserstein distance.

W_2(mu, nu)^2 = min_P sum_kl P_kl ||x_k - y_l||^2 over plans with uniform marginals (1/n, 1/m).
SW_2(mu, nu)^2 = E_{theta ~ U(S^{d-1})} W_2^2(theta#mu, theta#nu), estimated with ``n_projections`` random
directions (POT computes each 1-D W_2^2 exactly from the sorted projections).
"""
from __future__ import annotations

import numpy as np
import torch

from ._util import as_rows64
from .transport import exact_ot_cost


def w2_exact(x, y, num_iter_max: int | None = None) -> float:
    """Exact W_2 between the empirical measures of x (n, ...) and y (m, ...): sqrt(ot.emd2) on the float64
    squared-Euclidean cost (convergence checked, see ``exact_ot_cost``). Returns a float."""
    return float(exact_ot_cost(x, y, num_iter_max=num_iter_max).cost) ** 0.5


def sliced_wasserstein(x, y, n_projections: int = 128, generator: torch.Generator | None = None, seed: int = 0,
                       projections=None) -> float:
    """Sliced W_2 between samples x (n, ...) and y (m, ...): sqrt of the mean over directions theta of the
    exact 1-D W_2^2 of the projections <x, theta>, <y, theta> (POT's ``ot.sliced_wasserstein_distance``, p = 2,
    uniform weights, float64).

    Directions are Gaussian vectors normalised to the unit sphere, drawn from ``generator`` (or ``seed``) so that
    results are reproducible with torch's generators; or pass ``projections`` (d, P) columns (normalised here).
    """
    import ot
    a, b = as_rows64(x), as_rows64(y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has {a.shape[1]} features per row but y has {b.shape[1]}; they must match")
    d = a.shape[1]
    if projections is None:
        if n_projections < 1:
            raise ValueError(f"n_projections={n_projections!r} must be >= 1")
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        theta = torch.randn(d, n_projections, generator=g, dtype=torch.float64).numpy()
    else:
        theta = as_rows64(projections)
        if theta.shape[0] != d:
            raise ValueError(f"projections must have shape ({d}, P); got {tuple(theta.shape)}")
    theta = theta / np.linalg.norm(theta, axis=0, keepdims=True)
    return float(ot.sliced_wasserstein_distance(a, b, p=2, projections=theta))
