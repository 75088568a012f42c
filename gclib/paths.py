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
from .couplings import couple
from .exact import flow_map, velocity


def exact_generator(data: torch.Tensor, n_steps: int = 64):
    """The exact consistency function of the point set, usable as a GC predictor f(x, sigma)."""
    return lambda x, sigma: flow_map(x, data, sigma, n_steps=n_steps)


def coupled_endpoints(flow: str, x0: torch.Tensor, z: torch.Tensor, data: torch.Tensor, t_pred: float = 1.0,
                      predictor=None, ot_batch: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
    """Endpoints paired with z (B, d) under ``flow``: x0 for IC; x0 re-matched to z by exact minibatch OT in
    batches of ``ot_batch`` (row k of the result is the endpoint matched to z_k); or, for GC (mu = 1), the
    endpoint x^ = predictor(x0 + t_pred z, t_pred), by default the exact generator of ``data``."""
    check_flow(flow)
    if flow == "ot":
        if ot_batch < 1:
            raise ValueError(f"ot_batch={ot_batch} must be >= 1")
        return torch.cat([couple("ot", z[a:a + ot_batch], x0[a:a + ot_batch]).z
                          for a in range(0, x0.shape[0], ot_batch)])
    sigma = torch.full((x0.shape[0],), float(t_pred), dtype=x0.dtype)
    pred = predictor or exact_generator(data)
    return couple(flow, x0, z, sigma=sigma, mu=1.0, predictor=pred, generator=generator).x


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
