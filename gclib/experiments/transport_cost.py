r"""Fig. 3 (docs/method.md section 6, Lemma 1, Corollaries 1-2): the transport cost of the GC coupling.

c(t) = E||f(x + t z, t) - z||^2, (x, z) independent, f a trained consistency model (its EMA): the cost of the
GC coupling whose predictor acts at level t; c(0) = E||x - z||^2 is the independent coupling's cost. On the same
n draws (x, z) (common random numbers, so differences between levels are precise):

- the identity map's cost c_id(t) = E||(x + t z) - z||^2 = E||x - (1 - t) z||^2: what c would be if the model
  returned its input. It already falls near 0 (the noise it is given points towards z), so "c decreases near 0"
  alone cannot fail for a model with f(x, sigma_min) = x; the claim tested is that the predictor lowers the cost
  more than that;
- GC's own bound: W2^2(law of x^_t, N(0, I)) estimated by the exact OT cost between the n predictor outputs
  x^_t and n FRESH noise draws (POT, ``gclib.metrics.exact_ot_cost``); c(t) is the cost of one coupling of those
  two laws, so it lies above the population value; an n-sample OT cost is biased upward, so it is a guide, not a
  strict bound. At t = 0 it is the empirical n-sample OT cost of data versus noise;
- W2(x^_t, data): how far the predictor's outputs are from the data (exact OT against the data rows; at t = 0
  it is the n-sample floor of that distance);
- baselines: IC (c(0)) and minibatch OT at several batch sizes (``minibatch_ot_cost``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import report
from ..checks import check_flow, check_mu
from ..metrics._util import as_rows64, draw_data, eval_mode, model_device_dtype
from ..metrics.transport import exact_ot_cost, minibatch_ot_cost
from ..precond import as_batch_sigma
from . import common
from .common import claim, combine_verdicts, diff_verdict, paired_verdict

PAPER = {
    "near0": "Lemma 1 / Corollary 1: c(t) decreases in t for small t, because near t = 0 the Jacobian of f is the "
             "identity (to first order c follows the identity map's cost).",
    "large": "Corollary 2: c(t) decreases in t for large t.",
    "ot": "Fig. 3 (CIFAR-10): the GC coupling's transport cost ends below that of minibatch OT; GC lowers the "
          "transport cost more than batch OT.",
}


# --------------------------------------------------------------------------------------------- parameters
def setup(variant: str, flow: str, mu: float, dataset: str, train_steps, train_overrides: dict, seed: int,
          device: str, ts, n: int, ot_batch_sizes, n_near: int, large_t: float, ot_n: int,
          predictor: str = "default", level: float = 0.9):
    """Validate every parameter of notebooks/transport_cost.ipynb (one clear ValueError naming it, before any
    work) and return (cfg, device, out): the training configuration, the resolved device and the results folder."""
    check_flow(flow)
    check_mu(mu)
    common.check_dataset(dataset)
    common.check_positive_int("n", n)
    common.check_positive_int("n_near", n_near)
    common.check_positive_int("ot_n", ot_n)
    if ot_n > n:
        raise ValueError(f"ot_n={ot_n!r} is not valid; it must be at most n={n}")
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level={level!r} is not valid; it must be in (0, 1)")
    common.check_predictor(predictor, dataset, flow)
    cfg = common.train_config(dataset, flow, mu=mu, steps=train_steps, seed=seed, **train_overrides)
    levels = common.check_levels("ts", ts, lo=cfg.sigma_min, hi=cfg.sigma_max)
    if len(levels) < n_near:
        raise ValueError(f"n_near={n_near!r} is not valid; ts has only {len(levels)} levels")
    if not (isinstance(large_t, (int, float)) and sum(t >= large_t for t in levels) >= 2):
        raise ValueError(f"large_t={large_t!r} is not valid; at least 2 levels of ts must be >= large_t")
    for b in ot_batch_sizes:
        if int(b) != b or not 2 <= b <= n:
            raise ValueError(f"ot_batch_sizes={ot_batch_sizes!r} is not valid; each must be an integer in [2, n={n}]")
    dev = common.resolve_device(device)
    return cfg, dev, report.results_dir("transport_cost", variant)


# --------------------------------------------------------------------------------------------- measurements
@dataclass
class Costs:
    """What ``transport_costs`` measured.

    curve: one row per level t (0 included) with cost, stderr (c(t) over the n draws), identity_cost,
    identity_stderr, w2sq_noise (exact OT, x^_t against fresh noise), w2_data (exact W2, x^_t against the data).
    baselines: coupling, batch_size, cost, stderr for IC and minibatch OT at each batch size.
    per_draw[t], identity[t]: the per-draw costs ||x^_t - z||^2 and ||x + t z - z||^2 (numpy (n,)), for paired
    comparisons. info: n, ot_n, the data rows used for W2."""
    curve: pd.DataFrame
    baselines: pd.DataFrame
    per_draw: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def _predict(model, x: torch.Tensor, z: torch.Tensor, t: float, batch_size: int = 4096) -> torch.Tensor:
    """x^_t = f(x + t z, t) in chunks on the model's device (float64 on the CPU); t = 0 returns x."""
    if t == 0.0:
        return x.clone()
    device, dtype = model_device_dtype(model, x)
    outs = []
    with eval_mode(model), torch.no_grad():
        for a in range(0, x.shape[0], batch_size):
            xb = x[a:a + batch_size].to(device=device, dtype=dtype)
            zb = z[a:a + batch_size].to(device=device, dtype=dtype)
            outs.append(model(xb + t * zb, as_batch_sigma(t, xb)).to("cpu", torch.float64))
    return torch.cat(outs)


