"""The three kinds of model behind every theory row (docs/method.md section 7, "Claims that can fail").

A claim about GC is a claim about a predictor. Each row of toy_flows, ct_cd_gap and transport_cost is therefore
measured on three kinds of model, built here and shared by the notebooks:

- the **trained** predictor: the EMA network of a run named by the notebook's params file (``trained``), trained by
  ``gclib.train`` from the notebook's own configuration (so a fresh clone produces it; the run cache shares it
  between notebooks), with its quality: FD_digits (digits) and the exact W2 of its one-step samples to the data,
  beside the real-vs-real floor of that W2 (two disjoint halves of the data);
- the **ideal**: the exact probability-flow map of the finite data set (``IdealFlow``: ``gclib.exact.flow_map``,
  EDM's Heun solver on a Karras grid, rho = 7, integrated to sigma_min), with the solver's error measured against a
  grid twice as fine (``solver_error``);
- **negative controls**, models that are broken on purpose and that a row must reject: ``Collapsed`` (a constant
  output, the data mean), ``Untrained`` (a consistency model whose network outputs 0: f = c_skip(t) x_t),
  ``Identity`` (f(x, t) = x), for Theorem 1 wrong CD teachers (``zero_velocity``: v = 0; ``scaled_velocity``:
  1.1 v), and **poor generators** that every row with a quality guard must reject (``generator_controls``): the
  exact flow contracted toward the data mean (``Shrunk``, x^ -> m + a (x^ - m), a = 0.5 and 0.7) and the exact
  flow of the data's Gaussian fit (``GaussianFit``).

The **guard** (``guard``): a row about GC's endpoints also asks that they be a generator of the data, measured in
the data set's own feature space (FD_digits for digits, FID for natural images, the exact W2 on 2-D point sets),
below a limit set from the real-vs-real floor and the Gaussian fit (docs/method.md section 7).

Corollary 1 is judged on the exact flow of a **continuous** density with a closed-form score
(``GaussianMixtureFlow``, the 2-D toy's Gaussian mixture): the exact flow of a finite point set returns
x + sigma_min z near t = 0, so its transport cost is flat there to float rounding. Theorem 1's limit row is judged on
the exact flow of ``SMOOTH_MIXTURE`` (wider components): Theorem 1 assumes a differentiable f, and the exact flow of a
finite set jumps at the boundaries between the points' basins.

Every model here is an ``nn.Module`` called as f(x, sigma) with ``sigma_min`` and ``sigma_max`` attributes, so the
metrics (gap, transport cost, couplings) take any of them. The ideal flow on many points is slow (one Heun step is
two passes over the data set), so ``ideal_outputs`` caches its predictions under the run cache, keyed by a hash of
everything they depend on: two notebooks asking for the same draws compute them once.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..exact import flow_map
from ..precond import as_batch_sigma, pad_dims
from ..schedules import SIGMA_MIN

KINDS = ("trained", "ideal", "control")
SOLVER = "Heun (EDM's 2nd order) on a Karras grid (rho = 7) of {n} steps from t to sigma_min, float64"


class _Reference(nn.Module):
    kind = "control"
    name = "reference"

    def __init__(self, sigma_min: float = SIGMA_MIN, sigma_max: float = 80.0):
        super().__init__()
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)


class IdealFlow(_Reference):
    """The exact consistency function of the point set ``data``: the PF-ODE of the finite data set integrated from
    sigma down to sigma_min (``gclib.exact.flow_map`` with ``n_steps`` Heun steps); float64, differentiable (the
    Jacobian-vector products of Theorem 1 and Lemma 1 go through the solver)."""
    kind = "ideal"

    def __init__(self, data: torch.Tensor, n_steps: int = 32, sigma_min: float = SIGMA_MIN, sigma_max: float = 80.0):
        super().__init__(sigma_min, sigma_max)
        self.register_buffer("data", torch.as_tensor(data).to(torch.float64), persistent=False)
        self.n_steps = int(n_steps)
        self.name = f"exact flow map of the {len(self.data)} data points ({SOLVER.format(n=self.n_steps)})"

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = as_batch_sigma(sigma, x).to(torch.float64).clamp_min(self.sigma_min)
        return flow_map(x.to(torch.float64), self.data, s, sigma_min=self.sigma_min, n_steps=self.n_steps).to(x.dtype)


class Collapsed(_Reference):
    """Negative control: a predictor that ignores its input and returns one point (default: the data mean)."""
    name = "collapsed (constant output: the data mean)"

    def __init__(self, point: torch.Tensor, **kw):
        super().__init__(**kw)
        self.register_buffer("point", torch.as_tensor(point).to(torch.float64), persistent=False)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return self.point.to(x.dtype).expand_as(x).clone() + 0.0 * x


class Untrained(_Reference):
    """Negative control: a consistency model whose network outputs 0, f(x, t) = c_skip(t) x with
    c_skip = sd^2 / ((t - sigma_min)^2 + sd^2) (docs/method.md section 1): what a model that learnt nothing gives."""
    name = "untrained network (f = c_skip(t) x_t)"

    def __init__(self, sigma_data: float = 0.5, **kw):
        super().__init__(**kw)
        self.sigma_data = float(sigma_data)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = as_batch_sigma(sigma, x)
        c_skip = self.sigma_data ** 2 / ((s - self.sigma_min) ** 2 + self.sigma_data ** 2)
        return pad_dims(c_skip, x) * x


class Identity(_Reference):
    """Negative control: f(x, t) = x (the predictor returns its noisy input)."""
    name = "identity (f(x, t) = x)"

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return x + 0.0 * as_batch_sigma(sigma, x).sum()


def zero_velocity(x: torch.Tensor, sigma) -> torch.Tensor:
    """Negative control for Theorem 1: a wrong CD teacher, v_t(x) = 0."""
    return torch.zeros_like(x)


def controls(data: torch.Tensor, sigma_min: float = SIGMA_MIN, sigma_max: float = 80.0) -> dict:
    """{"collapsed", "untrained", "identity"}: the negative-control predictors for ``data``."""
    kw = dict(sigma_min=sigma_min, sigma_max=sigma_max)
    mean = torch.as_tensor(data).to(torch.float64).mean(0)
    return {"collapsed": Collapsed(mean, **kw), "untrained": Untrained(**kw), "identity": Identity(**kw)}


def scaled_velocity(data: torch.Tensor, scale: float = 1.1):
    """Negative control for Theorem 1 (ii): a CD teacher ``scale`` times the true velocity of ``data`` (10% too
    large by default), v(x, sigma) = scale * v_sigma(x)."""
    from ..exact import velocity
    pts = torch.as_tensor(data)

    def teacher(x: torch.Tensor, sigma) -> torch.Tensor:
        return float(scale) * velocity(x, pts.to(device=x.device, dtype=x.dtype), sigma)
    teacher.__name__ = f"scaled_velocity_{scale:g}"
    return teacher


class Shrunk(_Reference):
    """Negative control (a poor generator): ``base`` contracted toward the data mean, f(y, t) = m + a (base(y, t) - m)
    with 0 < a < 1. With the exact flow as ``base`` its outputs keep every structure of the data at a smaller
    scale: pixel W2 ranks them near the data, FD_digits does not (docs/method.md section 7)."""

    def __init__(self, base, mean: torch.Tensor, a: float, **kw):
        super().__init__(**{k: kw.get(k, getattr(base, k, d)) for k, d in (("sigma_min", SIGMA_MIN),
                                                                          ("sigma_max", 80.0))})
        self.base, self.a = base, float(a)
        self.whole_draws = bool(getattr(base, "whole_draws", False))  # a Precomputed base answers its own draws only
        self.register_buffer("mean", torch.as_tensor(mean).to(torch.float64), persistent=False)
        self.name = f"shrunk {self.a:g} (the exact flow contracted toward the data mean: m + {self.a:g} (x^ - m))"

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        m = self.mean.to(x.dtype)
        return m + self.a * (self.base(x, sigma) - m)


class GaussianFit(_Reference):
    """Negative control (a poor generator): the exact consistency function of N(m, S), the Gaussian with the data's
    mean and covariance. Its PF-ODE is linear, so f(y, t) = m + (S + sigma_min^2 I)^(1/2) (S + t^2 I)^(-1/2) (y - m)
    in closed form (S = U diag(lam) U^T): a generator that knows the data's first two moments and nothing else."""
    name = "Gaussian fit (the exact flow of N(data mean, data covariance))"

    def __init__(self, data: torch.Tensor, **kw):
        super().__init__(**kw)
        flat = torch.as_tensor(data).to(torch.float64).reshape(len(data), -1)
        lam, U = torch.linalg.eigh(torch.cov(flat.T).reshape(flat.shape[1], flat.shape[1]))
        self.register_buffer("mean", flat.mean(0), persistent=False)
        self.register_buffer("lam", lam.clamp_min(0.0), persistent=False)
        self.register_buffer("U", U, persistent=False)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = as_batch_sigma(sigma, x).to(torch.float64)
        y = x.reshape(len(x), -1).to(torch.float64) - self.mean
        coef = ((self.lam[None, :] + self.sigma_min ** 2) / (self.lam[None, :] + s[:, None] ** 2)).sqrt()
        out = self.mean + ((y @ self.U) * coef) @ self.U.T
        return out.reshape(x.shape).to(x.dtype)


