"""The flows: which (endpoint, noise) pairs a consistency step trains on (docs/method.md sections 4-5).

``couple(flow, x, z, ...)`` returns a ``Coupling``: the endpoint ``x`` and noise ``z`` to build the pair
(x + sigma_i z, x + sigma_{i+1} z) from, and the mask of GC rows. The loss never knows which flow made it.

- "ic": independent coupling, (x, z) as drawn (standard consistency training).
- "ot": exact minibatch optimal transport on the squared Euclidean cost: the noise is permuted so that the
  pairing (x_k, z_perm(k)) solves the assignment problem. Always a permutation, never a resampling.
- "gc": generator-augmented coupling. Each row is a GC row with probability mu (independent Bernoulli);
  for those rows the endpoint is replaced by x^ = sg f_pred(x + sigma_i z, sigma_i), predicted at the LOWER
  level of the pair, and the SAME z is kept. The predictor runs only on the GC rows (unless
  ``predict_all=True``, the authors' whole-batch variant, kept for benchmarks). A GC row whose lower level is 0
  (ECT's pairs with r = 0) keeps its data endpoint: the predictor at level 0 is the identity, f(x, 0) = x.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .checks import check_choice, check_flow, check_mu, check_same_shape
from .precond import pad_dims

Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OT_SOLVERS = ("auto", "emd", "scipy")
# solver="auto": scipy's linear_sum_assignment below this batch size, POT's ot.emd from it on. Measured on an idle
# 2-core CPU (benchmarks/ot_scaling.py, results/bench/ot_scaling.json): scipy wins below ~128-256 rows; ot.emd
# wins from 128 (d = 2), 512 (d = 64) and 1024 (d = 3072) rows on, by 2-9x at 1024-2048 rows in 2-D. Between
# 256 and 1024 rows in high dimension the two differ by at most a few milliseconds either way.
OT_AUTO_EMD_MIN_N = 512
OT_AUTO_EMD_MIN_N_LOW_DIM = 128   # for d <= OT_AUTO_LOW_DIM (2-D toys: 2.3x faster at 256 rows)
OT_AUTO_LOW_DIM = 16


def resolve_ot_solver(solver: str, n: int, d: int | None = None) -> str:
    """The exact solver ``ot_permutation`` uses for a batch of n rows of dimension d: "emd" or "scipy"
    ("auto" picks by n and d)."""
    check_choice("ot_solver", solver, OT_SOLVERS)
    if solver == "auto":
        low_dim = d is not None and d <= OT_AUTO_LOW_DIM
        return "emd" if n >= (OT_AUTO_EMD_MIN_N_LOW_DIM if low_dim else OT_AUTO_EMD_MIN_N) else "scipy"
    return solver


@dataclass
class Coupling:
    """x: endpoints (B, ...); z: noise (B, ...); gc_mask: bool (B,), True where x is a GC endpoint."""
    x: torch.Tensor
    z: torch.Tensor
    gc_mask: torch.Tensor


def ot_permutation(x: torch.Tensor, z: torch.Tensor, solver: str = "auto", num_iter_max: int = 1_000_000) -> torch.Tensor:
    """Permutation ``perm`` (int64, (B,)) minimising sum_k ||x_k - z_perm(k)||^2 exactly.

    solver="emd": POT's network simplex on uniform weights in float64 (convergence checked);
    solver="scipy": scipy.optimize.linear_sum_assignment; solver="auto" (default): the faster of the two for
    this batch size (``resolve_ot_solver``). All are exact, and the result is checked to be a permutation.
    """
    check_choice("ot_solver", solver, OT_SOLVERS)
    check_same_shape("x", x, "z", z)
    n = x.shape[0]
    solver = resolve_ot_solver(solver, n, x[0].numel() if n else None)
    xf = x.detach().reshape(n, -1).to("cpu", torch.float64)
    zf = z.detach().reshape(n, -1).to("cpu", torch.float64)
    cost = torch.cdist(xf, zf).pow_(2).numpy()
    if solver == "scipy":
        from scipy.optimize import linear_sum_assignment
        rows, cols = linear_sum_assignment(cost)
        perm = np.empty(n, dtype=np.int64)
        perm[rows] = cols
        if len(rows) != n or not (np.bincount(cols, minlength=n) == 1).all():
            raise RuntimeError("linear_sum_assignment returned an assignment that is not a permutation")
    else:
        import ot
        w = np.full(n, 1.0 / n)
        plan, log = ot.emd(w, w, cost, numItermax=num_iter_max, log=True)
        if log.get("result_code", 1) != 1:
            raise RuntimeError(f"ot.emd did not converge on a batch of {n} ({log.get('warning')}); "
                               f"raise num_iter_max (now {num_iter_max}) or use solver='scipy'")
        perm = plan.argmax(axis=1)
        if not (np.bincount(perm, minlength=n) == 1).all():  # an optimal vertex of the Birkhoff polytope
            raise RuntimeError("ot.emd returned a plan that is not a permutation")
    return torch.from_numpy(perm).to(x.device)


def gc_mask(batch: int, mu: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Bernoulli(mu) mask of GC rows, bool (batch,). mu = 0 gives all False and mu = 1 all True exactly."""
    mu = check_mu(mu)
    u = torch.rand(batch, generator=generator, device=generator.device if generator is not None else "cpu")
    return (u < mu).to(device)