def transport_costs(model, data, ts, n: int = 2048, batch_sizes=(64, 256, 1024), ot_n: int | None = None,
                    seed: int = 0, out=None) -> Costs:
    """c(t) on ``ts`` (0 is added) with the identity map's cost, GC's own OT bound, W2 to the data, and the IC and
    minibatch-OT baselines, every cost on the SAME n independent draws (x, z) (common random numbers).

    model: f(x, sigma) (eval mode, no_grad; its mode is restored); data: the finite training set (n_data, ...).
    ot_n: draws used for the exact OT computations (default n; the first ot_n predictor outputs against ot_n fresh
    noise draws, and against the data rows, all of them if n_data <= ot_n, else a random subset of ot_n).
    Minibatch OT: the draws shuffled and cut into batches of B, each matched exactly; its stderr is over batches.
    If ``out`` is given, writes cost_vs_t.csv and baselines.csv there.
    """
    ts = sorted({0.0, *[float(t) for t in ts]})
    ot_n = int(ot_n or n)
    bad = [b for b in batch_sizes if int(b) != b or b < 2 or b > n]
    if bad:
        raise ValueError(f"ot_batch_sizes={list(batch_sizes)!r} is not valid; each must be an integer in [2, n={n}]")
    g = torch.Generator().manual_seed(seed)  # the draws of gclib.metrics.transport_cost_curve
    x = draw_data(data, n, g).to("cpu", torch.float64)
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    g2 = torch.Generator().manual_seed(seed + 2)
    z_fresh = torch.randn((ot_n, *x.shape[1:]), generator=g2, dtype=torch.float64)
    ref = torch.as_tensor(data).to("cpu", torch.float64)
    if len(ref) > ot_n:
        ref = ref[torch.randperm(len(ref), generator=g2)[:ot_n]]
    zf, rf = as_rows64(z_fresh), as_rows64(ref)
    rows, per_draw, ident = [], {}, {}
    for t in ts:
        xh = _predict(model, x, z, t)
        c = (xh - z).reshape(n, -1).pow(2).sum(1).numpy()
        ci = (x + t * z - z).reshape(n, -1).pow(2).sum(1).numpy()
        per_draw[t], ident[t] = c, ci
        xo = as_rows64(xh[:ot_n])
        rows.append(dict(t=t, cost=float(c.mean()), stderr=float(c.std(ddof=1) / np.sqrt(n)),
                         identity_cost=float(ci.mean()), identity_stderr=float(ci.std(ddof=1) / np.sqrt(n)),
                         w2sq_noise=float(exact_ot_cost(xo, zf).cost),
                         w2_data=float(exact_ot_cost(xo, rf).cost) ** 0.5))
    curve = pd.DataFrame(rows)
    c0 = curve.iloc[0]
    base = [dict(coupling="IC", batch_size=np.nan, cost=float(c0.cost), stderr=float(c0.stderr))]
    for b in batch_sizes:
        r = minibatch_ot_cost(x, z, int(b), solver="emd", generator=torch.Generator().manual_seed(seed + 1))
        base.append(dict(coupling="minibatch OT", batch_size=int(b), cost=r["cost"], stderr=r["stderr"]))
    res = Costs(curve, pd.DataFrame(base), per_draw, ident,
                dict(n=int(n), ot_n=ot_n, data_rows=int(len(ref)), seed=int(seed)))
    if out is not None:
        report.save_table(res.curve, Path(out) / "cost_vs_t.csv")
        report.save_table(res.baselines, Path(out) / "baselines.csv")
    return res


