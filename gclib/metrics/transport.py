"""Transport costs of couplings between data and noise (docs/method.md section 6, Fig. 3, Lemma 1).

- ``coupling_cost(x, z)``: the cost of given pairs, (1/n) sum_k ||x_k - z_k||^2.
- ``minibatch_ot_cost(x, z, batch_size)``: the cost of the minibatch-OT coupling: the samples are cut into
  batches of ``batch_size``, each batch is matched exactly (``gclib.couplings.ot_permutation``), and the
  matched cost is averaged; its standard error is taken over batches.
- ``exact_ot_cost(x, y)``: W_2^2 between the two empirical measures (uniform weights), POT's network
  simplex ``ot.emd2`` on the float64 squared-Euclidean cost, convergence checked. This is the lower bound of
  every coupling's cost (between the two samples).
- ``transport_cost_curve(model, data, ts, n)``: c(t) = E||f(x + t z, t) - z||^2 with (x, z) independent; the
  cost of the GC coupling whose predictor f acts at level t (Fig. 3). t = 0 in the grid means "no
  predictor": c(0) = E||x - z||^2, the IC cost, exactly. (At t = sigma_min the model gives
  f(x + sigma_min z, sigma_min) = x + sigma_min z, so c(sigma_min) = E||x - (1 - sigma_min) z||^2, within
  O(sigma_min) of the IC cost.)
Every function takes numpy arrays or tensors of shape (n, ...) (rows are flattened) and returns floats or
a pandas DataFrame.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..couplings import OT_SOLVERS, ot_permutation
from ..precond import as_batch_sigma
from ._util import as_rows64, as_tensor, draw_data, eval_mode, mean_stderr, model_device_dtype, sq_norm_rows


def coupling_cost(x, z) -> float:
    """Mean squared distance of given pairs: (1/n) sum_k ||x_k - z_k||^2. x, z: (n, ...) -> float (float64 sum)."""
    xt, zt = as_tensor(x), as_tensor(z)
    if tuple(xt.shape) != tuple(zt.shape):
        raise ValueError(f"x has shape {tuple(xt.shape)} but z has shape {tuple(zt.shape)}; pairs must match")
    d = xt.to(torch.float64) - zt.to(device=xt.device, dtype=torch.float64)
    return float(sq_norm_rows(d).mean())


def minibatch_ot_cost(x, z, batch_size: int, solver: str = "emd", generator: torch.Generator | None = None,
                      num_iter_max: int = 1_000_000) -> dict:
    """Cost of the minibatch-OT coupling at a given batch size (docs/method.md section 5).

    x, z: (n, ...). Rows are cut into floor(n / batch_size) consecutive batches (after a random permutation of
    each when ``generator`` is given; the remainder is dropped, since a smaller batch has a different expected
    cost); each batch is matched exactly with ``ot_permutation`` (solver "emd" or "scipy").
    Returns dict(cost = mean over batches of (1/B) sum_k ||x_k - z_perm(k)||^2, stderr = std over batches /
    sqrt(n_batches), n_batches, batch_size, ic_cost = the same batches' unmatched cost).
    """
    if solver not in OT_SOLVERS:
        raise ValueError(f"solver={solver!r} is not valid; allowed values: {OT_SOLVERS}")
    xt, zt = as_tensor(x), as_tensor(z)
    if tuple(xt.shape) != tuple(zt.shape):
        raise ValueError(f"x has shape {tuple(xt.shape)} but z has shape {tuple(zt.shape)}; they must match")
    n = xt.shape[0]
    if int(batch_size) != batch_size or batch_size < 1 or batch_size > n:
        raise ValueError(f"batch_size={batch_size!r} must be an integer in [1, n={n}]")
    batch_size = int(batch_size)
    if generator is not None:
        xt = xt[torch.randperm(n, generator=generator).to(xt.device)]
        zt = zt[torch.randperm(n, generator=generator).to(zt.device)]
    costs, ic = [], []
    for b in range(n // batch_size):
        xb = xt[b * batch_size:(b + 1) * batch_size]
        zb = zt[b * batch_size:(b + 1) * batch_size]
        perm = ot_permutation(xb, zb, solver=solver, num_iter_max=num_iter_max).to(zb.device)
        costs.append(coupling_cost(xb, zb[perm]))
        ic.append(coupling_cost(xb, zb))
    c = torch.tensor(costs, dtype=torch.float64)
    se = float(c.std(unbiased=True) / math.sqrt(len(costs))) if len(costs) > 1 else float("nan")
    return dict(cost=float(c.mean()), stderr=se, n_batches=len(costs), batch_size=batch_size,
                ic_cost=float(np.mean(ic)))


@dataclass
class OTCost:
    """Result of ``exact_ot_cost``: cost = min over plans of sum_kl P_kl ||x_k - y_l||^2 (= W_2^2 of the two
    empirical measures); result_code and warning as POT reports them (1 / None = optimal); seconds = solver time."""
    cost: float
    converged: bool
    result_code: int
    warning: str | None
    n: int
    m: int
    seconds: float

    def __float__(self) -> float:
        return float(self.cost)


def exact_ot_cost(x, y, num_iter_max: int | None = None, on_fail: str = "raise",
                  max_pairs: int = 2 ** 28, y_weights=None) -> OTCost:
    """Exact OT cost between two samples with uniform weights (the lower bound of docs/method.md section 6).

    x: (n, ...), y: (m, ...) with the same trailing size, numpy or torch. cost = ot.emd2(1/n, 1/m, C) with
    C_kl = ||x_k - y_l||^2 in float64. ``num_iter_max`` defaults to max(1e6, 50 * n * m / 1000) iterations
    (>= 1e6 as docs/method.md asks for n >= 4096). Convergence is checked: if POT does not report an optimal
    solution, ``on_fail="raise"`` raises RuntimeError, ``"warn"`` warns and returns the (suboptimal) cost with
    converged=False. Memory is O(n m) (8 n m bytes for C); more than ``max_pairs`` pairs raises before any work.
    ``y_weights`` (m non-negative numbers, normalised here) replaces y's uniform weights: the OT cost to a
    measure on the rows of y with those masses (e.g. the distinct points of a data set with their counts).
    """
    import ot
    from scipy.spatial.distance import cdist

    if on_fail not in ("raise", "warn"):
        raise ValueError(f"on_fail={on_fail!r} is not valid; allowed values: 'raise', 'warn'")
    a, b = as_rows64(x), as_rows64(y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has {a.shape[1]} features per row but y has {b.shape[1]}; they must match")
    n, m = a.shape[0], b.shape[0]
    if n * m > max_pairs:
        raise ValueError(f"exact_ot_cost on {n} x {m} samples needs a {n}x{m} float64 cost matrix "
                         f"({8 * n * m / 2 ** 30:.1f} GiB) > max_pairs={max_pairs}; subsample or raise max_pairs")
    if num_iter_max is None:
        num_iter_max = max(1_000_000, 50 * n * m // 1000)
    cost = cdist(a, b, metric="sqeuclidean")  # sum_j (a_kj - b_lj)^2 directly: exact 0 for equal rows
    wa, wb = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    if y_weights is not None:
        wb = np.asarray(torch.as_tensor(y_weights).detach().cpu().to(torch.float64).numpy()).reshape(-1)
        if wb.shape != (m,) or not np.all(wb >= 0) or wb.sum() <= 0:
            raise ValueError(f"y_weights must be {m} non-negative numbers with a positive sum")
        wb = wb / wb.sum()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # POT warns on max-iter; we report it ourselves below
        val, log = ot.emd2(wa, wb, cost, numItermax=int(num_iter_max), log=True)
    seconds = time.perf_counter() - t0
    code = int(log.get("result_code", -1))
    res = OTCost(cost=float(val), converged=code == 1, result_code=code, warning=log.get("warning"), n=n, m=m,
                 seconds=seconds)
    if not res.converged:
        msg = (f"ot.emd2 did not reach an optimal solution on {n} x {m} samples (result_code={code}, "
               f"warning={res.warning!r}); raise num_iter_max (now {num_iter_max})")
        if on_fail == "raise":
            raise RuntimeError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return res


def transport_cost_curve(model, data, ts, n: int, batch_size: int = 4096, generator: torch.Generator | None = None,
                         seed: int = 0) -> pd.DataFrame:
    """c(t) = E_{x ~ data, z ~ N(0, I)} ||f(x + t z, t) - z||^2 for each t in ``ts`` (docs/method.md section 6, Fig. 3).

    model: f(x, sigma) (e.g. the EMA ``ConsistencyModel``; run in eval mode under no_grad, its mode restored).
    data: a tensor/array (n_data, ...) (rows drawn uniformly with replacement) or a sampler data(n, generator).
    ts: levels in {0} or [sigma_min, sigma_max]; t = 0 means x^ = x (the IC cost E||x - z||^2 exactly).
    The same n draws (x, z) are used at every t (common random numbers: differences between levels are
    much more precise than each stderr). Evaluated in chunks of ``batch_size`` on the model's device/dtype.
    Returns a DataFrame with columns t, cost, stderr (the standard error of the mean over the n draws).
    """
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    x = draw_data(data, n, g)
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    device, dtype = model_device_dtype(model, x.to(torch.float64) if not x.is_floating_point() else x)
    ts = [float(t) for t in np.asarray(ts, dtype=np.float64).reshape(-1)]
    smin = getattr(model, "sigma_min", None)
    rows = []
    with eval_mode(model), torch.no_grad():
        for t in ts:
            if t < 0 or (t > 0 and smin is not None and t < smin):
                raise ValueError(f"t={t} is outside {{0}} U [sigma_min={smin}, ...)")
            per = torch.empty(n, dtype=torch.float64)
            for a in range(0, n, batch_size):
                xb = x[a:a + batch_size].to(device=device, dtype=dtype)
                zb = z[a:a + batch_size].to(device=device, dtype=dtype)
                if t == 0.0:
                    xh = xb
                else:
                    xh = model(xb + t * zb, as_batch_sigma(t, xb))
                per[a:a + batch_size] = sq_norm_rows(xh.to(torch.float64) - zb.to(torch.float64)).cpu()
            c, se = mean_stderr(per)
            rows.append(dict(t=t, cost=c, stderr=se))
    return pd.DataFrame(rows, columns=["t", "cost", "stderr"])