def couple(flow: str, x: torch.Tensor, z: torch.Tensor, *, sigma: torch.Tensor | None = None, mu: float = 0.5,
           predictor: Predictor | None = None, generator: torch.Generator | None = None,
           ot_solver: str = "auto", predict_all: bool = False, ot_perm: torch.Tensor | None = None) -> Coupling:
    """Couple a data batch x (B, ...) with noise z (B, ...) according to ``flow`` in {"ic", "ot", "gc"}.

    For "gc": ``sigma`` (B,) is the lower level sigma_i of each row's pair, ``mu`` the probability of a GC row,
    ``predictor(x_noisy, sigma) -> x^`` the endpoint predictor (EMA, online or frozen model; run under
    no_grad here), ``generator`` drives the Bernoulli draws.
    For "ot": ``ot_solver`` in {"auto", "emd", "scipy"} (all exact; "auto" picks the faster for the batch size);
    ``ot_perm`` (int64 (B,)), when given, is ``ot_permutation(x, z, ot_solver)`` solved ahead of time
    (``gclib.prefetch``) and is used instead of solving again.
    For "gc", rows with sigma == 0 keep x (f(x, 0) = x) and the predictor is not run on them.
    """
    check_flow(flow)
    check_same_shape("x", x, "z", z)
    no_gc = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    if flow == "ic":
        return Coupling(x, z, no_gc)
    if flow == "ot":
        perm = ot_permutation(x, z, ot_solver) if ot_perm is None else ot_perm.to(z.device)
        return Coupling(x, z[perm], no_gc)

    mu = check_mu(mu)
    if sigma is None or predictor is None:
        raise ValueError("flow='gc' needs sigma (the lower level of each pair, shape (B,)) and a predictor")
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma has shape {tuple(sigma.shape)}; expected ({x.shape[0]},)")
    mask = gc_mask(x.shape[0], mu, generator, x.device)
    live = mask & (sigma > 0)  # GC rows at level 0 keep x: f(x, 0) = x
    if not live.any():
        return Coupling(x, z, mask)
    with torch.no_grad():
        if predict_all:  # level-0 rows run at the smallest positive level; their output is not used
            s_in = sigma.clamp(min=torch.finfo(sigma.dtype).tiny)
            x_hat = predictor(x + pad_dims(sigma, x) * z, s_in)[live]
        else:
            xm, zm, sm = x[live], z[live], sigma[live]
            x_hat = predictor(xm + pad_dims(sm, xm) * zm, sm)
    x_new = x.clone()
    x_new[live] = x_hat.to(x.dtype)
    return Coupling(x_new, z, mask)
