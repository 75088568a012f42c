"""Sample paths of a coupling and how well they follow the PF-ODE velocity field (Fig. 1).

A coupling pairs an endpoint x0 with a noise z; its interpolation path is x_t = x0 + t z, whose direction
dx_t/dt = z is constant. The probability-flow ODE of the data moves along v_t(x) = E[z | x_t = x] instead.
For a finite point set v_t is exact (``gclib.exact``), so we can measure, along each coupling's paths,
- the alignment cos(z, v_t(x_t)) (1 = the path follows the field), and
- the squared deviation ||z - v_t(x_t)||^2 (for IC this is the gap proxy R~_t of docs/method.md section 3).
The "exact generator" of the GC coupling is the exact flow map of the point set, applied at level ``t_pred``.
"""
from __future__ import annotations

import pandas as pd
import torch

from .checks import check_flow
from .couplings import make_coupling
from .exact import flow_map, velocity


def exact_generator(data: torch.Tensor, n_steps: int = 64):
    """The exact consistency function of the point set, usable as a GC predictor f(x, sigma)."""
    return lambda x, sigma: flow_map(x, data, sigma, n_steps=n_steps)


def coupled_endpoints(flow: str, x0: torch.Tensor, z: torch.Tensor, data: torch.Tensor, t_pred: float = 1.0,
                      predictor=None, ot_batch: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
    """The endpoint paired with each noise row z_k (B, d) under the registered coupling ``flow``, built with
    mu = 1 (every row a GC row for GC): row k of the result is the endpoint the coupling pairs with z_k.

    A coupling that ``permutes_noise`` (OT) pairs minibatches of ``ot_batch`` rows and returns the noise rows in
    another order; the endpoints are then put back in the order of z (each returned noise row is found among z's
    rows, exactly), so a pairing that permutes the noise is measured as the pairs it makes, not as (x0, z). A
    coupling that ``needs_predictor`` (GC) predicts at level ``t_pred`` with ``predictor``, by default the exact
    generator of ``data``; its random draws come from ``generator``."""
    c = make_coupling(check_flow(flow), mu=1.0)
    if not c.permutes_noise:
        pred = (predictor or exact_generator(data)) if c.needs_predictor else None
        sigma = torch.full((x0.shape[0],), float(t_pred), dtype=x0.dtype)
        return c(x0, z, sigma=sigma, predictor=pred, generator=generator).x
    if ot_batch < 1:
        raise ValueError(f"ot_batch={ot_batch} must be >= 1")
    parts = []
    for a in range(0, x0.shape[0], ot_batch):
        xb, zb = x0[a:a + ot_batch], z[a:a + ot_batch]
        sigma = torch.full((xb.shape[0],), float(t_pred), dtype=xb.dtype)
        pairs = c(xb, zb, sigma=sigma, generator=generator)
        parts.append(in_noise_order(pairs.x, pairs.z, zb))
    return torch.cat(parts)


def in_noise_order(x: torch.Tensor, z_paired: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The endpoints ``x`` of pairs (x_k, z_paired_k) reordered so that row j is the endpoint paired with z_j,
    where ``z_paired`` holds z's rows in another order (each found exactly; ValueError otherwise)."""
    n = z.shape[0]
    where = torch.cdist(z_paired.reshape(n, -1).double(), z.reshape(n, -1).double()).argmin(1)
    if not (torch.equal(z[where], z_paired) and bool((torch.bincount(where, minlength=n) == 1).all())):
        raise ValueError("the coupling returned noise rows that are not a permutation of z's rows")
    out = torch.empty_like(x)
    out[where] = x
    return out


def path_alignment(endpoints: torch.Tensor, z: torch.Tensor, data: torch.Tensor, ts) -> pd.DataFrame:
    """Per level t: mean and standard error of cos(z, v_t(x0 + t z)) and of ||z - v_t(x0 + t z)||^2.

    endpoints, z: (B, d); data: (K, d); ts: iterable of levels > 0. Returns columns
    t, cos, cos_se, dev, dev_se.
    """
    rows = []
    for t in ts:
        x_t = endpoints + float(t) * z
        v = velocity(x_t, data, float(t))
        cos = torch.nn.functional.cosine_similarity(z, v, dim=1)
        dev = ((z - v) ** 2).sum(1)
        n = cos.numel()
        rows.append(dict(t=float(t), cos=cos.mean().item(), cos_se=(cos.std() / n ** 0.5).item(),
                         dev=dev.mean().item(), dev_se=(dev.std() / n ** 0.5).item()))
    return pd.DataFrame(rows)
