"""Sample quality by optimal transport: exact W2 (POT) and the sliced Wasserstein distance.

W_2(mu, nu)^2 = min_P sum_kl P_kl ||x_k - y_l||^2 over plans with uniform marginals (1/n, 1/m).
SW_2(mu, nu)^2 = E_{theta ~ U(S^{d-1})} W_2^2(theta#mu, theta#nu), estimated with ``n_projections`` random
directions; in 1-D, W_2^2 between empirical measures is the integral over u in (0, 1) of
(F^-1(u) - G^-1(u))^2, computed exactly from the sorted samples (a merge of the two quantile step functions).
"""
from __future__ import annotations

import torch

from ._util import as_rows64, as_tensor
from .transport import exact_ot_cost


def w2_exact(x, y, num_iter_max: int | None = None) -> float:
    """Exact W_2 between the empirical measures of x (n, ...) and y (m, ...): sqrt(ot.emd2) on the float64
    squared-Euclidean cost (convergence checked, see ``exact_ot_cost``). Returns a float."""
    return float(exact_ot_cost(x, y, num_iter_max=num_iter_max).cost) ** 0.5


def _w2sq_1d_sorted(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact W_2^2 between 1-D empirical measures, columnwise. a: (n, P) sorted, b: (m, P) sorted -> (P,)."""
    n, m = a.shape[0], b.shape[0]
    if n == m:
        return (a - b).pow(2).mean(0)
    # Breakpoints of both quantile functions on (0, 1): u = k/n and l/m; on each piece both are constant.
    u = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n, torch.arange(1, m + 1, dtype=torch.float64) / m])
    u = torch.unique(u.clamp(max=1.0))  # sorted
    lo = torch.cat([torch.zeros(1, dtype=torch.float64), u[:-1]])
    mid = (lo + u) / 2
    w = (u - lo).to(a.device)
    ia = torch.clamp((mid * n).floor().long(), max=n - 1).to(a.device)
    ib = torch.clamp((mid * m).floor().long(), max=m - 1).to(a.device)
    return ((a[ia] - b[ib]).pow(2) * w[:, None]).sum(0)


def sliced_wasserstein(x, y, n_projections: int = 128, generator: torch.Generator | None = None, seed: int = 0,
                       projections=None, chunk: int = 64) -> float:
    """Sliced W_2 between samples x (n, ...) and y (m, ...): sqrt of the mean over directions theta of the
    exact 1-D W_2^2 of the projections <x, theta>, <y, theta>.

    Directions are Gaussian vectors normalised to the unit sphere, drawn from ``generator`` (or ``seed``);
    or pass ``projections`` (d, P) columns (normalised here). Float64, on x's device, ``chunk`` directions at once.
    """
    xt = as_tensor(x)
    dev = xt.device
    a = torch.from_numpy(as_rows64(x)).to(dev)
    b = torch.from_numpy(as_rows64(y)).to(dev)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has {a.shape[1]} features per row but y has {b.shape[1]}; they must match")
    d = a.shape[1]
    if projections is None:
        if n_projections < 1:
            raise ValueError(f"n_projections={n_projections!r} must be >= 1")
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        theta = torch.randn(d, n_projections, generator=g, dtype=torch.float64)
    else:
        theta = torch.as_tensor(as_rows64(projections))
        if theta.shape[0] != d:
            raise ValueError(f"projections must have shape ({d}, P); got {tuple(theta.shape)}")
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(dev)
    total = torch.zeros((), dtype=torch.float64, device=dev)
    for c in range(0, theta.shape[1], chunk):
        th = theta[:, c:c + chunk]
        pa = torch.sort(a @ th, dim=0).values
        pb = torch.sort(b @ th, dim=0).values
        total = total + _w2sq_1d_sorted(pa, pb).sum()
    return float(total / theta.shape[1]) ** 0.5