def plot_costs(costs: Costs, out, label: str = "", dataset: str = "") -> None:
    """Fig. 3. Left: c(t) (+-1 s.e.) against t, beside the identity map's cost, GC's own bound W2^2(x^_t, noise)
    (exact OT, n-sample), IC's cost, minibatch OT at each batch size, and the empirical n-sample OT cost of data vs
    noise (t = 0 of the bound; biased upward). Right: W2(x^_t, data), with its t = 0 value (the n-sample floor).
    Log-log axes; the identity map's cost is drawn for t <= 1 only. Saved as cost_vs_t.png/pdf and shown."""
    import seaborn as sns
    from matplotlib.figure import Figure
    cur, base = costs.curve, costs.baselines
    pos = cur[cur.t > 0]
    n, ot_n = costs.info["n"], costs.info["ot_n"]
    fig = Figure(figsize=(12, 4.2))
    ax, bx = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.6, 1]))
    ax.plot(pos.t, pos.cost, "o-", color="C0", ms=4, label=f"GC c(t), {label} predictor")
    ax.fill_between(pos.t, pos.cost - pos.stderr, pos.cost + pos.stderr, color="C0", alpha=0.2)
    idm = pos[pos.t <= 1.0]  # the identity's cost grows again beyond t = 1 (it is a reference near 0 only)
    ax.plot(idm.t, idm.identity_cost, "--", color="0.4", label=r"identity map, $E\|x - (1 - t) z\|^2$ (t <= 1)")
    ax.plot(pos.t, pos.w2sq_noise, "s:", color="C4", ms=4,
            label=fr"GC's bound $W_2^2(\hat x_t, noise)$: n = {ot_n} exact OT (biased upward)")
    ax.axhline(float(base.cost.iloc[0]), ls="--", color="C3", label="IC, c(0)")
    ot_rows = base[base.coupling == "minibatch OT"]
    pal = sns.color_palette("Greens_d", len(ot_rows))
    for k, r in enumerate(ot_rows.itertuples()):
        ax.axhline(r.cost, ls=":", color=pal[k], label=f"minibatch OT, B = {int(r.batch_size)}")
    ax.axhline(float(cur.w2sq_noise.iloc[0]), color="k", lw=1,
               label=f"exact OT data vs noise: empirical n = {ot_n} cost (biased upward)")
    ax.set(xscale="log", yscale="log", xlabel="t (level of the predictor)", ylabel=r"$E\|\hat x - z\|^2$",
           title=f"transport cost ({dataset}, {n} draws)")
    ax.legend(fontsize=7)
    bx.plot(pos.t, pos.w2_data, "o-", color="C1", ms=4, label=r"$W_2(\hat x_t, \mathrm{data})$")
    bx.axhline(float(cur.w2_data.iloc[0]), color="k", lw=1, label="t = 0: data draws vs data (n-sample floor)")
    bx.set(xscale="log", xlabel="t", ylabel=r"$W_2$", title="how far the predictor's outputs are from the data")
    bx.legend(fontsize=7)
    for a in (ax, bx):
        a.grid(alpha=0.3, which="both")
    fig.tight_layout()
    report.show_figure(fig, Path(out) / "cost_vs_t.png")