def generator_controls(data: torch.Tensor, ideal, sigma_min: float = SIGMA_MIN, sigma_max: float = 80.0,
                       factors=(0.5, 0.7)) -> dict:
    """{"shrunk 0.5", "shrunk 0.7", "Gaussian fit"}: the poor generators every row with a guard must reject;
    ``ideal`` is the exact flow (a model or a ``Precomputed`` of its outputs) the shrunk ones contract."""
    kw = dict(sigma_min=sigma_min, sigma_max=sigma_max)
    mean = torch.as_tensor(data).to(torch.float64).mean(0)
    out = {f"shrunk {a:g}": Shrunk(ideal, mean, a, **kw) for a in factors}
    out["Gaussian fit"] = GaussianFit(data, **kw)
    return out


# --------------------------------------------------------------------------------------------- a continuous density
# Gaussian mixtures with a closed-form score: the 2-D toys' generating densities (gclib.data.toy)
MIXTURES = {"two_gaussians": (((0.0, 0.5), (0.0, -0.5)), 0.01),
            "8gaussians": (tuple((float(np.cos(k * np.pi / 4)), float(np.sin(k * np.pi / 4))) for k in range(8)), 0.05)}


# Theorem 1's limit row (issue 30): two_gaussians' means with std 0.25 (4 std apart, the density between them 13.5% of
# its peak). two_gaussians' own std 0.01 puts the components 100 std apart: the density between them is e^-1250 of
# the peak, so its flow, smooth in principle, jumps in practice across the mid-line like a finite set's (measured:
# the limit on 2.3 effective draws of 1024, N gap 111 +- 50 at N = 160 against a limit of 0.12)
SMOOTH_MIXTURE = (((0.0, 0.5), (0.0, -0.5)), 0.25)


