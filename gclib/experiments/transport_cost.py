r"""Fig. 3 (docs/method.md section 6, Lemma 1, Corollary 1): the transport cost of the GC coupling, measured on the
trained predictor, on the exact flow of the data (the ideal) and on broken predictors it must reject.

c(t) = E||f(x + t z, t) - z||^2, (x, z) independent: the cost of the GC coupling whose predictor f acts at level t;
c(0) = E||x - z||^2 is the independent coupling's cost. Every predictor is measured on the SAME n draws (x, z)
(common random numbers). The predictors (``gclib.experiments.references``):

- trained: the EMA network of the run named by the params file (trained by the notebook, shared through the cache);
- ideal: the exact PF-ODE flow map of the finite data set (its outputs cached in the run cache);
- controls: collapsed (constant output), untrained (f = c_skip(t) x_t), identity (f = x_t).

Rows (``transport_claims``), each judged on the model and its reference and each naming the controls it must
reject (``verdicts.judged_row``: a control not rejected caps the row at inconclusive):

1. Corollary 1: c decreases from c(sigma_min) over the first levels, on the model and on the exact flow of a
   **continuous** density with a closed-form score (``references.GaussianMixtureFlow``, the 2-D toy's mixture; the
   exact flow of a finite point set returns x + sigma_min z near t = 0, so its c is flat there to float rounding).
   Control: the collapsed predictor (c flat: refuted).
2. Fig. 3: at t_max, c below minibatch OT at each batch size, for the model and the exact flow, while the
   predictor's outputs pass the quality guard (``references.Guard``: FD_digits on digits, W2 on 2-D data, below
   the geometric midpoint of the real-vs-real floor and the Gaussian fit). Controls: untrained, collapsed,
   identity, the exact flow shrunk by 0.5 and 0.7, the Gaussian fit.
3. Minibatch OT's cost falls with its batch size. Control: the same batches left unmatched (flat: refuted).

Lemma 1 (c'(t) = 2 E[(f - z) . d/dt f(x + t z, t)]) is a formula, true for any differentiable f, so it is no claim
row: ``lemma1_terms`` computes it and tests/test_claim_controls.py checks it against finite differences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from .. import report
from ..checks import check_flow, check_mu
from ..metrics._util import as_rows64, draw_data, eval_mode, model_device_dtype
from ..metrics.transport import exact_ot_cost, minibatch_ot_cost
from ..precond import as_batch_sigma
from . import common, references
from .common import combine_verdicts, diff_verdict, paired_verdict
from .params import between, int_at_least, levels, nonempty, optional, positive_int
from .spec import Param, Spec, register_spec
from .verdicts import interval_power, judged_row

PAPER = {
    "near0": "Corollary 1: c decreases in t on an interval [0, t*] (for the true flow; the premise is that the "
             "Jacobian of f is the identity near t = 0).",
    "ot": "Abstract (arXiv v2): 'our generator-induced flow surpasses dedicated optimal transport-based consistency "
          "models in effectively reducing the noise-data transport cost'; Fig. 3 (CIFAR-10): GC's cost below "
          "minibatch OT's.",
    "ot_b": "Minibatch OT (docs/method.md section 5): the matched cost approaches the exact OT cost as the batch "
            "grows (a property of the baseline Fig. 3 compares against).",
}
CONTROL_NAMES = ("collapsed", "untrained", "identity", "shrunk 0.5", "shrunk 0.7", "Gaussian fit")
FIG3_CONTROLS = ("untrained", "collapsed", "identity", "shrunk 0.5", "shrunk 0.7", "Gaussian fit")


# --------------------------------------------------------------------------------------------- parameters
# notebooks/transport_cost.ipynb's parameters, each declared once (default: the parameters cell spells the same; doc;
# rule; ``config=True``: a Config field of the trained model). The bounds that need the data set's sigma range or
# another parameter are checked in ``setup``.
SPEC = register_spec(Spec("transport_cost", (
    Param("variant", "default", "results/transport_cost/<variant>/"),
    Param("flow", "ic", "flow of the trained predictor: a registered coupling (ic, ot, gc, a plugin's)",
          rule=lambda name, v: check_flow(v)),
    Param("mu", 0.5, "probability of a GC sample (a coupling that reads mu)", rule=lambda name, v: check_mu(v)),
    Param("dataset", "8gaussians", "a 2-D toy, 'digits' or 'cifar10'", rule=lambda name, v: common.check_dataset(v)),
    Param("train_steps", 400, "None: the steps of params/train/<family>.yaml", rule=optional(positive_int)),
    Param("train_overrides", common.TRAIN_OVERRIDES,
          "Config fields of the trained predictor"),
    Param("seed", 0, "training seed and the draws' seed"),
    Param("device", "auto", "auto | cpu | cuda"),
    Param("ts", [0.02, 0.1, 0.5, 2.0, 5.0], "levels of the predictor; 0 (IC) and sigma_min are added", rule=levels()),
    Param("n", 512, "draws (x, z)", rule=positive_int),
    Param("ot_n", 256, "draws used in the exact OT computations (W2 to the data, GC's bound)", rule=positive_int),
    Param("ot_batch_sizes", [16, 64, 256], "minibatch-OT batch sizes", rule=nonempty(int_at_least(2))),
    Param("n_near", 2, "Corollary 1: the first n_near levels above sigma_min", rule=positive_int),
    Param("ideal_steps", 32, "Heun steps of the exact flow map", rule=positive_int),
    Param("level", 0.9, "level of every interval", rule=between(0.0, 1.0)),
)))
RULES = SPEC.rules()


def setup(params, spec: Spec = SPEC):
    """Check the parameters of notebooks/transport_cost.ipynb (the mapping ``check_params`` returns; ``spec``'s
    defaults fill what it lacks; every rule, one line per bad value, then the bounds that need the training
    configuration or another parameter: one clear ValueError naming the parameter, before any work) and return
    (cfg, device, out): the training configuration, the resolved device and the results folder."""
    v = spec.values(params)
    p = SimpleNamespace(**v)

    def bad(name, what):
        raise ValueError(f"transport_cost: {name}={getattr(p, name)!r} is not valid; {what}")
    if p.ot_n > p.n:
        bad("ot_n", f"it must be at most n={p.n}")
    if any(b > p.n for b in p.ot_batch_sizes):
        bad("ot_batch_sizes", f"each must be an integer in [2, n={p.n}]")
    cfg = common.train_config(p.dataset, p.flow, mu=p.mu, steps=p.train_steps, seed=p.seed,
                              **spec.with_config(v, p.train_overrides, "train_overrides"))
    levels(lo=cfg.sigma_min, hi=cfg.sigma_max)("ts", p.ts)
    if len(p.ts) < p.n_near:
        bad("n_near", f"ts has only {len(p.ts)} levels")
    dev = common.resolve_device(p.device)
    return cfg, dev, report.results_dir("transport_cost", p.variant)


# --------------------------------------------------------------------------------------------- measurements
@dataclass
class Costs:
    """What ``transport_costs`` measured.

    curve: one row per (predictor, t) with cost, stderr (c(t) over the n draws), guard (the data set's quality
    metric of the predictor's outputs against the data: FD_digits, FID or W2; measured for the model and the ideal
    at every level, for the controls at t_max; NaN elsewhere), plus w2sq_noise for the model (exact OT of its
    outputs against fresh noise: GC's own bound). baselines: coupling, batch_size, cost, stderr for IC, minibatch
    OT and unmatched batches. per_draw[label][t]: per-draw costs (numpy (n,)). info: n, ot_n, metric, guard_floor
    (the real-vs-real floor at n draws, ``references.real_floor``), seed."""
    curve: pd.DataFrame
    baselines: pd.DataFrame
    per_draw: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def guard(self) -> references.Guard:
        """The quality guard of the outputs at t_max (``references.Guard``)."""
        cur = self.curve
        at = cur[(cur.t == cur.t.max()) & np.isfinite(cur.guard)]
        return references.Guard(self.info.get("metric", "?"), self.info["guard_floor"],
                                dict(zip(at.predictor, at.guard)), self.info["n"])


def draws(data, n: int, seed: int = 0):
    """The n shared draws (x, z), float64 on the CPU: x uniform on the data rows, z ~ N(0, I)."""
    g = torch.Generator().manual_seed(seed)
    x = draw_data(data, n, g).to("cpu", torch.float64)
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x, z


def predict(model, x: torch.Tensor, z: torch.Tensor, t: float, batch_size: int = 4096) -> torch.Tensor:
    """x^_t = f(x + t z, t) in chunks on the model's device (float64 on the CPU); t = 0 returns x."""
    if t == 0.0:
        return x.clone()
    if getattr(model, "whole_draws", False):  # a Precomputed (or a control built on one) answers all its draws at once
        with torch.no_grad():
            return model(x + t * z, as_batch_sigma(t, x)).to(torch.float64)
    device, dtype = model_device_dtype(model, x)
    outs = []
    with eval_mode(model), torch.no_grad():
        for a in range(0, x.shape[0], batch_size):
            xb = x[a:a + batch_size].to(device=device, dtype=dtype)
            zb = z[a:a + batch_size].to(device=device, dtype=dtype)
            outs.append(model(xb + t * zb, as_batch_sigma(t, xb)).to("cpu", torch.float64))
    return torch.cat(outs)


def _unmatched_cost(x, z, b: int, seed: int) -> dict:
    """The control of 'OT falls with B': the same shuffled batches as ``minibatch_ot_cost``, left unmatched."""
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    xt, zt = x[torch.randperm(n, generator=g)], z[torch.randperm(n, generator=g)]
    c = torch.tensor([float((xt[k * b:(k + 1) * b] - zt[k * b:(k + 1) * b]).reshape(b, -1).pow(2).sum(1).mean())
                      for k in range(n // b)], dtype=torch.float64)
    return dict(cost=float(c.mean()), stderr=float(c.std() / np.sqrt(len(c))))


def transport_costs(models: dict, data, ts, n: int = 2048, batch_sizes=(64, 256, 1024), ot_n: int | None = None,
                    seed: int = 0, out=None, every_level=("trained", "ideal"), metric: str = "w2",
                    own_bound: str = "trained") -> Costs:
    """c(t) of every predictor in ``models`` ({label: f}) at the levels ``ts`` (0 and sigma_min are added), the
    data set's quality metric ``metric`` of its outputs (``references.guard_metric``; at every level for the
    labels in ``every_level``, at t_max for the others) and the IC, minibatch-OT and unmatched baselines, all on the
    SAME n draws (``draws(data, n, seed)``); the label ``own_bound`` also gets GC's own bound (exact OT of its outputs
    against fresh noise, on ot_n rows). A label "ideal" may be a ``references.Precomputed`` of those draws.
    Writes cost_vs_t.csv and baselines.csv to ``out`` if given."""
    smin = min(getattr(m, "sigma_min", 0.002) for m in models.values())
    ts = sorted({0.0, float(smin), *[float(t) for t in ts]})
    ot_n = int(ot_n or n)
    x, z = draws(data, n, seed)
    g2 = torch.Generator().manual_seed(seed + 2)
    z_fresh = torch.randn((ot_n, *x.shape[1:]), generator=g2, dtype=torch.float64)
    zf = as_rows64(z_fresh)
    qual = references.guard_metric(metric)
    ref = torch.as_tensor(data).detach().cpu()
    t_max = ts[-1]
    rows, per = [], {}
    for label, model in models.items():
        per[label] = {}
        for t in ts:
            xh = predict(model, x, z, t)
            c = (xh - z).reshape(n, -1).pow(2).sum(1).numpy()
            per[label][t] = c
            row = dict(predictor=label, t=t, cost=float(c.mean()), stderr=float(c.std(ddof=1) / np.sqrt(n)),
                       guard=np.nan, w2sq_noise=np.nan)
            if t > 0 and (label in every_level or t == t_max):
                row["guard"] = qual(xh, ref)
            if t > 0 and label == own_bound:
                row["w2sq_noise"] = float(exact_ot_cost(as_rows64(xh[:ot_n]), zf).cost)
            rows.append(row)
    curve = pd.DataFrame(rows)
    first = next(iter(per))
    base = [dict(coupling="IC", batch_size=np.nan, cost=float(per[first][0.0].mean()),
                 stderr=float(per[first][0.0].std(ddof=1) / np.sqrt(n)))]
    for b in batch_sizes:
        r = minibatch_ot_cost(x, z, int(b), solver="emd", generator=torch.Generator().manual_seed(seed + 1))
        base.append(dict(coupling="minibatch OT", batch_size=int(b), cost=r["cost"], stderr=r["stderr"]))
        u = _unmatched_cost(x, z, int(b), seed + 1)
        base.append(dict(coupling="unmatched batches", batch_size=int(b), cost=u["cost"], stderr=u["stderr"]))
    res = Costs(curve, pd.DataFrame(base), per, dict(n=int(n), ot_n=ot_n, seed=int(seed), metric=metric,
                                                      guard_floor=references.real_floor(x, ref, metric)))
    if out is not None:
        report.save_table(res.curve, Path(out) / "cost_vs_t.csv")
        report.save_table(res.baselines, Path(out) / "baselines.csv")
    return res


def continuous_costs(flow, ts, n: int = 2048, seed: int = 0) -> pd.DataFrame:
    """c(t) of the exact flow of a continuous density (``references.GaussianMixtureFlow``) on n draws x from that
    density (z ~ N(0, I)) at t = sigma_min and each level of ``ts``, with its closed form where the mixture's
    components do not overlap (``cost_near0``). Long table: t, cost, stderr, closed_form, and the per-draw costs in
    ``.attrs["per_draw"]`` ({t: numpy (n,)})."""
    g = torch.Generator().manual_seed(seed + 11)
    x = flow.sample(n, g)
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    rows, per = [], {}
    for t in sorted({float(flow.sigma_min), *[float(t) for t in ts]}):
        with torch.no_grad():
            xh = flow(x + t * z, t)
        c = (xh - z).pow(2).sum(1).numpy()
        per[t] = c
        rows.append(dict(t=t, cost=float(c.mean()), stderr=float(c.std(ddof=1) / np.sqrt(n)),
                         closed_form=flow.cost_near0(t)))
    df = pd.DataFrame(rows)
    df.attrs["per_draw"] = per
    return df


def lemma1_terms(model, x: torch.Tensor, z: torch.Tensor, t: float, delta: float) -> dict:
    """Per draw (numpy (n,)): the finite difference (c_k(t + delta) - c_k(t - delta)) / (2 delta), Lemma 1's
    derivative 2 (f - z) . d/dt f(x + t z, t) (one forward-mode JVP in t, float64) and the Jacobian-is-identity
    shortcut 2 (f - z) . (z + d_t f) (a JVP in t at fixed input)."""
    import copy
    from torch.func import jvp
    if isinstance(model, torch.nn.Module) and any(p.dtype != torch.float64 for p in model.parameters()):
        model = copy.deepcopy(model).double()  # finite differences of c need float64 (float32 rounding is ~1e-7 c)
    dev, dtype = model_device_dtype(model, x.to(torch.float64))
    xx, zz = x.to(dev, dtype), z.to(dev, dtype)
    tt = torch.full((x.shape[0],), float(t), dtype=dtype, device=dev)
    cost = lambda s: ((model(xx + s * zz, as_batch_sigma(s, xx)) - zz) ** 2).reshape(len(xx), -1).sum(1)  # noqa: E731
    with eval_mode(model):
        with torch.no_grad():
            fd = (cost(t + delta) - cost(t - delta)) / (2 * delta)
        f, df = jvp(lambda s: model(xx + s[:, None].reshape(-1, *[1] * (xx.ndim - 1)) * zz, s), (tt,),
                    (torch.ones_like(tt),))
        _, dtf = jvp(lambda s: model(xx + float(t) * zz, s), (tt,), (torch.ones_like(tt),))
    r = lambda a: a.detach().reshape(len(xx), -1)  # noqa: E731
    formula = 2 * (r(f) - r(zz)).mul(r(df)).sum(1)
    shortcut = 2 * (r(f) - r(zz)).mul(r(zz) + r(dtf)).sum(1)
    np_ = lambda a: a.detach().to("cpu", torch.float64).numpy()  # noqa: E731
    with torch.no_grad():
        c = cost(t)
    return dict(fd=np_(fd), formula=np_(formula), shortcut=np_(shortcut), c=np_(c))


# --------------------------------------------------------------------------------------------- claims
def equivalence_verdict(lo: float, hi: float, tol: float) -> str:
    """"holds" when the interval [lo, hi] of a relative difference lies inside [-tol, tol]; "refuted" when it lies
    entirely outside; "inconclusive" otherwise (or when not finite)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if -tol <= lo and hi <= tol:
        return "holds"
    return "refuted" if (lo > tol or hi < -tol) else "inconclusive"


def near0_verdict(per: dict, n_near: int, level: float = 0.9) -> tuple[str, str]:
    """Corollary 1 for one predictor from its per-draw costs {t: numpy (n,)} (t = 0 if present, sigma_min, then
    the levels): c(t) < c(sigma_min) at each of the first ``n_near`` levels above sigma_min (paired over the draws).
    A c flat to float rounding (every difference within 1e-9 of c) does not decrease: "refuted"."""
    lv = sorted(t for t in per if t > 0)
    smin, near = lv[0], lv[1:1 + n_near]
    vs = [paired_verdict(per[t], per[smin], "less", level) for t in near]
    scale = float(np.mean(per[smin]))
    flat = bool(vs) and all(max(abs(v.lo), abs(v.hi)) <= 1e-9 * scale for v in vs)
    txt = ", ".join(f"c({t:g}) - c({smin:g}) = {v.mean:.3g} [{v.lo:.3g}, {v.hi:.3g}]" for t, v in zip(near, vs))
    if flat:
        return "refuted", txt + " (flat to float rounding)"
    return combine_verdicts(v.verdict for v in vs), txt


def _z(level: float) -> float:
    from scipy import stats
    return float(stats.norm.ppf(0.5 + level / 2))


def _near0_power(per: dict, n_near: int, level: float) -> str:
    """The chance that each level's paired interval shows the decrease at the measured one (the weakest level)."""
    lv = sorted(t for t in per if t > 0)
    smin, near = lv[0], lv[1:1 + n_near]
    pws = []
    for t in near:
        d = np.asarray(per[t]) - np.asarray(per[smin])
        se = float(d.std(ddof=1) / np.sqrt(len(d)))
        pws.append(interval_power(float(d.mean()), se, level) if d.mean() < 0 else 0.0)
    return f"{min(pws):.0%} at the weakest level" if pws else "no level"


def ot_verdicts(costs: Costs, label: str, level: float = 0.9) -> list:
    """[(batch_size, DiffVerdict)]: c_label(t_max) against minibatch OT at each batch size."""
    cur = costs.curve[costs.curve.predictor == label].set_index("t")
    t_max = float(cur.index.max())
    ot = costs.baselines[costs.baselines.coupling == "minibatch OT"]
    return [(int(r.batch_size), diff_verdict(float(cur.loc[t_max, "cost"]), float(cur.loc[t_max, "stderr"]),
                                             r.cost, r.stderr, "less", level)) for r in ot.itertuples()]


def fig3_verdict(costs: Costs, label: str, level: float = 0.9, guard: references.Guard | None = None) -> tuple[str, str]:
    """Fig. 3 for one predictor: c(t_max) below minibatch OT at every batch size (both sides exact expectations on
    the shared draws) AND its outputs at t_max pass the quality guard (``Costs.guard``)."""
    guard = guard if guard is not None else costs.guard()
    cur = costs.curve[costs.curve.predictor == label].set_index("t")
    t_max = float(cur.index.max())
    gv, gt = guard.verdict(label)
    vs = ot_verdicts(costs, label, level)
    txt = (f"c({t_max:g}) {float(cur.loc[t_max, 'cost']):.4g}, " + ", ".join(
        f"B={b}: {v.mean:+.3g} [{v.lo:.3g}, {v.hi:.3g}]" for b, v in vs) + f"; guard {gv}: {gt}")
    return combine_verdicts([gv] + [v.verdict for _, v in vs]), txt


def ot_batch_verdict(costs: Costs, coupling: str = "minibatch OT", level: float = 0.9) -> tuple[str, str]:
    """OT's cost falls with B: each step to the next batch size lower (normal interval from the standard errors).
    Costs equal to float rounding at every batch size do not fall: "refuted"."""
    b = costs.baselines[costs.baselines.coupling == coupling].sort_values("batch_size")
    vs = [diff_verdict(r2.cost, r2.stderr, r1.cost, r1.stderr, "less", level)
          for r1, r2 in zip(b.iloc[:-1].itertuples(), b.iloc[1:].itertuples())]
    txt = ", ".join(f"B={int(r.batch_size)}: {r.cost:.4g}" for r in b.itertuples())
    if vs and all(abs(v.mean) <= 1e-9 * abs(float(b.cost.mean())) for v in vs):
        return "refuted", txt + " (equal at every B)"
    return (combine_verdicts(v.verdict for v in vs) if vs else "inconclusive"), txt


def transport_claims(costs: Costs, cont: pd.DataFrame | None = None, n_near: int = 2, level: float = 0.9,
                     label: str = "trained", require=None) -> list[dict]:
    """The three rows of the module docstring, judged on ``label`` (the model) and the ideal (those in ``require``,
    default both, must hold) with their controls; ``cont``: ``continuous_costs`` of the continuous density's exact
    flow, the ideal of Corollary 1 (without it that row's ideal is inconclusive)."""
    require = tuple(require or (label, "ideal"))
    out = []
    subjects = {label: near0_verdict(costs.per_draw[label], n_near, level)}
    if cont is not None and len(cont):
        v, txt = near0_verdict(cont.attrs["per_draw"], n_near, level)
        cf = ", ".join(f"c({r.t:g}) {r.cost:.4g} (closed form {r.closed_form:.4g})" for r in cont.itertuples())
        subjects["ideal"] = (v, f"exact flow of the continuous mixture: {txt}; {cf}")
    ctl = {k: near0_verdict(costs.per_draw[k], n_near, level) for k in ("collapsed",) if k in costs.per_draw}
    pw_near = "; ".join(f"{k} {_near0_power(per, n_near, level)}" for k, per in
                        ((label, costs.per_draw[label]), ("ideal", cont.attrs["per_draw"] if cont is not None and len(cont)
                                                          else None)) if per is not None)
    out.append(judged_row(f"Corollary 1: c(t) decreases from c(sigma_min) over the first {n_near} levels", PAPER["near0"],
                          subjects, ctl, require=require, power=pw_near,
                          note="paired 90% t-intervals over the shared draws; the ideal is the exact flow of a "
                               "continuous density (on a finite point set the exact flow is x + sigma_min z near 0, "
                               "c flat to float rounding)"))
    guard = costs.guard()
    subjects = {k: fig3_verdict(costs, k, level, guard) for k in (label, "ideal") if k in costs.per_draw}
    ctl = {k: fig3_verdict(costs, k, level, guard) for k in FIG3_CONTROLS if k in costs.per_draw}
    per_b = ", ".join(f"B={b}: " + ", ".join(f"{k} {dict(ot_verdicts(costs, k, level))[b].verdict}" for k in subjects)
                      for b, _ in ot_verdicts(costs, label, level))
    pw3 = "; ".join(f"{k} {min(interval_power(v.mean, (v.hi - v.lo) / 2 / _z(level), level) for _, v in ot_verdicts(costs, k, level)):.0%}"
                    for k in subjects) + " at the weakest batch size, at the measured differences"
    out.append(judged_row("GC's transport cost ends below minibatch OT's at every batch size, with the predictor's "
                          "outputs passing the quality guard", PAPER["ot"], subjects, ctl, require=require, power=pw3,
                          note=f"{guard.text()}; per batch size: {per_b}"))
    v_ot, t_ot = ot_batch_verdict(costs, "minibatch OT", level)
    b = costs.baselines[costs.baselines.coupling == "minibatch OT"].sort_values("batch_size")
    steps = [interval_power(r2.cost - r1.cost, float(np.hypot(r1.stderr, r2.stderr)), level)
             for r1, r2 in zip(b.iloc[:-1].itertuples(), b.iloc[1:].itertuples())]
    out.append(judged_row("Minibatch OT's cost falls as its batch size grows", PAPER["ot_b"],
                          {"minibatch OT": (v_ot, t_ot)},
                          {"unmatched batches": ot_batch_verdict(costs, "unmatched batches", level)},
                          require=("minibatch OT",),
                          power=f"{min(steps):.0%} at the weakest step, at the measured differences" if steps else ""))
    return out


# --------------------------------------------------------------------------------------------- figure, metrics
def plot_costs(costs: Costs, out, dataset: str = "") -> None:
    """Fig. 3. Left: c(t) of each predictor (model, ideal, controls) against t, with IC's cost and minibatch OT at
    each batch size. Right: the quality guard's metric of the outputs against the data, with the real-vs-real floor
    and the guard's limit. Saved as cost_vs_t.png."""
    from matplotlib.figure import Figure
    cur, base = costs.curve, costs.baselines
    guard = costs.guard()
    fig = Figure(figsize=(12, 4.2))
    ax, bx = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.6, 1]))
    styles = {"trained": ("C0", "o-"), "model": ("C0", "o-"), "ideal": ("k", "s-"), "collapsed": ("C5", ":"),
              "untrained": ("C1", "--"), "identity": ("C4", "-."), "shrunk 0.5": ("C8", "--"),
              "shrunk 0.7": ("C9", "--"), "Gaussian fit": ("C6", ":")}
    for label, d in cur[cur.t > 0].groupby("predictor", sort=False):
        color, st = styles.get(label, ("C7", "-"))
        ax.plot(d.t, d.cost, st, color=color, ms=3, label=label)
        w = d[np.isfinite(d.guard)]
        bx.plot(w.t, w.guard, st if len(w) > 1 else "o", color=color, ms=3, label=label)
    ax.axhline(float(base.cost.iloc[0]), ls="--", color="C3", lw=0.8, label="IC, c(0)")
    for k, r in enumerate(base[base.coupling == "minibatch OT"].itertuples()):
        ax.axhline(r.cost, ls=":", color=f"C{2 + k}", label=f"minibatch OT, B = {int(r.batch_size)}")
    ax.set(xscale="log", xlabel="t (level of the predictor)", ylabel=r"$E\|\hat x_t - z\|^2$",
           title=f"transport cost ({dataset}, {costs.info['n']} draws)")
    ax.legend(fontsize=7)
    bx.axhline(guard.floor, color="k", lw=0.8, ls="--", label="real vs real (floor)")
    if np.isfinite(guard.limit):
        bx.axhline(guard.limit, color="C3", lw=0.8, ls="-", label="guard limit")
    bx.set(xscale="log", yscale="log", xlabel="t", ylabel=f"{guard.metric}" + r"$(\hat x_t, \mathrm{data})$",
           title="outputs against the data (the guard)")
    bx.legend(fontsize=7)
    for a in (ax, bx):
        a.grid(alpha=0.3, which="both")
    fig.tight_layout()
    report.show_figure(fig, Path(out) / "cost_vs_t.png")


def metrics(costs: Costs, claims: list[dict], info: dict, quality: dict, cont: pd.DataFrame | None = None,
            **extra) -> dict:
    """The metrics.json content: curves of every predictor, baselines, the guard, the continuous density's costs
    (Corollary 1's ideal), the model and its quality, the ideal solver and its error, and the claims."""
    cur, base = costs.curve, costs.baselines
    t_max = float(cur.t.max())
    at = lambda label: float(cur[(cur.predictor == label) & (cur.t == t_max)].cost.iloc[0])  # noqa: E731
    ot_rows = base[base.coupling == "minibatch OT"]
    return dict(**extra, n=costs.info["n"], ot_n=costs.info["ot_n"], model=info, model_quality=quality,
                curve=cur.to_dict(orient="records"), baselines=base.to_dict(orient="records"),
                continuous=[] if cont is None else cont.to_dict(orient="records"), ic_cost=float(base.cost.iloc[0]),
                cost_at_t_max={k: at(k) for k in costs.per_draw}, guard=costs.guard().as_dict(),
                minibatch_ot_costs={int(r.batch_size): float(r.cost) for r in ot_rows.itertuples()},
                claims=claims)


def summary(m: dict) -> str:
    """The short deterministic text nbval compares (2 significant digits) with the verdicts."""
    return report.summary({
        "ic_cost": m["ic_cost"], "cost_at_t_max": m["cost_at_t_max"], "minibatch_ot_costs": m["minibatch_ot_costs"],
        "guard_limit": m["guard"]["limit"], "model": m["model"]["name"].split(":")[0],
        "verdicts": [c["verdict"] for c in m["claims"]],
        "control_verdicts": [c.get("control_verdict") for c in m["claims"]],
    })