# --------------------------------------------------------------------------------------------- claims
def _pv_text(v, name_a: str, name_b: str) -> str:
    return (f"{name_a} - {name_b} = {v.mean:.3g} [{v.lo:.3g}, {v.hi:.3g}] ({v.level:.0%} t-interval over "
            f"{v.n} paired draws)")


def transport_claims(costs: Costs, flow: str = "ic", n_near: int = 2, large_t: float = 5.0,
                     level: float = 0.9) -> list[dict]:
    """Fig. 3's, Lemma 1's and Corollary 2's claims from the measured costs, and how each can fail.

    1. Near 0 (the first ``n_near`` positive levels) c(t) is below the identity map's cost c_id(t): at each of
       those levels the paired per-draw difference ||x^_t - z||^2 - ||x + t z - z||^2 has its interval below 0.
       Since c_id < c(0) there, this also says c decreases from c(0) (the decrease c(t_1) - c(0) is reported
       beside it). "refuted" if at some level it is above 0 beyond its interval: the model gives back part of the
       decrease the identity gives, as a denoiser that maps x + t z back towards x does (on a finite data set the
       ideal consistency function does exactly that at small t); else "inconclusive".
    2. Corollary 2: c decreases between consecutive levels t >= ``large_t`` (paired per-draw differences
       c(t_{j+1}) - c(t_j), each interval below 0). "refuted" if any step goes up beyond its interval.
    3. Fig. 3: at the largest level, c(t_max) is below minibatch OT's cost at every batch size tried
       (``common.diff_verdict`` from the two standard errors: per draw for c, per batch for OT; the shared draws
       make this conservative). "refuted" if above at some batch size beyond the interval.
    The identity comparison and consecutive steps use ``common.paired_verdict`` over the n shared draws.
    """
    lv = sorted(costs.per_draw)
    pos = [t for t in lv if t > 0]
    near = pos[:n_near]
    pv_near = [paired_verdict(costs.per_draw[t], costs.identity[t], "less", level) for t in near]
    c = lambda t: float(np.mean(costs.per_draw[t]))  # noqa: E731
    who = {"ic": "an IC-trained", "ot": "an OT-trained", "gc": "a GC-trained"}[flow]
    dec = [paired_verdict(costs.per_draw[t], costs.per_draw[0.0], "less", level) for t in near[:1]]
    out = [claim(
        "Near 0, c(t) falls below the identity map's cost E||x - (1 - t) z||^2 (the identity alone already makes "
        "c decrease; below it, the decrease is the predictor's own)",
        combine_verdicts(v.verdict for v in pv_near),
        f"c(0) = {c(0.0):.4g}; decrease from c(0): " + "; ".join(_pv_text(v, f"c({t:g})", "c(0)")
                                                              for t, v in zip(near[:1], dec)) + "; "
        + "; ".join(f"t = {t:g}: c {c(t):.4g} vs identity {float(np.mean(costs.identity[t])):.4g}, "
                    + _pv_text(v, "c", "c_id") for t, v in zip(near, pv_near)), PAPER["near0"])]
    large = [t for t in pos if t >= large_t]
    steps = [(a, b, paired_verdict(costs.per_draw[b], costs.per_draw[a], "less", level))
             for a, b in zip(large[:-1], large[1:])]
    out.append(claim(
        f"For large t (t >= {large_t:g}) the GC transport cost c(t) decreases in t",
        combine_verdicts(v.verdict for _, _, v in steps) if steps else "inconclusive",
        "c(t): " + ", ".join(f"t={t:g}: {c(t):.4g}" for t in large) + "; steps " + "; ".join(
            f"c({b:g}) - c({a:g}) = {v.mean:.3g} [{v.lo:.3g}, {v.hi:.3g}]" for a, b, v in steps)
        + f" ({level:.0%} t-intervals over {len(costs.per_draw[lv[0]])} paired draws)", PAPER["large"]))
    t_max = pos[-1]
    cur = costs.curve.set_index("t")
    ot = costs.baselines[costs.baselines.coupling == "minibatch OT"]
    vs = [diff_verdict(float(cur.loc[t_max, "cost"]), float(cur.loc[t_max, "stderr"]), r.cost, r.stderr, "less",
                       level) for r in ot.itertuples()]
    out.append(claim(
        f"GC's transport cost ends below minibatch OT's at every batch size (t = {t_max:g}; predictor: {who} model)",
        combine_verdicts(v.verdict for v in vs),
        f"c({t_max:g}) = {float(cur.loc[t_max, 'cost']):.4g}; " + "; ".join(
            f"B={int(r.batch_size)}: OT {r.cost:.4g}, " + v.text("c", "OT") for r, v in zip(ot.itertuples(), vs)),
        PAPER["ot"]))
    return out