class GaussianMixtureFlow(_Reference):
    """The exact consistency function of a **continuous** density, the mixture (1/K) sum_k N(mu_k, s^2 I): x_t is
    the mixture of N(mu_k, (s^2 + t^2) I), so the PF-ODE velocity v_t(x) = E[z | x_t = x] = t sum_k w_k(x)
    (x - mu_k) / (s^2 + t^2) (w: the posterior weights of the components) is exact, and the flow map integrates it
    with ``gclib.exact.flow_map`` (Heun, ``n_steps``). ``sample(n, generator)`` draws from the density."""
    kind = "ideal"

    def __init__(self, means, std: float, n_steps: int = 64, sigma_min: float = SIGMA_MIN, sigma_max: float = 80.0,
                 name: str = ""):
        super().__init__(sigma_min, sigma_max)
        self.register_buffer("means", torch.as_tensor(means, dtype=torch.float64), persistent=False)
        self.std, self.n_steps = float(std), int(n_steps)
        self.name = (f"exact flow of the Gaussian mixture {name or ''} ({len(self.means)} components, std "
                     f"{self.std:g}; closed-form velocity, Heun on a Karras grid of {self.n_steps} steps)")

    @classmethod
    def of(cls, dataset: str, **kw) -> "GaussianMixtureFlow":
        """The mixture of a 2-D toy in ``MIXTURES`` (the paper's toy, two_gaussians, for any other name)."""
        name = dataset if dataset in MIXTURES else "two_gaussians"
        means, std = MIXTURES[name]
        return cls(means, std, name=name, **kw)

    @classmethod
    def smooth(cls, **kw) -> "GaussianMixtureFlow":
        """Theorem 1's limit row's ideal: ``SMOOTH_MIXTURE``, whose flow is differentiable at the row's scale."""
        means, std = SMOOTH_MIXTURE
        return cls(means, std, name="two_gaussians' means, std 0.25", **kw)

    def velocity(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = as_batch_sigma(sigma, x).to(torch.float64)
        var = self.std ** 2 + s ** 2                                    # (B,)
        diff = x.to(torch.float64)[:, None, :] - self.means[None]       # (B, K, d)
        logits = -(diff ** 2).sum(-1) / (2 * var[:, None])
        w = torch.softmax(logits, dim=1)
        return (s / var)[:, None] * (w[:, :, None] * diff).sum(1)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = as_batch_sigma(sigma, x).to(torch.float64).clamp_min(self.sigma_min)
        return flow_map(x.to(torch.float64), None, s, sigma_min=self.sigma_min, n_steps=self.n_steps,
                        field=self.velocity).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.randint(0, len(self.means), (n,), generator=generator)
        return self.means[k] + self.std * torch.randn((n, self.means.shape[1]), generator=generator,
                                                      dtype=torch.float64)

    def cost_near0(self, t: float) -> float:
        """c(t) = E||f(x + t z, t) - z||^2 in closed form where the components do not overlap at level t (each
        point's flow stays in its own component, where the flow is linear: f = mu + a (y - mu),
        a = sqrt((s^2 + sigma_min^2) / (s^2 + t^2))): c = mean ||mu_k||^2 + d (a^2 s^2 + (a t - 1)^2)."""
        d = self.means.shape[1]
        a = np.sqrt((self.std ** 2 + self.sigma_min ** 2) / (self.std ** 2 + float(t) ** 2))
        return float((self.means ** 2).sum(1).mean()) + d * (a ** 2 * self.std ** 2 + (a * float(t) - 1) ** 2)


def solver_error(data: torch.Tensor, x: torch.Tensor, sigma: float, n_steps: int = 32) -> dict:
    """How far ``IdealFlow(n_steps)`` is from the same solver on a grid twice as fine, on the rows x at level sigma:
    {"n_steps", "rms" (sqrt of the mean squared error per row), "max" (largest per-row error), "rms_rel" (rms over
    the rms norm of the output), "sigma", "n"}."""
    a = IdealFlow(data, n_steps).forward(x.to(torch.float64), float(sigma))
    b = IdealFlow(data, 2 * n_steps).forward(x.to(torch.float64), float(sigma))
    err = (a - b).reshape(len(a), -1).pow(2).sum(1)
    return dict(n_steps=int(n_steps), sigma=float(sigma), n=int(len(a)), rms=float(err.mean().sqrt()),
                max=float(err.max().sqrt()), rms_rel=float(err.mean().sqrt() / b.reshape(len(b), -1).pow(2).sum(1)
                                                            .mean().sqrt()))


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            h.update(p.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()[:16]


def ideal_outputs(data: torch.Tensor, x: torch.Tensor, z: torch.Tensor, ts, n_steps: int = 32, cache=True) -> dict:
    """{t: IdealFlow(data, n_steps)(x + t z, t)} (float64, x's shape) for each level t > 0 in ``ts``.

    With ``cache`` (True: ``report.runs_dir()``; or a folder) each level is stored as
    ideal-<hash>.pt, the hash covering data, x, z, t and n_steps, and read back when present."""
    from .. import report
    folder = None
    if cache:
        folder = Path(report.runs_dir() if cache is True else cache) / "ideal_flow"
        folder.mkdir(parents=True, exist_ok=True)
    model = IdealFlow(data, n_steps)
    x64, z64 = x.to(torch.float64), z.to(torch.float64)
    key = _hash(data, x64, z64, n_steps)
    out = {}
    for t in ts:
        t = float(t)
        path = folder / f"ideal-{key}-{t:.6g}.pt" if folder is not None else None
        if t <= model.sigma_min:  # the flow map from sigma_min is the identity
            out[t] = x64 + t * z64
            continue
        if path is not None and path.is_file():
            out[t] = torch.load(path)
            continue
        y = model(x64 + t * z64, t)
        if path is not None:
            tmp = path.with_suffix(".tmp")
            torch.save(y, tmp)
            tmp.replace(path)
        out[t] = y
    return out


class Precomputed(_Reference):
    """A predictor that looks up precomputed outputs f(x + t z, t) of known draws (the cached ideal outputs);
    called only on those draws, all at once (``whole_draws``)."""
    whole_draws = True

    def __init__(self, outputs: dict, x: torch.Tensor, z: torch.Tensor, name: str, kind: str = "ideal", **kw):
        super().__init__(**kw)
        self.outputs, self.x, self.z, self.name, self.kind = outputs, x, z, name, kind

    def forward(self, xt: torch.Tensor, sigma) -> torch.Tensor:
        s = float(as_batch_sigma(sigma, xt)[0])
        t = min(self.outputs, key=lambda t: abs(t - s))
        if abs(t - s) > 1e-9 * max(1.0, s):
            raise ValueError(f"Precomputed predictor has no outputs at level {s:g} (it has {sorted(self.outputs)})")
        y = self.outputs[t]
        own = self.x + t * self.z
        if xt.shape != y.shape or not torch.allclose(xt.to(own.dtype), own, rtol=1e-6, atol=1e-9):
            raise ValueError("Precomputed predictor called on other draws than its own")
        return y.to(xt.dtype)


# --------------------------------------------------------------------------------------------- the quality guard
GUARD_LABELS = {"fd_digits": "FD_digits", "fid": "FID", "w2": "W2"}
YARDSTICK = "Gaussian fit"


def guard_metric(metric: str):
    """The quality function of a guard: (samples, data) -> a number, lower is better. ``metric`` is the data set's
    own (``gclib.data.DataSet.metric``): "fd_digits" (FD_digits against the whole set), "fid" (FID against the
    whole set; torch-fidelity), "w2" (the exact W2 to the data: against its distinct rows weighted by their counts
    when it has at most 4096 of them, e.g. two Diracs, on up to 2^23 / (distinct rows) samples; else 1024 samples
    against 1024 of its rows), or any other metric of ``gclib.evaluation``."""
    if metric == "fd_digits":
        from ..metrics import fd_digits
        return lambda samples, data: float(fd_digits(samples.to(torch.float32), data.to(torch.float32)))
    if metric == "w2":
        return _w2_guard
    from ..evaluation import evaluate_samples
    return lambda samples, data: float(evaluate_samples(samples.to(torch.float32), data, [metric])[metric])


def _w2_guard(samples: torch.Tensor, data: torch.Tensor) -> float:
    from ..metrics import exact_ot_cost
    from ..metrics._util import as_rows64
    rows = torch.as_tensor(data).to(torch.float64).reshape(len(data), -1)
    uniq, counts = torch.unique(rows, dim=0, return_counts=True)
    if len(uniq) <= 4096:
        ref, w, m = uniq, counts.to(torch.float64), max(1024, 2 ** 23 // len(uniq))
    else:
        g = torch.Generator().manual_seed(12345)
        ref, w, m = rows[torch.randperm(len(rows), generator=g)[:1024]], None, 1024
    s = as_rows64(samples[:m])
    return float(exact_ot_cost(s, as_rows64(ref), y_weights=w).cost) ** 0.5


class Guard:
    """Whether a subject's GC endpoints are a generator of the data, in the data's own feature space.

    values: {label: the metric of that subject's endpoints (the largest over the row's levels)}; floor: the metric
    of real samples of the same size against the same reference (``real_floor``: the median over the draws the
    endpoints were made from and four more); yardstick: the value
    of the Gaussian fit (``GaussianFit``), a generator that knows the data's mean and covariance only. The limit is
    their geometric midpoint sqrt(floor * yardstick) (the metric spans orders of magnitude): a subject passes
    ("holds") when its value is at most the limit, fails ("refuted") above it; without a yardstick or a floor the
    guard says "inconclusive". The yardstick fails by construction; every other control is a real test."""

    def __init__(self, metric: str, floor: float, values: dict, n: int):
        self.metric, self.floor, self.values, self.n = GUARD_LABELS.get(metric, metric), float(floor), dict(values), n
        self.yardstick = float(self.values.get(YARDSTICK, np.nan))
        ok = np.isfinite(self.floor) and np.isfinite(self.yardstick) and self.yardstick > self.floor >= 0
        self.limit = float(np.sqrt(self.floor * self.yardstick)) if ok else float("nan")

    def verdict(self, label: str) -> tuple[str, str]:
        v = float(self.values.get(label, np.nan))
        if not (np.isfinite(v) and np.isfinite(self.limit)):
            return "inconclusive", f"{self.metric} {v:.3g}, no limit"
        return ("holds" if v <= self.limit else "refuted"), f"{self.metric} {v:.3g} (limit {self.limit:.3g})"

    def text(self) -> str:
        return (f"guard {self.metric} of the endpoints on {self.n} draws: limit {self.limit:.3g} = sqrt(real-vs-real "
                f"floor {self.floor:.3g} x Gaussian fit {self.yardstick:.3g})")

    def as_dict(self) -> dict:
        return dict(metric=self.metric, floor=self.floor, yardstick=self.yardstick, limit=self.limit, n=self.n,
                    values=self.values)


def real_floor(x: torch.Tensor, data: torch.Tensor, metric: str, k: int = 5, seed: int = 0) -> float:
    """The real-vs-real floor of the guard at n = len(x): the median of the metric over ``k`` real samples of n
    rows, the draws ``x`` themselves and k - 1 more drawn with replacement from ``data`` (seeded). One sample's value
    is itself random (on two Diracs W2 ~ sqrt(|p^ - 1/2|), its imbalance between the atoms); the median is the
    typical real sample's."""
    fn = guard_metric(metric)
    ref = torch.as_tensor(data).detach().cpu()
    xs = torch.as_tensor(x).detach().cpu()
    g = torch.Generator().manual_seed(int(seed) + 54321)
    vals = [fn(xs, ref)] + [fn(ref[torch.randint(0, len(ref), (len(xs),), generator=g)], ref) for _ in range(k - 1)]
    return float(np.median(vals))


def guard(endpoints: dict, x: torch.Tensor, data: torch.Tensor, metric: str) -> Guard:
    """A ``Guard`` from {label: endpoints (n, ...) or a list of them, one per level}, the real draws ``x`` they
    were made from and the data set (the reference of the metric ``metric``); the floor is ``real_floor``."""
    fn = guard_metric(metric)
    ref = torch.as_tensor(data).detach().cpu()
    values = {}
    for label, e in endpoints.items():
        es = e if isinstance(e, (list, tuple)) else [e]
        values[label] = max(fn(torch.as_tensor(a).detach().cpu(), ref) for a in es)
    return Guard(metric, real_floor(x, data, metric), values, int(len(x)))


# --------------------------------------------------------------------------------------------- the trained model
def w2_to_data(samples: torch.Tensor, data: torch.Tensor, n: int = 898, seed: int = 0) -> dict:
    """The exact W2 (POT, uniform weights) of ``n`` samples against one half of the data set, and the real-vs-real
    floor: the other half against the same half. {"w2", "floor", "n"}."""
    from ..metrics import exact_ot_cost
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)
    half = len(data) // 2
    n = int(min(n, half))
    a, b = data[perm[:n]].to(torch.float64), data[perm[half:half + n]].to(torch.float64)
    s = samples[:n].to("cpu", torch.float64)
    return dict(w2=float(exact_ot_cost(s, b).cost) ** 0.5, floor=float(exact_ot_cost(a, b).cost) ** 0.5, n=n)


def quality(model, data: torch.Tensor, n: int = 2000, seed: int = 0, device: str = "cpu") -> dict:
    """How good a predictor's one-step samples f(sigma_max z, sigma_max) are: FD_digits (8x8 digits only, n
    samples against all digits), the exact W2 to the data with its real-vs-real floor (``w2_to_data``)."""
    from ..evaluation import generate
    shape = tuple(data.shape[1:])
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, _Reference):
        zz = torch.randn((n, *shape), generator=g, dtype=torch.float64)
        with torch.no_grad():
            samples = model(model.sigma_max * zz, model.sigma_max).to(torch.float32)
    else:
        samples = generate(model, n, shape, model.sigma_max, seed=seed, device=device).cpu()
    out = {}
    if shape == (1, 8, 8):
        from ..data import digits
        from ..metrics import fd_digits
        out["FD_digits"] = float(fd_digits(samples, digits()))
    w = w2_to_data(samples, data.cpu(), seed=seed)
    out.update(W2=w["w2"], W2_floor=w["floor"], W2_n=w["n"], n=int(n))
    return out


def quality_text(q: dict) -> str:
    fd = f"FD_digits {q['FD_digits']:.3g}, " if "FD_digits" in q else ""
    return f"{fd}W2 to the data {q['W2']:.3g} (real-vs-real floor {q['W2_floor']:.3g}, {q['W2_n']} rows)"


def trained(cfg, device: str = "cpu"):
    """(model, data, info): the EMA network of the run configured by ``cfg`` (trained here, or taken from the run
    cache when a run with the same configuration hash exists), its finite training set, and
    info = {kind, name, run, steps, config} naming it."""
    from .common import trained_model
    ema, data, run_dir = trained_model(cfg, device)
    ema.kind = "trained"
    name = (f"{cfg.name}: {cfg.flow.upper()} model {cfg.model}, {cfg.total_steps} steps, batch {cfg.batch_size}, "
            f"lr {cfg.lr:g}, seed {cfg.seed}, EMA weights")
    return ema, data, dict(kind="trained", name=name, run=run_dir.name, steps=int(cfg.total_steps))

