"""Kernel Inception Distance (KID) on any features: the unbiased MMD^2 with the cubic polynomial kernel.

k(x, y) = (x . y / F + 1)^3 for features of dimension F. On subsets of m rows of each set,

    MMD^2_u = sum_{i != j} k(a_i, a_j) / (m (m - 1)) + sum_{i != j} k(b_i, b_j) / (m (m - 1))
              - 2 sum_{i, j} k(a_i, b_j) / m^2,

an unbiased estimate of the population MMD^2 (Binkowski et al. 2018, "Demystifying MMD GANs"); KID is its mean
over ``subsets`` random subsets (std reported beside it). Unlike FID it has no bias from the number of samples.
"""
from __future__ import annotations

import torch


def polynomial_kernel(a: torch.Tensor, b: torch.Tensor, degree: int = 3) -> torch.Tensor:
    """(a b^T / F + 1)^degree, (n, m), in float64."""
    return (a.double() @ b.double().T / a.shape[1] + 1.0) ** degree


def mmd2_unbiased(a: torch.Tensor, b: torch.Tensor, degree: int = 3) -> float:
    """Unbiased MMD^2 between the rows of a (m, F) and b (n, F) with the polynomial kernel."""
    m, n = len(a), len(b)
    if m < 2 or n < 2:
        raise ValueError(f"MMD^2 needs at least 2 rows per set; got {m} and {n}")
    kaa, kbb, kab = polynomial_kernel(a, a, degree), polynomial_kernel(b, b, degree), polynomial_kernel(a, b, degree)
    return float((kaa.sum() - kaa.diagonal().sum()) / (m * (m - 1)) + (kbb.sum() - kbb.diagonal().sum()) / (n * (n - 1))
                 - 2.0 * kab.mean())


def kid(features_a: torch.Tensor, features_b: torch.Tensor, subsets: int = 50, subset_size: int = 1000,
        seed: int = 0, degree: int = 3) -> dict:
    """{"mean", "std"} of the unbiased MMD^2 over ``subsets`` random subsets of min(subset_size, len(a), len(b))
    rows drawn without replacement from each set (seeded)."""
    a, b = torch.as_tensor(features_a).double(), torch.as_tensor(features_b).double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"kid needs two (n, F) feature sets with the same F; got {tuple(a.shape)} and {tuple(b.shape)}")
    m = min(int(subset_size), len(a), len(b))
    g = torch.Generator().manual_seed(int(seed))
    vals = torch.tensor([mmd2_unbiased(a[torch.randperm(len(a), generator=g)[:m]],
                                       b[torch.randperm(len(b), generator=g)[:m]], degree) for _ in range(int(subsets))])
    return {"mean": float(vals.mean()), "std": float(vals.std()) if len(vals) > 1 else 0.0}
