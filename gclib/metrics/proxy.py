"""The proxy of the CT/CD gap, R~_t = E||z - v_t(x_t)||^2, per coupling process (docs/method.md section 3, Fig. 2).

For a process that draws pairs (x, z) from a coupling (IC, OT or GC) and sets x_t = x + t z, the velocity
of the process is v_t(y) = E[z | x_t = y] = (y - D(y, t)) / t with D(y, t) = E[x | x_t = y] its ideal
denoiser, so z - v_t(x_t) = (D(x_t, t) - x) / t and
    R~_t = E||z - v_t(x_t)||^2 = E||D(x_t, t) - x||^2 / t^2   (the Bayes denoising MSE over t^2).
- ``proxy_exact_ic(data, ts, n)``: IC on a finite point set, where D is exact (``gclib.exact``). Only the
  expectation is Monte Carlo (with standard errors). For OT and GC the pairs are dependent, so the
  independent-coupling velocity of the data set is NOT the process's velocity; no exact formula is offered.
- ``proxy_fitted(pairs_fn, ts)``: any process; a small denoiser is fitted by regression of x on x_t (MSE),
  one model for all levels in ``ts``, and R~_t = E||D_fit(x_t, t) - x||^2 / t^2 on fresh pairs. Since the
  Bayes denoiser minimises the MSE, a fitted proxy is an upper estimate of R~_t (up to Monte Carlo error).
- ``coupling_pairs_fn(flow, data, ...)``: builds pairs_fn for "ic", "ot", "gc" from ``gclib.couplings.couple``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..couplings import couple
from ..exact import velocity as exact_velocity
from ..nets import MLP
from ..precond import as_batch_sigma, pad_dims
from ._util import as_tensor, draw_data, mean_stderr, sq_norm_rows


def _levels(ts) -> list[float]:
    ts = [float(t) for t in np.asarray(ts, dtype=np.float64).reshape(-1)]
    if not ts or min(ts) <= 0:
        raise ValueError(f"ts={ts} must be a non-empty list of levels t > 0")
    return ts


def proxy_exact_ic(data, ts, n: int = 4096, batch_size: int = 4096, generator: torch.Generator | None = None,
                   seed: int = 0) -> pd.DataFrame:
    """R~_t = E||z - v_t(x + t z)||^2 for the independent coupling on a finite set (exact velocity).

    data: (K, ...) the point set (x uniform on it); ts: levels t > 0; n draws (x, z), the same at every t.
    Computed in float64 on data's device. Returns DataFrame(t, proxy, stderr).
    """
    pts = as_tensor(data, dtype=torch.float64)
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    x = pts[torch.randint(0, pts.shape[0], (n,), generator=g).to(pts.device)]
    z = torch.randn(x.shape, generator=g, dtype=torch.float64).to(pts.device)
    rows = []
    for t in _levels(ts):
        per = torch.empty(n, dtype=torch.float64)
        for a in range(0, n, batch_size):
            xb, zb = x[a:a + batch_size], z[a:a + batch_size]
            v = exact_velocity(xb + t * zb, pts, t)
            per[a:a + batch_size] = sq_norm_rows(zb - v).cpu()
        m, se = mean_stderr(per)
        rows.append(dict(t=t, proxy=m, stderr=se))
    return pd.DataFrame(rows, columns=["t", "proxy", "stderr"])


class Denoiser(nn.Module):
    """D(y, t) = c_skip(t) y + c_out(t) F(c_in(t) y, log(t) / 4) (EDM preconditioning, sigma_data = sd)
    around ``net(x_in, c_noise)``; y: (B, ...), t: float or (B,)."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net, self.sd = net, float(sigma_data)

    def forward(self, y: torch.Tensor, t) -> torch.Tensor:
        t = as_batch_sigma(t, y)
        sd = self.sd
        c_skip = sd ** 2 / (t ** 2 + sd ** 2)
        c_out = t * sd / torch.sqrt(t ** 2 + sd ** 2)
        c_in = 1.0 / torch.sqrt(t ** 2 + sd ** 2)
        out = self.net(pad_dims(c_in, y) * y, torch.log(t) / 4.0).to(y.dtype)
        return pad_dims(c_skip, y) * y + pad_dims(c_out, y) * out


PairsFn = Callable[..., tuple]


def _pairs(pairs_fn: PairsFn, batch: int, g: torch.Generator, t: torch.Tensor, level_dependent: bool):
    out = pairs_fn(batch, g, t) if level_dependent else pairs_fn(batch, g)
    x, z = (as_tensor(o) for o in out)
    if x.shape != z.shape or x.shape[0] != batch:
        raise ValueError(f"pairs_fn returned x {tuple(x.shape)} and z {tuple(z.shape)}; expected two ({batch}, ...)")
    return x, z