def sanity_checks(costs: Costs) -> dict:
    """Checks that hold by construction on shared draws and so are NOT claims: minibatch OT's matched cost is at
    most IC's on the same batches (an exact matching is at most the given pairing). Returns {name: {ok, measured}}."""
    c0 = float(costs.baselines.cost.iloc[0])
    ot = costs.baselines[costs.baselines.coupling == "minibatch OT"]
    return {"minibatch OT below IC (shared draws: by construction)": dict(
        ok=bool((ot.cost <= c0).all()),
        measured=f"IC {c0:.4g}; " + ", ".join(f"B={int(r.batch_size)}: {r.cost:.4g}" for r in ot.itertuples()))}


def metrics(costs: Costs, claims: list[dict], info: dict, quality: dict, **extra) -> dict:
    """The metrics.json content: the curve, baselines, costs per coupling, the model used and its quality,
    the sanity checks and the claims."""
    cur, base = costs.curve, costs.baselines
    pos = cur[cur.t > 0]
    best = pos.sort_values("cost").iloc[0]
    t_max = pos.iloc[-1]
    ot_rows = base[base.coupling == "minibatch OT"]
    return dict(**extra, n=costs.info["n"], ot_n=costs.info["ot_n"], model=info, model_quality=quality,
                curve=cur.to_dict(orient="records"), baselines=base.to_dict(orient="records"),
                ic_cost=float(base.cost.iloc[0]), gc_min_cost=float(best.cost), gc_argmin_t=float(best.t),
                gc_cost_at_t_max=float(t_max.cost), gc_bound_at_t_max=float(t_max.w2sq_noise),
                w2_data_at_t_max=float(t_max.w2_data), exact_ot_data_noise=float(cur.w2sq_noise.iloc[0]),
                minibatch_ot_costs={int(r.batch_size): float(r.cost) for r in ot_rows.itertuples()},
                sanity=sanity_checks(costs), claims=claims)


def summary(m: dict) -> str:
    """The short deterministic text nbval compares (2 significant digits) with the verdicts."""
    return report.summary({
        "ic_cost": m["ic_cost"], "gc_cost_at_t_max": m["gc_cost_at_t_max"], "gc_min_cost": m["gc_min_cost"],
        "gc_bound_at_t_max": m["gc_bound_at_t_max"], "w2_data_at_t_max": m["w2_data_at_t_max"],
        "minibatch_ot_costs": m["minibatch_ot_costs"], "exact_ot_data_noise": m["exact_ot_data_noise"],
        "model": f"{m['model']['used']} ({m['model_quality']['metric']} {m['model_quality']['value']:.2g})",
        "sanity_ok": [v["ok"] for v in m["sanity"].values()],
        "verdicts": [c["verdict"] for c in m["claims"]],
    })
