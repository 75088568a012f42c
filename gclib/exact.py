"""Exact quantities of a finite point set {x_k} (docs/method.md section 3).

For data uniform on K points, the ideal denoiser of x_t = x + t z is
D*(x, t) = sum_k w_k(x) x_k,  w = softmax_k(-||x - x_k||^2 / (2 t^2)),
the PF-ODE velocity is v_t(x) = (x - D*(x, t)) / t = E[z | x_t = x], and the exact flow map integrates
dx/dt = v_t(x) from t down to sigma_min. All functions work on flattened rows: x of shape (M, ...) with
data of shape (K, ...) and the same trailing shape.
"""
from __future__ import annotations

import torch

from .precond import as_batch_sigma, pad_dims
from .schedules import RHO, SIGMA_MIN


def ideal_denoiser(x: torch.Tensor, data: torch.Tensor, sigma, chunk_elems: int = 2 ** 22) -> torch.Tensor:
    """D*(x, sigma) for data uniform on ``data``. x: (M, ...), data: (K, ...), sigma: float or (M,) -> (M, ...).

    Streams over the data in chunks with a running log-sum-exp, so memory is O(M * chunk) whatever K is;
    ``chunk_elems`` bounds the number of (query, point) pairs held at once. Computed in float64.
    """
    if x.shape[1:] != data.shape[1:]:
        raise ValueError(f"x has sample shape {tuple(x.shape[1:])} but data has {tuple(data.shape[1:])}; they must match")
    out_dtype = x.dtype
    xq = x.reshape(x.shape[0], -1).to(torch.float64)
    pts = data.reshape(data.shape[0], -1).to(device=x.device, dtype=torch.float64)
    s = as_batch_sigma(sigma, xq)
    inv2s2 = 1.0 / (2.0 * s ** 2)  # (M,)
    m_rows, k = xq.shape[0], pts.shape[0]
    q_chunk = max(1, min(m_rows, chunk_elems // max(1, min(k, 4096))))
    p_chunk = max(1, chunk_elems // q_chunk)
    pts_sq = (pts ** 2).sum(1)
    out = torch.empty_like(xq)
    for a in range(0, m_rows, q_chunk):
        q = xq[a:a + q_chunk]
        w2 = inv2s2[a:a + q_chunk, None]
        q_sq = (q ** 2).sum(1, keepdim=True)
        run_max = torch.full((q.shape[0], 1), -torch.inf, dtype=torch.float64, device=x.device)
        run_sum = torch.zeros((q.shape[0], 1), dtype=torch.float64, device=x.device)
        acc = torch.zeros_like(q)
        for b in range(0, k, p_chunk):
            p = pts[b:b + p_chunk]
            d2 = (q_sq - 2.0 * q @ p.T + pts_sq[None, b:b + p_chunk]).clamp_min_(0.0)
            logits = -d2 * w2
            new_max = torch.maximum(run_max, logits.max(1, keepdim=True).values)
            rescale = torch.exp(run_max - new_max)
            e = torch.exp(logits - new_max)
            run_sum = run_sum * rescale + e.sum(1, keepdim=True)
            acc = acc * rescale + e @ p
            run_max = new_max
        out[a:a + q_chunk] = acc / run_sum
    return out.reshape(x.shape).to(out_dtype)


def velocity(x: torch.Tensor, data: torch.Tensor, sigma, **kw) -> torch.Tensor:
    """PF-ODE velocity v_sigma(x) = (x - D*(x, sigma)) / sigma = E[z | x_sigma = x]; shape of x."""
    s = as_batch_sigma(sigma, x)
    return (x - ideal_denoiser(x, data, s, **kw)) / pad_dims(s, x)


def flow_map(x: torch.Tensor, data: torch.Tensor | None, sigma, sigma_min: float = SIGMA_MIN, n_steps: int = 256,
             rho: float = RHO, field=None, **kw) -> torch.Tensor:
    """Exact consistency function of the point set: integrate dx/dt = v_t(x) from ``sigma`` to ``sigma_min``.

    Heun's method on a Karras grid of ``n_steps`` intervals per row (rows may start at different sigmas);
    rows already at sigma_min are returned unchanged. Returns x's shape and dtype. ``field(x, t)`` replaces the
    velocity of the point set ``data`` (then ``data`` may be None): the flow map of any density whose PF-ODE
    velocity is known in closed form (e.g. a Gaussian mixture, ``gclib.experiments.references``).
    """
    vel = field if field is not None else (lambda a, t: velocity(a, data, t, **kw))
    xs = x.to(torch.float64)
    s = as_batch_sigma(sigma, xs)
    if (s < sigma_min).any():
        raise ValueError(f"sigma must be >= sigma_min={sigma_min}")
    u = torch.linspace(1.0, 0.0, n_steps + 1, dtype=torch.float64, device=x.device)
    lo = sigma_min ** (1.0 / rho)
    grid = (lo + u[None, :] * (s[:, None] ** (1.0 / rho) - lo)) ** rho  # (M, n_steps + 1), descending
    grid[:, -1] = sigma_min
    for j in range(n_steps):
        t, t_next = grid[:, j], grid[:, j + 1]
        dt = pad_dims(t_next - t, xs)
        d = vel(xs, t)
        x_euler = xs + dt * d
        d_next = vel(x_euler, t_next)
        xs = xs + dt * 0.5 * (d + d_next)
    return xs.to(x.dtype)
