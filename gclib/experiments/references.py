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
  ``Identity`` (f(x, t) = x) and, for Theorem 1, a wrong CD teacher ``zero_velocity`` (v = 0).

Every model here is an ``nn.Module`` called as f(x, sigma) with ``sigma_min`` and ``sigma_max`` attributes, so the
metrics (gap, transport cost, couplings) take any of them. The ideal flow on many points is slow (one Heun step is
two passes over the data set), so ``ideal_outputs`` caches its predictions under the run cache, keyed by a hash of
everything they depend on: two notebooks asking for the same draws compute them once.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

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
    called only on those draws."""

    def __init__(self, outputs: dict, x: torch.Tensor, z: torch.Tensor, name: str, kind: str = "ideal", **kw):
        super().__init__(**kw)
        self.outputs, self.x, self.z, self.name, self.kind = outputs, x, z, name, kind

    def forward(self, xt: torch.Tensor, sigma) -> torch.Tensor:
        s = float(as_batch_sigma(sigma, xt)[0])
        t = min(self.outputs, key=lambda t: abs(t - s))
        if abs(t - s) > 1e-9 * max(1.0, s):
            raise ValueError(f"Precomputed predictor has no outputs at level {s:g} (it has {sorted(self.outputs)})")
        y = self.outputs[t]
        if xt.shape != y.shape:
            raise ValueError("Precomputed predictor called on other draws than its own")
        return y.to(xt.dtype)


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

