r"""Theorem 1, Fig. 2 and Theorem 2 on a finite data set (docs/method.md section 3), each row measured on the
trained model, on the exact flow of the data (the ideal) and on broken models it must reject
(``gclib.experiments.references``).

- ``setup(...)``: validates the notebook's parameters -> (cfg, device, out).
- ``gap_curves(model, data, settings, ...)``: ``gclib.metrics.gap.ct_cd_gap`` per distance (iCT weights 1/h, so
  N (L_CT - L_CD) converges to C R_1). The limit is judged against the **plain** estimator
  C (T - s) E||J (z - v_t)||^2 with v_t the TRUE velocity, by the paired per-sample difference
  N (L_CT - L_CD)_k - limit_k at the largest N (an equivalence test: the 90% interval of the relative difference
  inside +-rel_tol). The "paired" estimator (the per-sample Taylor identity) is reported but not judged: it holds for
  any teacher.
- ``gradient_rows(...)``: Theorem 1 (ii) on the whole gradient (``gclib.metrics.gap.ct_cd_gradient_vectors``:
  alpha = 2, the CT and CD gradient limits coincide, judged by ||E(G_CT - G_CD)|| / ||E G_CD|| within
  ``grad_tol``; alpha = 1: they differ), with the wrong teachers v = 0 and 1.1 v and the one-point data set.
- ``deterministic(...)``: R = 0 and CT = CD for a deterministic coupling (data made of one point, where z = v_t).
- ``plugin_proxies(...)`` (``ct_cd_proxy``): R~_t = E||z - E[z | y]||^2 per coupling (IC exact; OT and GC upper bounds), with the
  quality guard of each GC coupling's endpoints in the data's own feature space (``references.guard_metric``).
- ``gap_claims`` (``ct_cd_claims``: Theorem 1's rows, their power and the paper's sentences) and ``proxy_claims``
  (``ct_cd_proxy``: Fig. 2 and Theorem 2, with ``plugin_proxies`` and the figure): the rows, each with the model
  judged / ideal / control values, built by ``verdicts.judged_row`` (bounds never refute the wrong way; a control
  not rejected caps the row at inconclusive). ``gclib.claims.judge`` runs them all on any model. This module
  measures and re-exports both, so the notebook and user code need one import.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from .. import report
from ..losses import pseudo_huber_c
from ..metrics.gap import ct_cd_gaps
from . import common, references
from .ct_cd_claims import (PAPER, POSITIVE_LEVEL, ROUNDING, WHOLE_TOL, Z_POSITIVE, _grad_verdict,  # noqa: F401
                           _positive, gap_claims, grad_detect, grad_power, limit_n_for_power, limit_power)
from .ct_cd_proxy import plot_proxy, plugin_proxies, proxy_claims, proxy_guard, ratio_trend  # noqa: F401
from .inference import mean_lower_bound
from .params import between, each, levels, optional, positive_int
from .spec import Param, Spec, register_spec


# --------------------------------------------------------------------------------------------- parameters
# notebooks/ct_cd_gap.ipynb's parameters, each declared once (default: the parameters cell spells the same; doc;
# rule; ``config=True``: a Config field of the trained model). Bounds that depend on the data set's sigma range or
# on another parameter are checked in ``setup`` once the training configuration is known.
SPEC = register_spec(Spec("ct_cd_gap", (
    Param("variant", "default", "results/ct_cd_gap/<variant>/"),
    Param("dataset", "8gaussians", "the finite training set: a 2-D toy, 'digits' or 'cifar10'",
          rule=lambda name, v: common.check_dataset(v)),
    Param("train_steps", 400, "the trained IC model (None: the steps of params/train/<family>.yaml)",
          rule=optional(positive_int)),
    Param("train_overrides", common.TRAIN_OVERRIDES, "Config fields of the trained IC model"),
    Param("seed", 0, "training seed and the draws' seed"),
    Param("device", "auto", "auto | cpu | cuda"),
    Param("T", 1.0, "Theorem 1: the gap against N on [sigma_min, T]"),
    Param("Ns", [10, 160, 2560], "N of the gap curve", rule=levels()),
    Param("n_gap", 1024, "samples (x, z, u) of the curve, shared by every N and both losses", rule=positive_int),
    Param("n_limit", 2048, "samples at the largest N and for the limit (a superset of the curve's)",
          rule=positive_int),
    Param("huber_cs", [0.1], "pseudo-Huber c values besides squared L2; None means the paper value 0.00054 sqrt(d)",
          rule=each(between(0.0, float("inf")))),
    Param("rel_tol", 0.1, "equivalence tolerance of the limit row", rule=between(0.0, 1.0)),
    Param("ideal_Ns", [2560], "N for the exact flow (slow: a flow map per point)", rule=levels()),
    Param("ideal_n", 128, "samples of the exact flow's gap", rule=positive_int),
    Param("mixture_n", 2048, "draws of the limit row's ideal, the exact flow of a continuous mixture (cheap, 2-D)",
          rule=positive_int),
    Param("ideal_steps", 32, "Heun steps of the exact flow map (its error against 2x as many is printed)",
          rule=positive_int),
    Param("grad_Ns", [2560], "Theorem 1 (ii): N for the gradients (the whole gradient, reverse mode)",
          rule=levels()),
    Param("grad_n", 1024, "draws; the controls (teacher v 0, one point) use a quarter, at least 256",
          rule=positive_int),
    Param("grad_tol", 0.05, "alpha 2: tolerance of (G_CT - G_CD)/G_CD along the CD gradient",
          rule=between(0.0, 1.0)),
    Param("proxy_ts", [0.5, 2.0, 5.0], "Fig. 2 and Theorem 2: the levels of the proxy R~_t per coupling"),
    Param("proxy_n", 512, "shared draws (the same as transport_cost's with the same n and seed)", rule=positive_int),
    Param("ot_batch", 128, "minibatch-OT batch size", rule=positive_int),
    Param("ratio_max", 0.5, "Theorem 2's 'well below 1': the last ratio's upper bound must be below this",
          rule=between(0.0, 1.0)),
    Param("level", 0.9, "level of every interval", rule=between(0.0, 1.0)),
)))
RULES = SPEC.rules()


def setup(params, spec: Spec = SPEC):
    """Check the parameters of notebooks/ct_cd_gap.ipynb (the mapping ``check_params`` returns; ``spec``'s
    defaults fill what it lacks; every rule, one line per bad value, then the bounds that need the training
    configuration: one clear ValueError naming the parameter, before any work) and return (cfg, device, out): the
    IC training configuration, the resolved device and the results folder."""
    v = spec.values(params)
    p = SimpleNamespace(**v)
    if p.ot_batch > p.proxy_n:
        raise ValueError(f"ct_cd_gap: ot_batch={p.ot_batch!r} is not valid; it must be at most proxy_n={p.proxy_n}")
    if p.n_limit < p.n_gap:
        raise ValueError(f"ct_cd_gap: n_limit={p.n_limit!r} is not valid; it must be at least n_gap={p.n_gap}")
    cfg = common.train_config(p.dataset, "ic", steps=p.train_steps, seed=p.seed,
                              **spec.with_config(v, p.train_overrides, "train_overrides"))
    if not cfg.sigma_min < float(p.T) <= cfg.sigma_max:
        raise ValueError(f"ct_cd_gap: T={p.T!r} is not valid; it must be in (sigma_min, sigma_max] = "
                         f"({cfg.sigma_min}, {cfg.sigma_max}]")
    levels(lo=cfg.sigma_min, hi=cfg.sigma_max)("proxy_ts", p.proxy_ts)
    dev = common.resolve_device(p.device)
    return cfg, dev, report.results_dir("ct_cd_gap", p.variant)


# --------------------------------------------------------------------------------------------- Theorem 1 (i)
def gap_settings(d: int, huber_cs=(None,)) -> list[dict]:
    """[{label, distance, c}] for squared L2 and pseudo-Huber at each c (None: the paper's c for dimension d)."""
    out = [dict(label="squared L2", distance="l2", c=None)]
    for c in huber_cs or ():
        cc = pseudo_huber_c(d) if c is None else float(c)
        tag = "paper c" if c is None else "c"
        out.append(dict(label=f"pseudo-Huber, {tag} = {cc:.2g}", distance="pseudo_huber", c=cc))
    return out


def _gaps(model, data, settings, T, Ns, n, seed, **kw):
    """``ct_cd_gaps`` for every distance of ``settings`` from one pass: {label: GapResult}."""
    with warnings.catch_warnings():  # torch's own forward-mode AD calls the deprecated torch.jit.script
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        rs = ct_cd_gaps(model, data, [(s["distance"], s["c"]) for s in settings], T=T, Ns=Ns, n=n, seed=seed, **kw)
    return {s["label"]: r for s, r in zip(settings, rs)}


def _with_limit(r, ref):
    """A limit=False result completed with the limit of ``ref`` (the same draws, the true velocity): the wrong
    teacher changes L_CD, never the predicted limit."""
    assert r.info["n"] == ref.info["n"], "the two results must share their draws"
    return dataclasses.replace(r, limit=ref.limit, limit_stderr=ref.limit_stderr, limit_paired=ref.limit_paired,
                               limit_paired_stderr=ref.limit_paired_stderr, R=ref.R, R_stderr=ref.R_stderr,
                               per_sample={**r.per_sample, "plain": ref.per_sample["plain"],
                                           "paired": ref.per_sample["paired"]})


def summarise_gap(r, setting: str, model: str, level: float = 0.9) -> dict:
    """One row of the limits table from a ``GapResult``: the scaled gap at the largest N, the plain limit with its
    standard error, the paired relative difference (N gap_k - limit_k) / limit with its ``level`` interval, the
    paired estimator, the gap relative to L_CD, the gap's smallest z-score over N, and at the largest N the
    per-sample gap's distribution-free lower bound of the mean (``inference.mean_lower_bound``), its most negative
    draw (gap_neg, 0 when none) and the share of its positive sum carried by its largest draw (gap_top_share)."""
    from scipy import stats
    t = r.table
    big = t.iloc[-1]
    g = np.asarray(r.per_sample["scaled_gap_N_max"], dtype=np.float64)
    pos = float(g[g > 0].sum())
    d = r.per_sample["scaled_gap_N_max"] - r.per_sample["plain"]
    m, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    zq = float(stats.norm.ppf(0.5 + level / 2))
    lim = float(r.limit) if r.limit != 0 else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (t.gap / t.gap_stderr).to_numpy()
    return dict(setting=setting, model=model, N_max=int(big.N), n=len(d), rel_sd=float(d.std(ddof=1)) / abs(lim),
                scaled_gap=float(big.scaled_gap),
                scaled_gap_stderr=float(big.scaled_gap_stderr), limit=float(r.limit), limit_stderr=float(r.limit_stderr),
                limit_paired=float(r.limit_paired), rel=m / lim, rel_lo=(m - zq * se) / lim,
                rel_hi=(m + zq * se) / lim, gap_over_L_CD=float(big.gap / big.L_CD) if big.L_CD else float("nan"),
                L_CD=float(big.L_CD), gap=float(big.gap), gap_min_z=float(np.nanmin(z)) if np.isfinite(z).any()
                else float("nan"), gap_z_at_N_max=float(z[-1]), R=float(r.R),
                gap_lcb=mean_lower_bound(g, POSITIVE_LEVEL), gap_neg=min(float(g.min()), 0.0), gap_max=float(g.max()),
                gap_top_share=float(g.max()) / pos if pos > 0 else float("nan"), gap_pos=float(np.mean(g > 0)))


def gap_curves(models: dict, data, settings, T: float = 1.0, Ns=(10, 40, 160, 640, 2560, 10240), n: int = 8192,
               n_limit: int | None = None, ideal_Ns=(10240,), ideal_n: int = 512, seed: int = 0, level: float = 0.9,
               out=None, label: str = "trained", teacher=None, mixture=None, mixture_n: int = 2048):
    """The CT/CD gap of each model for each distance in ``settings`` (all distances from one set of network
    evaluations): "trained" on ``Ns``, the smaller N on n samples and the largest N and the limit on
    n_limit >= n (default n: the equivalence test's power is set there); "ideal" (the exact flow) on ``ideal_Ns``
    with ideal_n samples (the flow map is slow; no limit: its flow jumps at the basins' boundaries, so Theorem 1's
    limit is infinite for it); the control "wrong teacher" (the trained model with CD's teacher v = 0) at the
    largest N on the trained model's n_limit draws, judged against the trained model's limit. ``mixture``: the
    limit row's ideal, the exact flow of a continuous density (``references.GaussianMixtureFlow``), as "mixture" on
    ``ideal_Ns`` with its limit on mixture_n draws of that density, and its control "mixture wrong teacher" (v = 0).
    ``label``: the key of the model judged in ``models`` (its rows are named so); ``teacher``: its CD teacher
    (default the exact velocity; the limit always uses the true velocity).
    Returns (table, limits, results): table, the scaled gap per (model, setting, N); limits, one ``summarise_gap``
    row per (model, setting); results, {(model, setting): GapResult}. Writes gap_vs_N.csv and gap_limits.csv."""
    n_limit = n if n_limit is None else int(n_limit)
    runs = {label: _gaps(models[label], data, settings, T, Ns, n_limit, seed, n_curve=min(n, n_limit),
                         teacher=teacher)}
    wrong = _gaps(models[label], data, settings, T, Ns[-1:], n_limit, seed, teacher=references.zero_velocity,
                  limit=False)
    runs["wrong teacher"] = {k: _with_limit(r, runs[label][k]) for k, r in wrong.items()}
    if "ideal" in models:
        runs["ideal"] = _gaps(models["ideal"], data, settings, T, ideal_Ns, ideal_n, seed, limit=False)
    if mixture is not None:
        kw = dict(velocity=mixture.velocity, sampler=mixture.sample)
        runs["mixture"] = _gaps(mixture, mixture.means, settings, T, ideal_Ns, mixture_n, seed, **kw)
        bad = _gaps(mixture, mixture.means, settings, T, ideal_Ns[-1:], mixture_n, seed,
                    teacher=references.zero_velocity, limit=False, **kw)
        runs["mixture wrong teacher"] = {k: _with_limit(r, runs["mixture"][k]) for k, r in bad.items()}
    tables, rows, results = [], [], {}
    for s in settings:
        for label, rs in runs.items():
            r = rs[s["label"]]
            results[(label, s["label"])] = r
            tb = r.table.copy()
            tb.insert(0, "model", label)
            tb.insert(0, "setting", s["label"])
            tb["limit"] = r.limit
            tables.append(tb)
            rows.append(summarise_gap(r, s["label"], label, level))
    table, limits = pd.concat(tables, ignore_index=True), pd.DataFrame(rows)
    if out is not None:
        report.save_table(table, Path(out) / "gap_vs_N.csv")
        report.save_table(limits, Path(out) / "gap_limits.csv")
    return table, limits, results


def plot_gap(table: pd.DataFrame, limits: pd.DataFrame, out) -> None:
    """One panel per distance: the trained model's N (L_CT - L_CD) against N (+-1 s.e.) with its plain predicted
    limit (band: +-1 s.e.), the ideal flow's point(s) and its limit, and the wrong-teacher control at the largest N.
    Saved as gap_vs_N.png/pdf and shown."""
    from matplotlib.figure import Figure
    sets = list(dict.fromkeys(limits.setting))
    fig = Figure(figsize=(4.4 * len(sets), 3.6))
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, st in zip(axes, sets):
        labels = [m for m in dict.fromkeys(table.model) if m not in ("ideal", "wrong teacher")]
        for (label, color) in ((labels[0], "C0"), ("ideal", "k"), ("wrong teacher", "C3")):
            d = table[(table.setting == st) & (table.model == label)]
            if d.empty:
                continue
            lim = limits[(limits.setting == st) & (limits.model == label)].iloc[0]
            ax.errorbar(d.N, d.scaled_gap, yerr=d.scaled_gap_stderr, fmt="o-", ms=4, color=color,
                        label=f"{label}: N gap")
            if label != "wrong teacher" and np.isfinite(lim.limit):
                ax.axhspan(lim.limit - lim.limit_stderr, lim.limit + lim.limit_stderr, color=color, alpha=0.15,
                           label=f"{label}: limit (plain, ±1 s.e.)")
        ax.set(xscale="log", yscale="symlog", xlabel="N (steps on [sigma_min, T])", title=st)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(r"$N (L_{CT} - L_{CD})$")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    report.show_figure(fig, Path(out) / "gap_vs_N.png")




# --------------------------------------------------------------------------------------------- deterministic
def deterministic(models: dict, data, T: float = 1.0, N: int = 1280, n: int = 1024, seed: int = 0,
                  data_set: dict | None = None) -> pd.DataFrame:
    """R and the CT/CD gap (squared L2) for a deterministic coupling: the data set reduced to its first point,
    where v_t(x + t z) = z exactly (CT = CD), for each model in ``models`` (the ideal flow of that one point is
    ``references.IdealFlow``), beside the same model on the whole data set (the IC coupling: R > 0), taken from
    ``data_set`` ({model: GapResult} of the whole set at the same N, e.g. ``gap_curves``' squared-L2 results)
    when given, computed here otherwise. Columns model, data, R, limit, scaled_gap, gap_z (gap / its standard
    error; 0 when both are 0)."""
    rows = []
    one = torch.as_tensor(data)[:1]
    l2 = [dict(label="l2", distance="l2", c=None)]
    for label, m in models.items():
        for name, dd in (("one point", one), ("data set", data)):
            if label == "ideal" and name == "one point":
                r = _gaps(references.IdealFlow(one, 8), one, l2, T, [N], min(n, 256), seed)["l2"]
            elif label == "ideal":
                continue  # the ideal flow on the whole set is measured by gap_curves
            elif name == "data set" and data_set and label in data_set:
                r = data_set[label]
            else:
                r = _gaps(m, dd, l2, T, [N], n, seed)["l2"]
            last = r.table.iloc[-1]
            with np.errstate(divide="ignore", invalid="ignore"):
                gz = float(np.float64(last.gap) / np.float64(last.gap_stderr))
            rows.append(dict(model=label, data=name, N=int(last.N), n=int(last.n), R=float(r.R), limit=float(r.limit),
                             scaled_gap=float(last.scaled_gap), gap_z=gz if np.isfinite(gz) else 0.0))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- Theorem 1 (ii)
GRAD_CASES = ("alpha=2", "alpha=2, wrong teacher v = 0", "alpha=2, teacher 1.1 v", "alpha=1", "alpha=1, one point")


def gradient_rows(model, data, T: float = 1.0, Ns=(10240,), n: int = 2048, seed: int = 0, out=None,
                  teacher=None, n_control: int | None = None, batch: int = 64, level: float = 0.9) -> pd.DataFrame:
    """Theorem 1 (ii) for ``model``: the whole scaled CT and CD gradients compared as vectors
    (``gclib.metrics.gap.ct_cd_gradient_vectors``: n draws in batches of ``batch``, reverse mode) at each N of
    ``Ns``, for alpha = 2 with CD's teacher ``teacher`` (default the exact velocity) and for alpha = 1, with the
    controls: the wrong teachers v = 0 and 1.1 v (alpha = 2) and the one-point data set, a deterministic coupling
    (alpha = 1). The controls whose effect is large or exact (v = 0, one point) use ``n_control`` draws (default
    max(256, n / 4)). One row per
    (case, N): q = ||E(G_CT - G_CD)||^2 / ||E G_CD||^2 with q_se, r = sqrt(q) with [r_lo, r_hi], proj (the relative
    difference along the CD gradient) with proj_se, exact_zero, n. Writes gradients.csv."""
    from ..metrics.gap import ct_cd_gradient_vectors
    n_control = int(n_control or max(256, n // 4))
    one = torch.as_tensor(data)[:1]
    cases = {"alpha=2": dict(alpha=2, teacher=teacher),
             "alpha=2, wrong teacher v = 0": dict(alpha=2, teacher=references.zero_velocity, n=n_control),
             "alpha=2, teacher 1.1 v": dict(alpha=2, teacher=references.scaled_velocity(data, 1.1)),
             "alpha=1": dict(alpha=1, teacher=teacher),
             "alpha=1, one point": dict(alpha=1, data=one, n=n_control)}
    rows = []
    for case, kw in cases.items():
        kw = dict(kw)
        dd, nn = kw.pop("data", data), int(kw.pop("n", n))
        b = min(batch, max(1, nn // 16))
        for N in Ns:
            r = ct_cd_gradient_vectors(model, dd, T=T, N=int(N), n=nn, batch=b, seed=seed, level=level, **kw)
            rows.append(dict(case=case, **r.as_dict()))
    g = pd.DataFrame(rows)
    if out is not None:
        report.save_table(g, Path(out) / "gradients.csv")
    return g


def summary(limits: pd.DataFrame, claims: list[dict], info: dict) -> str:
    """The short deterministic text nbval compares (2 significant digits): scaled gaps and plain limits at N_max
    per model and distance, the model's name, and the verdicts of the rows and of their controls."""
    return report.summary({
        **{f"N_gap[{r.setting}, {r.model}]": float(r.scaled_gap) for r in limits.itertuples()},
        **{f"limit[{r.setting}, {r.model}]": float(r.limit) for r in limits.itertuples()
           if "wrong teacher" not in r.model and np.isfinite(r.limit)},
        "model": info["name"].split(":")[0],
        "verdicts": [c["verdict"] for c in claims],
        "control_verdicts": [c.get("control_verdict") for c in claims],
    })
