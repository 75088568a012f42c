r"""The CT/CD gap and its continuous-time limit (docs/method.md section 3, Theorem 1).

Setting. f(x, t) a consistency model, data uniform on a finite point set (so the PF-ODE velocity
v_t(x) = E[z | x_t = x] is exact, ``gclib.exact.velocity``), x_t = x + t z. Grid (equally spaced, on
[sigma_min, T] because f is defined from sigma_min on; Theorem 1 writes t_i = i T / N, i.e. sigma_min = 0):

    t_i = s + i h,  h = (T - s) / N,  i = 0..N,  s = sigma_min,

interval i ~ Uniform{0..N-1}. Here i = floor(u N) with ONE u ~ U[0, 1) per sample shared by every N, and
the same (x, z) for every N and for both losses (common random numbers). With y = x_{i+1} = x + t_{i+1} z:

    L_CT = E lambda_i D( f(x + t_i z, t_i), f(y, t_{i+1}) ),   x + t_i z = y - h z,
    L_CD = E lambda_i D( f(x^Phi_i, t_i),   f(y, t_{i+1}) ),   x^Phi_i = y - h v_{t_{i+1}}(y).

Derivation for D = ||.||^2. Write J = df/dx(y, t_i), H its second derivative, e = f(y, t_{i+1}) - f(y, t_i)
= h d_t f(y, t_i) + O(h^2): J, H, e depend on y only. Taylor in the first argument:

    f(y - h w, t_i) = f(y, t_i) - h J w + (h^2 / 2) H[w, w] + O(h^3),   w in {z, v},
    ||f(y,t_{i+1}) - f(y - h w, t_i)||^2 = ||e + h J w||^2 - h^2 (e + h J w) . H[w, w] + O(h^4)
    CT - CD (per sample) = h^2 (||J z||^2 - ||J v||^2) + 2 h e . J (z - v) + O(h^3).

Given y (and t), E[z | y] = v exactly, so the cross term 2 h e . J (z - v) has conditional mean 0 and
E[||J z||^2 - ||J v||^2 | y] = E[||J (z - v)||^2 | y]. The O(h^3) remainder (H terms, e = O(h)) is of
relative order h. Hence, with r(t) = E|| df/dx(x_t, t) (z - v_t(x_t)) ||^2 and t_{i+1} -> t:

    L_CT - L_CD = (1/N) sum_i lambda_i h^2 r(t_{i+1}) + O(h^3 * lambda).

(a) fixed weight function lambda_i = lambda(t_i) (Theorem 1's setting): (1/N) sum_i g(t_{i+1}) -> (1/(T - s))
    int_s^T g dt, so
        N^2 (L_CT - L_CD)  ->  (T - s) R,      R = int_s^T lambda(t) r(t) dt,
    i.e. C T^(alpha - 1) R with alpha = 2, C = 1 (T - s = T when s = 0).
(b) iCT's weight lambda_i = 1 / (t_{i+1} - t_i) = 1 / h = N / (T - s) (the default here): the weight grows
    with N and absorbs one power of it,
        N (L_CT - L_CD)  ->  R_1 = int_s^T r(t) dt,
    which is (a) with lambda(t) = N / (T - s); N^2 (L_CT - L_CD) ~ N R_1 diverges: with 1/dt weights the
    gap decays only like 1/N, it never vanishes faster.
Pseudo-Huber D = phi(||.||), phi(r) = sqrt(r^2 + c^2) - c = r^2 / (2 c) - r^4 / (8 c^3) + ...: every
difference above is O(h), so once h ||d_t f + J w|| << c, D = ||.||^2 / (2 c) (1 + O(h^2 / c^2)) and the
limits are those above times C = 1 / (2 c) (alpha = 2). With the paper's c = 0.00054 sqrt(d) the regime
h << c needs very large N; pass a larger ``c`` to see the limit at N <= 1280.

Time average. With intervals uniform, E_i becomes (1/(T - s)) int_s^T dt, so R is estimated by Monte Carlo
on the SAME samples: t_u = s + u (T - s) with each sample's u, x_t = x + t_u z,
    R = (T - s) E_u[ lambda(t_u) || J(x_t, t_u) (z - v_{t_u}(x_t)) ||^2 ]    (case (a)),
    R_1 = (T - s) E_u[ || J(x_t, t_u) (z - v_{t_u}(x_t)) ||^2 ]              (case (b)),
J (z - v) from one Jacobian-vector product (``torch.func.jvp`` in x along z - v). Also reported: the
"paired" estimator of the same limit, per sample ||J(z - v)||^2 + 2 (d_t f + J v) . J(z - v) (the extra
term has conditional mean 0; it is the per-sample leading term of CT - CD), which tracks the finite-N gap
sample by sample and so shows the O(1/N) convergence with little Monte Carlo noise. (d_t f + J v is the
derivative of f along the PF-ODE; it is 0 for the ideal consistency function.)

The model must act row-wise (no batch statistics): the batched jvp then gives each row's own J_k w_k.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..exact import velocity as exact_velocity
from ..losses import pseudo_huber, pseudo_huber_c, squared_l2
from ..precond import pad_dims
from ._util import as_tensor, eval_mode, mean_stderr, model_device_dtype, sq_norm_rows

DEFAULT_NS = (10, 20, 40, 80, 160, 320, 640, 1280)


@dataclass
class GapResult:
    """table: DataFrame with columns N, h, L_CT, L_CD, gap (= L_CT - L_CD on the same samples), gap_stderr,
    scaled_gap (= N^p gap with p = ``exponent``: 2 for a fixed weight function, 1 for lambda_i = 1/h),
    scaled_gap_stderr, N2_gap (= N^2 gap, Theorem 1's scaling, always). limit: the predicted limit of
    scaled_gap, C (T - s)^(p - 1) R (see the module docstring), with limit_stderr; limit_paired: the paired
    estimator of the same limit. R: the integral (R or R_1) without C and the (T - s) factor."""
    table: pd.DataFrame
    limit: float
    limit_stderr: float
    limit_paired: float
    limit_paired_stderr: float
    exponent: int
    C: float
    R: float
    R_stderr: float
    T: float
    sigma_min: float
    weight: str
    info: dict = field(default_factory=dict)
    per_sample: dict = field(default_factory=dict)


def _jvp_terms(model, xt: torch.Tensor, t: torch.Tensor, w: torch.Tensor, v: torch.Tensor):
    """(J w, J v + d_t f) at (xt, t), J = df/dx, each (B, ...), by forward-mode AD: the second is ONE derivative
    along the PF-ODE direction (v, 1) in (x, t)."""
    from torch.func import jvp

    _, jw = jvp(lambda y: model(y, t), (xt,), (w,))
    _, along = jvp(lambda y, s: model(y, s), (xt, t), (v, torch.ones_like(t)))
    return jw, along


def _distance(d: int, distance: str, c: float | None):
    """(D(a, b) per row, C, c) for distance 'l2' (alpha = 2, C = 1) or 'pseudo_huber' (C = 1 / (2 c))."""
    if distance not in ("l2", "pseudo_huber"):
        raise ValueError(f"distance={distance!r} is not valid; allowed values: 'l2', 'pseudo_huber'")
    if distance == "pseudo_huber":
        c = float(c) if c is not None else pseudo_huber_c(d)
        return (lambda a, b: pseudo_huber(a, b, c)), 1.0 / (2.0 * c), c
    return squared_l2, 1.0, c


def ct_cd_gap(model, data, T: float = 1.0, Ns=DEFAULT_NS, n: int = 4096, distance: str = "l2",
              c: float | None = None, weight: str | Callable = "inverse_step", sigma_min: float | None = None,
              velocity: Callable | None = None, batch_size: int = 4096, generator: torch.Generator | None = None,
              seed: int = 0, teacher: Callable | None = None, n_curve: int | None = None,
              limit: bool = True, sampler: Callable | None = None) -> GapResult:
    """L_CT, L_CD and the scaled gap for N equally spaced steps on [sigma_min, T], and its predicted limit.

    model: f(x, sigma) acting row-wise (its mode is set to eval and restored); data: the finite point set
    (K, ...) (numpy or torch); velocity(x, sigma) overrides the exact velocity of ``data`` if given (a teacher).
    distance: "l2" (||a - b||^2, alpha = 2, C = 1) or "pseudo_huber" (sqrt(||a - b||^2 + c^2) - c, alpha = 2,
    C = 1 / (2 c); c defaults to 0.00054 sqrt(d)). weight: "inverse_step" (lambda_i = 1/h, iCT) or a function
    lambda(t) of a float64 tensor of lower levels t_i (Theorem 1's fixed weights).
    n samples (x uniform on data, or ``sampler(n, generator)``'s draws of a continuous density, whose velocity= then
    must be given; z ~ N(0, I), u ~ U[0, 1)) shared by every N; computed on the model's device
    and dtype in chunks of ``batch_size``. Returns a ``GapResult`` (see there and the module docstring).
    teacher(x, sigma): the velocity that makes CD's lower point (default: the same as the limit's velocity); a
    wrong teacher (e.g. v = 0) changes L_CD but not the predicted limit, which always uses the true velocity.
    ``per_sample`` of the result holds, per sample (numpy (n,)), the scaled gap at the largest N
    (``scaled_gap_N_max``), the plain and paired limit terms scaled like the limit (``plain``, ``paired``: their
    means are limit and limit_paired) and L_CD at the largest N (``L_CD_N_max``).
    n_curve: every N but the last (the largest) uses only the first n_curve samples (the last N and the limit use all n;
    the table's column n says how many). limit=False skips the limit (its fields are NaN): for a second teacher on
    the same draws, whose limit is the first call's.
    ``ct_cd_gaps`` computes several distances from the same network evaluations.
    """
    return ct_cd_gaps(model, data, [(distance, c)], T=T, Ns=Ns, n=n, weight=weight, sigma_min=sigma_min,
                      velocity=velocity, batch_size=batch_size, generator=generator, seed=seed, teacher=teacher,
                      n_curve=n_curve, limit=limit, sampler=sampler)[0]


def ct_cd_gaps(model, data, distances=(("l2", None),), T: float = 1.0, Ns=DEFAULT_NS, n: int = 4096,
               weight: str | Callable = "inverse_step", sigma_min: float | None = None, velocity: Callable | None = None,
               batch_size: int = 4096, generator: torch.Generator | None = None, seed: int = 0,
               teacher: Callable | None = None, n_curve: int | None = None, limit: bool = True,
               sampler: Callable | None = None) -> list[GapResult]:
    """``ct_cd_gap`` for each (distance, c) of ``distances`` from ONE set of network evaluations (the draws, the
    model's outputs and the limit's Jacobian-vector products do not depend on the distance): a list of
    ``GapResult``, one per distance, each equal to ``ct_cd_gap`` with that distance alone."""
    if not (weight == "inverse_step" or callable(weight)):
        raise ValueError(f"weight={weight!r} is not valid; allowed: 'inverse_step' or a function lambda(t)")
    pts = as_tensor(data)
    d = int(pts[0].numel())
    dists = [_distance(d, dist, c) for dist, c in distances]
    if not dists:
        raise ValueError("distances is empty; give at least one (distance, c)")
    s = float(sigma_min if sigma_min is not None else getattr(model, "sigma_min"))
    T = float(T)
    if not T > s:
        raise ValueError(f"T={T} must exceed sigma_min={s}")
    Ns = [int(N) for N in Ns]
    if any(N < 1 for N in Ns):
        raise ValueError(f"Ns={Ns} must be positive integers")
    n_curve = n if n_curve is None else int(n_curve)
    if not 1 <= n_curve <= n:
        raise ValueError(f"n_curve={n_curve} must be in [1, n = {n}]")
    if sampler is not None and velocity is None:
        raise ValueError("sampler needs velocity= (the density's; the data points' exact velocity is not its)")
    inverse_step = weight == "inverse_step"
    p = 1 if inverse_step else 2

    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    x_all = (sampler(n, g) if sampler is not None else pts[torch.randint(0, pts.shape[0], (n,), generator=g).to(
        pts.device)]).to(torch.float64).cpu()
    z_all = torch.randn(x_all.shape, generator=g, dtype=torch.float64)
    u_all = torch.rand(n, generator=g, dtype=torch.float64)
    device, dtype = model_device_dtype(model, x_all)
    pts_dev = pts.to(device=device, dtype=dtype)
    vel = velocity if velocity is not None else (lambda y, sig: exact_velocity(y, pts_dev, sig))
    teach = teacher if teacher is not None else vel

    size = {N: (n if N == Ns[-1] else n_curve) for N in Ns}
    ct = [{N: torch.empty(size[N], dtype=torch.float64) for N in Ns} for _ in dists]
    cd = [{N: torch.empty(size[N], dtype=torch.float64) for N in Ns} for _ in dists]
    nan = torch.full((n,), float("nan"), dtype=torch.float64)
    r_plain, r_paired = (torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)) if limit \
        else (nan, nan.clone())
    with eval_mode(model):
        for a in range(0, n, batch_size):
            sl = slice(a, a + batch_size)
            x = x_all[sl].to(device=device, dtype=dtype)
            z = z_all[sl].to(device=device, dtype=dtype)
            u = u_all[sl].to(device)
            with torch.no_grad():
                for N in Ns:
                    m = min(len(x), size[N] - a)  # rows of this chunk that N uses
                    if m <= 0:
                        continue
                    xs, zs, us = x[:m], z[:m], u[:m]
                    h = (T - s) / N
                    i = torch.clamp(torch.floor(us * N), max=N - 1)
                    t_lo = (s + i * h).to(dtype)
                    t_hi = (s + (i + 1) * h).to(dtype)
                    lam = torch.full_like(t_lo, 1.0 / h) if inverse_step else torch.as_tensor(
                        weight(s + i * h), dtype=dtype, device=device).expand_as(t_lo)
                    x_hi = xs + pad_dims(t_hi, xs) * zs
                    x_ct = xs + pad_dims(t_lo, xs) * zs
                    x_cd = x_hi + pad_dims(t_lo - t_hi, xs) * teach(x_hi, t_hi).to(dtype)
                    # consistency_loss's lambda D(sg f(x_lo, t_lo), f(x_hi, t_hi)), with f(x_hi, t_hi) computed once
                    # for both losses (eval mode: no dropout, so the shared pass changes nothing)
                    f_hi, f_ct, f_cd = model(x_hi, t_hi), model(x_ct, t_lo), model(x_cd, t_lo)
                    lam = lam.to(f_hi.dtype)
                    rows = slice(a, a + m)
                    for k, (dist, _, _) in enumerate(dists):
                        ct[k][N][rows] = (lam * dist(f_hi, f_ct)).double().cpu()
                        cd[k][N][rows] = (lam * dist(f_hi, f_cd)).double().cpu()
            if not limit:
                continue
            # limit: t_u = s + u (T - s) on the same samples
            t = (s + u * (T - s)).to(dtype)
            xt = x + pad_dims(t, x) * z
            with torch.no_grad():
                v = vel(xt, t).to(dtype)
            jw, along = _jvp_terms(model, xt, t, z - v, v)
            lam_t = torch.ones_like(t) if inverse_step else torch.as_tensor(
                weight((s + u * (T - s)).to(torch.float64)), dtype=dtype, device=device).expand_as(t)
            base = sq_norm_rows(jw.detach())
            cross = 2.0 * (along.detach() * jw.detach()).reshape(jw.shape[0], -1).sum(1)
            r_plain[sl] = (lam_t * base).double().cpu()
            r_paired[sl] = (lam_t * (base + cross)).double().cpu()

    R, R_se = mean_stderr(r_plain) if limit else (float("nan"), float("nan"))
    Rp, Rp_se = mean_stderr(r_paired) if limit else (float("nan"), float("nan"))
    # R (or R_1) = (T - s) E_u[...]; limit = C (T - s)^(p - 1) R
    R, R_se, Rp, Rp_se = [(T - s) * q for q in (R, R_se, Rp, Rp_se)]
    results = []
    for k, (_, C, c) in enumerate(dists):
        rows = []
        for N in Ns:
            diff = ct[k][N] - cd[k][N]
            gap, gap_se = mean_stderr(diff)
            rows.append(dict(N=N, n=size[N], h=(T - s) / N, L_CT=float(ct[k][N].mean()), L_CD=float(cd[k][N].mean()),
                             gap=gap, gap_stderr=gap_se, scaled_gap=N ** p * gap, scaled_gap_stderr=N ** p * gap_se,
                             N2_gap=N ** 2 * gap))
        table = pd.DataFrame(rows)
        fac = C * (T - s) ** (p - 1)
        table.attrs.update(limit=fac * R, exponent=p)
        big = Ns[-1]
        results.append(GapResult(
            table=table, limit=fac * R, limit_stderr=fac * R_se, limit_paired=fac * Rp, limit_paired_stderr=fac * Rp_se,
            exponent=p, C=C, R=R, R_stderr=R_se, T=T, sigma_min=s,
            weight="inverse_step" if inverse_step else getattr(weight, "__name__", "callable"),
            info=dict(n=n, n_curve=n_curve, distance=distances[k][0], c=c, d=d),
            per_sample=dict(scaled_gap_N_max=(big ** p * (ct[k][big] - cd[k][big])).numpy(),
                            plain=(fac * (T - s) * r_plain).numpy(), paired=(fac * (T - s) * r_paired).numpy(),
                            L_CD_N_max=cd[k][big].numpy(), L_CT_N_max=ct[k][big].numpy())))
    return results


# --------------------------------------------------------------------------------------------- Theorem 1 (ii)
def ct_cd_gradients(model, data, T: float = 1.0, Ns=(160, 2560), n: int = 2048, alpha: int = 2,
                    teacher: Callable | None = None, direction_n: int = 512, batch_size: int = 1024,
                    sigma_min: float | None = None, seed: int = 0) -> pd.DataFrame:
    r"""The gradients of L_CT and L_CD in theta (stop-gradient on the lower point, as training uses them), projected
    on one direction u of parameter space, per sample, for D = ||a - b||^alpha (alpha = 2: squared L2; alpha = 1:
    the Euclidean norm) with iCT's weights 1/h on the grid of ``ct_cd_gap``.

    Per sample the gradient of lambda D(sg f(x_lo, t_i), f(y, t_{i+1})) along u is
    lambda dD/db . (J_theta f(y, t_{i+1}) u), J_theta u from one forward-mode JVP in parameter space. With
    Delta = f(y, t_{i+1}) - f(x_lo, t_i) = O(h): dD/db = 2 Delta (alpha = 2) or Delta / ||Delta|| (alpha = 1), so
    the scaled gradient G = N^(alpha - 2) grad L converges as N grows (alpha = 2: G = grad L; alpha = 1: h grad L up
    to the factor T - s). Its limit is E[dphi(J_x w + d_t f) . J_theta u] with w = z (CT) or v (CD): linear in w for
    alpha = 2, so, since E[z | y] = v, the CT and CD limits coincide; non-linear for alpha = 1, so they differ
    (unless z = v, a deterministic coupling).
    u: the normalised gradient of L_CD at the largest N on ``direction_n`` separate samples (so the projections
    are of the size of the gradient). Returns one row per N: N, G_CT, G_CD (means), diff = G_CT - G_CD, its
    standard error over samples (paired: the same samples), rel = diff / G_CD with rel_lo, rel_hi (90% normal).
    """
    from scipy import stats
    from torch.func import functional_call, jvp

    if alpha not in (1, 2):
        raise ValueError(f"alpha={alpha!r} is not valid; allowed values: 1, 2")
    pts = as_tensor(data)
    s = float(sigma_min if sigma_min is not None else getattr(model, "sigma_min"))
    T = float(T)
    Ns = [int(N) for N in Ns]
    params = {k: v.detach() for k, v in model.named_parameters()}
    if not params:
        raise ValueError("ct_cd_gradients needs a model with parameters")
    device, dtype = model_device_dtype(model, pts)
    pts_dev = pts.to(device=device, dtype=dtype)
    vel = lambda y, sig: exact_velocity(y, pts_dev, sig)  # noqa: E731
    teach = teacher if teacher is not None else vel

    def draws(m, g):
        idx = torch.randint(0, pts.shape[0], (m,), generator=g)
        x = pts[idx.to(pts.device)].to(device=device, dtype=dtype)
        z = torch.randn(x.shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
        u = torch.rand(m, generator=g, dtype=torch.float64).to(device)
        return x, z, u

    def points(x, z, u, N, which):
        h = (T - s) / N
        i = torch.clamp(torch.floor(u * N), max=N - 1)
        t_lo, t_hi = (s + i * h).to(dtype), (s + (i + 1) * h).to(dtype)
        y = x + pad_dims(t_hi, x) * z
        w = z if which == "ct" else teach(y, t_hi).to(dtype)
        return y - h * w, t_lo, y, t_hi, h

    def dphi(delta):
        if alpha == 2:
            return 2.0 * delta
        nrm = delta.reshape(delta.shape[0], -1).norm(dim=1).clamp_min(1e-30)
        return delta / pad_dims(nrm, delta)

    with eval_mode(model):
        # direction: grad of L_CD at the largest N on separate samples
        gd = torch.Generator().manual_seed(seed + 7)
        x, z, u = draws(direction_n, gd)
        x_lo, t_lo, y, t_hi, h = points(x, z, u, Ns[-1], "cd")
        with torch.no_grad():
            f_lo = model(x_lo, t_lo)
        names = list(params)
        leaves = [params[k].clone().requires_grad_(True) for k in names]  # EMA weights may not require grad
        with torch.enable_grad():
            f_hi = functional_call(model, dict(zip(names, leaves)), (y, t_hi))
            dist = sq_norm_rows(f_hi - f_lo) if alpha == 2 else sq_norm_rows(f_hi - f_lo).clamp_min(1e-60).sqrt()
            gl = torch.autograd.grad((dist / h).mean(), leaves, allow_unused=True)
        grads = {k: (g_.detach() if g_ is not None else torch.zeros_like(params[k])) for k, g_ in zip(names, gl)}
        norm = torch.sqrt(sum((g_ ** 2).sum() for g_ in grads.values()))
        tang = {k: g_ / norm for k, g_ in grads.items()}

        g = torch.Generator().manual_seed(seed)
        x_all, z_all, u_all = draws(n, g)
        res = {N: {"ct": torch.empty(n, dtype=torch.float64), "cd": torch.empty(n, dtype=torch.float64)} for N in Ns}
        for a in range(0, n, batch_size):
            sl = slice(a, a + batch_size)
            x, z, u = x_all[sl], z_all[sl], u_all[sl]
            for N in Ns:
                for which in ("ct", "cd"):
                    x_lo, t_lo, y, t_hi, h = points(x, z, u, N, which)
                    with torch.no_grad():
                        f_lo = model(x_lo, t_lo)
                        f_hi, jf = jvp(lambda p: functional_call(model, p, (y, t_hi)), (params,), (tang,))
                    proj = (dphi(f_hi - f_lo) * jf).reshape(len(y), -1).sum(1) / h * float(N) ** (alpha - 2)
                    res[N][which][sl] = proj.double().cpu()
    zq = float(stats.norm.ppf(0.95))
    rows = []
    for N in Ns:
        ct_, cd_ = res[N]["ct"], res[N]["cd"]
        d = ct_ - cd_
        m, se = mean_stderr(d)
        gcd = float(cd_.mean())
        rows.append(dict(N=N, alpha=alpha, G_CT=float(ct_.mean()), G_CD=gcd, diff=m, diff_stderr=se,
                         rel=m / abs(gcd), rel_lo=(m - zq * se) / abs(gcd), rel_hi=(m + zq * se) / abs(gcd)))
    return pd.DataFrame(rows)


@dataclass
class GradientComparison:
    """What ``ct_cd_gradient_vectors`` measured at one N: the whole scaled gradients of L_CT and L_CD, compared as
    vectors over ``m`` independent batches of draws.

    r: ||E(G_CT - G_CD)|| / ||E G_CD||, from unbiased estimates of the two squared norms (U-statistics over the
    batch means: sum over pairs of distinct batches of d_j . d_k), q = r^2 with its jackknife standard error over
    batches (q_se), the interval [r_lo, r_hi] = sqrt of q's normal ``level`` interval clipped at 0; proj: the
    relative difference (G_CT - G_CD) . u / G_CD . u along the direction u of the mean CD gradient (cross-fitted
    over two folds of batches; proj_se its delta-method standard error over batches); exact_zero: q + 3 q_se
    <= 1e-6, the difference is float rounding (a deterministic coupling)."""
    N: int
    alpha: int
    n: int
    m: int
    q: float
    q_se: float
    r: float
    r_lo: float
    r_hi: float
    proj: float
    proj_se: float
    norm_ct_cd: float
    norm_cd: float
    exact_zero: bool
    level: float = 0.9

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _u_stat(v: torch.Tensor) -> float:
    """Unbiased ||E v||^2 from m independent rows: (||sum v||^2 - sum ||v_j||^2) / (m (m - 1))."""
    s = v.sum(0)
    m = v.shape[0]
    return float((s @ s - (v * v).sum()) / (m * (m - 1)))


def ct_cd_gradient_vectors(model, data, T: float = 1.0, N: int = 10240, n: int = 2048, batch: int = 64,
                           alpha: int = 2, teacher: Callable | None = None, sigma_min: float | None = None,
                           seed: int = 0, level: float = 0.9) -> GradientComparison:
    r"""Theorem 1 (ii) on the whole gradient: the scaled gradients G = N^(alpha - 2) grad_theta L of L_CT and L_CD
    (stop-gradient on the lower point, iCT's weight 1/h, the grid of ``ct_cd_gap``; D = ||a - b||^alpha) compared
    as vectors in parameter space, not along one projected direction.

    The n draws (x uniform on ``data``, z ~ N(0, I), u ~ U[0, 1)) are cut into m = n // batch batches; each batch
    gives its mean gradients g_CT^(j), g_CD^(j) by one backward pass each (reverse mode; the upper point's network
    pass is shared). Then d_j = g_CT^(j) - g_CD^(j) and ||E d||^2, ||E g_CD||^2 are estimated without the noise
    bias of the batch means (U-statistics over pairs of distinct batches), q = ||E d||^2 / ||E g_CD||^2 with a
    jackknife standard error over batches. For alpha = 2 Theorem 1 (ii) says E d -> 0 (the CT and CD limits
    coincide: q ~ 0); for alpha = 1 they differ (q > 0); a wrong teacher (``teacher``: CD's velocity, default the
    exact velocity of ``data``) makes q > 0 for alpha = 2. Returns a ``GradientComparison``."""
    from scipy import stats
    from torch.func import functional_call

    if alpha not in (1, 2):
        raise ValueError(f"alpha={alpha!r} is not valid; allowed values: 1, 2")
    m = int(n) // int(batch)
    if m < 4:
        raise ValueError(f"n={n} and batch={batch} give {m} batches; the comparison needs at least 4")
    pts = as_tensor(data)
    s = float(sigma_min if sigma_min is not None else getattr(model, "sigma_min"))
    T, N = float(T), int(N)
    names = [k for k, v in model.named_parameters()]
    if not names:
        raise ValueError("ct_cd_gradient_vectors needs a model with parameters")
    params = {k: v.detach() for k, v in model.named_parameters()}
    device, dtype = model_device_dtype(model, pts)
    pts_dev = pts.to(device=device, dtype=dtype)
    teach = teacher if teacher is not None else (lambda y, sig: exact_velocity(y, pts_dev, sig))
    h = (T - s) / N
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, pts.shape[0], (m * batch,), generator=g)
    x_all = pts[idx.to(pts.device)].to(device=device, dtype=dtype)
    z_all = torch.randn(x_all.shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    u_all = torch.rand(m * batch, generator=g, dtype=torch.float64).to(device)

    def dist(a, b):
        r2 = sq_norm_rows(a - b)
        return r2 if alpha == 2 else r2.clamp_min(1e-60).sqrt()

    D, G = [], []
    with eval_mode(model):
        for j in range(m):
            sl = slice(j * batch, (j + 1) * batch)
            x, z, u = x_all[sl], z_all[sl], u_all[sl]
            i = torch.clamp(torch.floor(u * N), max=N - 1)
            t_lo, t_hi = (s + i * h).to(dtype), (s + (i + 1) * h).to(dtype)
            y = x + pad_dims(t_hi, x) * z
            with torch.no_grad():
                f_ct = model(y - h * z, t_lo)
                f_cd = model(y - h * teach(y, t_hi).to(dtype), t_lo)
            leaves = [params[k].clone().requires_grad_(True) for k in names]
            with torch.enable_grad():
                f_hi = functional_call(model, dict(zip(names, leaves)), (y, t_hi))
                scale = float(N) ** (alpha - 2) / h
                l_ct = dist(f_hi, f_ct).mean() * scale
                l_cd = dist(f_hi, f_cd).mean() * scale
                g_ct = torch.autograd.grad(l_ct, leaves, retain_graph=True, allow_unused=True)
                g_cd = torch.autograd.grad(l_cd, leaves, allow_unused=True)
            flat = lambda gs: torch.cat([(a if a is not None else torch.zeros_like(p)).reshape(-1)  # noqa: E731
                                         for a, p in zip(gs, leaves)]).to(torch.float64).cpu()
            gc, gd = flat(g_ct), flat(g_cd)
            D.append(gc - gd)
            G.append(gd)
    D, G = torch.stack(D), torch.stack(G)
    ud, ug = _u_stat(D), _u_stat(G)
    q = ud / ug if ug > 0 else float("nan")
    keep = torch.ones(m, dtype=torch.bool)
    jk = []
    for j in range(m):
        keep[j] = False
        ugj = _u_stat(G[keep])
        jk.append(_u_stat(D[keep]) / ugj if ugj > 0 else float("nan"))
        keep[j] = True
    jk = np.asarray(jk)
    q_se = float(np.sqrt((m - 1) / m * ((jk - jk.mean()) ** 2).sum()))
    zq = float(stats.norm.ppf(0.5 + level / 2))
    lo, hi = q - zq * q_se, q + zq * q_se
    # along the gradient itself: the direction of the mean CD gradient, cross-fitted (the even batches are projected
    # on the odd batches' mean and the other way round, so no batch is projected on a direction it made)
    pd_, pg = torch.empty(m, dtype=torch.float64), torch.empty(m, dtype=torch.float64)
    for fold in (0, 1):
        own, other = torch.arange(m) % 2 == fold, torch.arange(m) % 2 != fold
        u = G[other].mean(0)
        u = u / u.norm().clamp_min(1e-300)
        pd_[own], pg[own] = D[own] @ u, G[own] @ u
    scale_g = float(pg.mean()) if float(pg.mean()) != 0 else float("nan")
    proj = float(pd_.mean()) / scale_g
    proj_se = float((pd_ - proj * pg).std() / np.sqrt(m)) / abs(scale_g)  # the ratio's delta-method error
    # float rounding of the difference (z = v: the lower points differ by rounding only): ||E d|| below 1e-3 of
    # ||E G_CD|| with 3 standard errors to spare (a real difference, e.g. a teacher 10% off, gives q ~ 0.1)
    exact_zero = bool(np.isfinite(q) and q + 3 * q_se <= 1e-6)
    return GradientComparison(N=N, alpha=alpha, n=m * batch, m=m, q=q, q_se=q_se, r=float(np.sqrt(max(q, 0.0))),
                              r_lo=float(np.sqrt(max(lo, 0.0))), r_hi=float(np.sqrt(max(hi, 0.0))),
                              proj=proj, proj_se=proj_se,
                              norm_ct_cd=float(np.sqrt(max(ud, 0.0))), norm_cd=float(np.sqrt(max(ug, 0.0))),
                              exact_zero=exact_zero, level=level)