def proxy_fitted(pairs_fn: PairsFn, ts, steps: int = 2000, batch_size: int = 512, n_eval: int = 8192,
                 net: nn.Module | None = None, lr: float = 2e-3, sigma_data: float = 0.5,
                 level_dependent: bool = False, device=None, generator: torch.Generator | None = None,
                 seed: int = 0, return_model: bool = False):
    """R~_t = E||D(x_t, t) - x||^2 / t^2 with a denoiser D fitted to the process given by ``pairs_fn``.

    pairs_fn(batch, generator) -> (x, z), coupled pairs (batch, ...), or, with ``level_dependent=True``,
    pairs_fn(batch, generator, t) with t (batch,) the level of each row (GC: the predictor acts at that level).
    Training: ``steps`` Adam steps (lr with cosine decay) on ||D(x + t z, t) - x||^2 weighted by
    (t^2 + sd^2) / (t sd)^2 (EDM's weight: unit-scale targets at every level), t uniform over ``ts``.
    ``net``: F(x_in, c_noise) (default: gclib.nets.MLP(d, 128, 3)). Evaluation on n_eval fresh pairs per t.
    Returns DataFrame(t, proxy, stderr, mse) (and the fitted Denoiser if return_model).
    """
    levels = _levels(ts)
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    x0, _ = _pairs(pairs_fn, 2, g, torch.full((2,), levels[0], dtype=torch.float64), level_dependent)
    d = int(x0[0].numel())
    if net is None:
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=g)))
        net = MLP(dim=d, hidden=128, depth=3, emb_dim=32)
        torch.random.set_rng_state(torch_state)  # leave the global RNG as it was
    device = torch.device(device) if device is not None else x0.device
    den = Denoiser(net, sigma_data).to(device)
    opt = torch.optim.Adam(den.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    lv = torch.tensor(levels, dtype=torch.float64)
    sd = float(sigma_data)
    den.train()
    for _ in range(steps):
        t = lv[torch.randint(0, len(levels), (batch_size,), generator=g)]
        x, z = _pairs(pairs_fn, batch_size, g, t, level_dependent)
        x, z = x.to(device=device, dtype=torch.float32), z.to(device=device, dtype=torch.float32)
        tf = t.to(device=device, dtype=torch.float32)
        w = (tf ** 2 + sd ** 2) / (tf * sd) ** 2
        loss = (w * sq_norm_rows(den(x + pad_dims(tf, x) * z, tf) - x)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    den.eval()
    rows = []
    with torch.no_grad():
        for level in levels:
            per = []
            for a in range(0, n_eval, batch_size):
                b = min(batch_size, n_eval - a)
                t = torch.full((b,), level, dtype=torch.float64)
                x, z = _pairs(pairs_fn, b, g, t, level_dependent)
                x, z = x.to(device=device, dtype=torch.float32), z.to(device=device, dtype=torch.float32)
                per.append(sq_norm_rows(den(x + level * z, level).double() - x.double()).cpu())
            mse, mse_se = mean_stderr(torch.cat(per))
            rows.append(dict(t=level, proxy=mse / level ** 2, stderr=mse_se / level ** 2, mse=mse))
    df = pd.DataFrame(rows, columns=["t", "proxy", "stderr", "mse"])
    return (df, den) if return_model else df


def coupling_pairs_fn(flow: str, data, *, mu: float = 1.0, predictor: Callable | None = None,
                      ot_solver: str = "emd") -> PairsFn:
    """pairs_fn(batch, generator, t) for ``proxy_fitted(..., level_dependent=True)`` from ``gclib.couplings``.

    data: tensor (K, ...) (rows drawn with replacement) or a sampler data(n, generator); z ~ N(0, I).
    "ic": independent pairs; "ot": exact minibatch OT within each batch (the batch size is the OT batch size);
    "gc": each row is a GC row with probability mu, x^ = predictor(x + t z, t) with t the row's level.
    """
    def pairs_fn(batch: int, generator: torch.Generator, t: torch.Tensor | None = None):
        x = draw_data(data, batch, generator).to(torch.float32)
        z = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
        sig = None if t is None else torch.as_tensor(t, dtype=torch.float32, device=x.device)
        c = couple(flow, x, z, sigma=sig, mu=mu, predictor=predictor, generator=generator, ot_solver=ot_solver)
        return c.x, c.z

    return pairs_fn
