"""Fig. 2 and Theorem 2 on a finite data set (docs/method.md section 3): the proxy R~_t = E||z - E[z | y]||^2 of
each coupling (IC exact; minibatch OT and GC upper bounds), the quality guard of each GC coupling's endpoints, and
their rows (the order R~_GC < R~_OT < R~_IC; the ratio R~_GC / R~_IC falling with t), with the figure.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import report
from ..couplings import ot_permutation
from ..exact import velocity as exact_velocity
from . import references
from .common import combine_verdicts, diff_verdict
from .ct_cd_claims import PAPER
from .transport_cost import draws as shared_draws
from .verdicts import bound_verdict, interval_power, judged_row


# --------------------------------------------------------------------------------------------- Fig. 2, Theorem 2
def plugin_proxies(data, ts, endpoints: dict, n: int = 2048, ot_batch: int = 256, seed: int = 0,
                   out=None, plugins: dict | None = None, no_plugin=(), metric: str | None = None) -> pd.DataFrame:
    """R~_t per coupling and level on the shared draws (``transport_cost.draws(data, n, seed)``).

    R~_t = E||z - E[z | y]||^2, y = x^ + t z the coupling's point, is the smallest mean squared error of any
    function h(y) predicting z (the Bayes risk), so E||z - h(y)||^2 for a named h is an upper bound, exact when h
    is the coupling's own velocity. Estimators here:
    - "data velocity": h = v_t, the data's exact PF-ODE velocity (``gclib.exact.velocity``). For IC (x^ = x) this is
      the coupling's own velocity: R~_IC is exact. For OT (x re-matched to z by exact minibatch OT in batches of
      ``ot_batch``) and GC it is an upper bound.
    - "plug-in" (GC only): h(y) = (y - f(y, t)) / t, the GC predictor f used as the denoiser of its own process
      (near exact for the ideal flow at large t, where y determines z).
    For GC the estimator with the smaller mean on the even-numbered draws is evaluated on the odd-numbered ones (a
    choice made on other draws keeps the estimate an upper bound); both estimates are kept as columns. Labels in
    ``no_plugin`` (e.g. controls whose predictor is a slow exact flow evaluated elsewhere) use the data velocity only.
    ``endpoints``: {label: model} or {label: {t: x^_t}} (precomputed, e.g. the cached ideal outputs); ``plugins``:
    {label: fn(x^, z, t) -> f(x^ + t z, t)} for the labels whose endpoints are precomputed (models are called).
    ``metric`` (the data set's quality metric, ``references.guard_metric``): the column "guard" holds that metric
    of each GC coupling's endpoints x^_t at each level, and "guard_floor" the real-vs-real floor at n draws
    (``references.real_floor``; the quality guard of the rows, ``proxy_guard``).
    Long table: coupling, t, proxy, stderr, n, estimator, data_velocity, plug_in, kind ("exact" for IC, "upper"
    otherwise), guard, guard_floor. Writes proxy.csv to ``out``."""
    from .transport_cost import predict
    pts = torch.as_tensor(data).to(torch.float64)
    x, z = shared_draws(data, n, seed)
    xo = torch.cat([x[a:a + ot_batch][ot_permutation(z[a:a + ot_batch], x[a:a + ot_batch], "emd")]
                    for a in range(0, n, ot_batch)])  # row k: the endpoint matched to z_k
    plugins = dict(plugins or {})
    sel, ev = slice(0, None, 2), slice(1, None, 2)
    qual = references.guard_metric(metric) if metric else None
    ref = pts.to(torch.float32) if qual is not None else None

    def risk(h):
        return (z - h).reshape(n, -1).pow(2).sum(1)

    rows = []
    for t in ts:
        t = float(t)
        ends = {"IC": x, "OT": xo}
        for label, e in endpoints.items():
            ends[f"GC {label}"] = e[t] if isinstance(e, dict) else predict(e, x, z, t)
        for cp, xe in ends.items():
            y = xe + t * z
            per = risk(exact_velocity(y, pts, t))
            row = dict(coupling=cp, t=t, estimator="data velocity", data_velocity=float(per.mean()), plug_in=np.nan,
                       kind="exact" if cp == "IC" else "upper", guard=np.nan)
            if cp.startswith("GC"):
                label = cp[3:]
                if label not in no_plugin:
                    f_y = plugins[label](xe, z, t) if label in plugins else predict(endpoints[label], xe, z, t)
                    alt = risk((y - f_y.to(torch.float64)) / t)
                    row["plug_in"] = float(alt.mean())
                    use_alt = bool(alt[sel].mean() < per[sel].mean())
                    per = alt if use_alt else per
                    row["estimator"] = "plug-in" if use_alt else "data velocity"
                per = per[ev]
                if qual is not None:
                    row["guard"] = qual(xe.to(torch.float32), ref)
            rows.append(dict(row, proxy=float(per.mean()), stderr=float(per.std() / np.sqrt(len(per))), n=len(per)))
    df = pd.DataFrame(rows)[["coupling", "t", "proxy", "stderr", "n", "estimator", "data_velocity", "plug_in", "kind",
                             "guard"]]
    df["guard_floor"] = references.real_floor(x.to(torch.float32), ref, metric) if qual is not None else np.nan
    df.attrs["metric"] = metric
    if out is not None:
        report.save_table(df, Path(out) / "proxy.csv")
    return df


def proxy_guard(proxy: pd.DataFrame, metric: str | None = None) -> references.Guard:
    """The quality guard of the GC couplings of ``proxy``: each one's largest guard value over the levels, the
    real-vs-real floor of the draws, the limit from the floor and the Gaussian fit (``references.Guard``)."""
    gc = proxy[proxy.coupling.str.startswith("GC ")]
    values = {c[3:]: float(d.guard.max()) for c, d in gc.groupby("coupling", sort=False)}
    return references.Guard(metric or proxy.attrs.get("metric") or "?", float(proxy.guard_floor.iloc[0]), values,
                            int(proxy[proxy.coupling == "IC"].n.iloc[0]))


def _ratio(proxy: pd.DataFrame, gc: str) -> pd.DataFrame:
    """ratio R~_GC / R~_IC per level with its standard error on the log scale (separate terms; same draws make it
    conservative), in the shape ``ratio_trend`` reads."""
    p = proxy.pivot(index="t", columns="coupling", values="proxy")
    s = proxy.pivot(index="t", columns="coupling", values="stderr")
    r = (p[gc] / p["IC"]).to_numpy()
    sl = np.sqrt((s[gc] / p[gc]) ** 2 + (s["IC"] / p["IC"]) ** 2).to_numpy()
    return pd.DataFrame({"t": p.index.to_numpy(), "ratio_GC": r, "ratio_GC_se_log": sl, "comparable": True,
                         "ratio_GC_lo": r * np.exp(-1.645 * sl), "ratio_GC_hi": r * np.exp(1.645 * sl)})


def ratio_trend(ratio: pd.DataFrame, level: float = 0.9) -> dict:
    """The least-squares slope of log(ratio) against log t over the levels, with the wider of the interval from the
    per-level errors and the regression's own Student-t interval (so a ratio that falls then rises is no trend),
    and the last level's ratio with its interval."""
    from scipy import stats
    c = ratio[np.isfinite(ratio.ratio_GC) & (ratio.ratio_GC > 0)].sort_values("t")
    out = dict(n_levels=int(len(c)), slope=np.nan, slope_lo=np.nan, slope_hi=np.nan, t_last=np.nan, r_last=np.nan,
               r_last_lo=np.nan, r_last_hi=np.nan)
    if len(c):
        last = c.iloc[-1]
        out.update(t_last=float(last.t), r_last=float(last.ratio_GC), r_last_lo=float(last.ratio_GC_lo),
                   r_last_hi=float(last.ratio_GC_hi))
    if len(c) >= 2:
        x, y, s = np.log(c.t.to_numpy()), np.log(c.ratio_GC.to_numpy()), c.ratio_GC_se_log.to_numpy()
        sxx = ((x - x.mean()) ** 2).sum()
        a = (x - x.mean()) / sxx
        slope = float((a * y).sum())
        half = float(stats.norm.ppf(0.5 + level / 2) * np.sqrt((a ** 2 * s ** 2).sum()))
        if len(c) >= 3:
            resid = y - (y.mean() + slope * (x - x.mean()))
            half = max(half, float(stats.t.ppf(0.5 + level / 2, len(c) - 2)) * float(
                np.sqrt((resid ** 2).sum() / (len(c) - 2) / sxx)))
        out.update(slope=slope, slope_lo=slope - half, slope_hi=slope + half)
    return out


def _kind(proxy: pd.DataFrame, cp: str) -> str:
    k = proxy[proxy.coupling == cp].kind
    return str(k.iloc[0]) if len(k) else "upper"


def _order(proxy: pd.DataFrame, gc: str, level: float = 0.9) -> tuple[str, str]:
    """Fig. 2 for one GC coupling: at every level R~_GC < R~_IC, R~_OT < R~_IC and R~_GC < R~_OT, each through
    ``verdicts.bound_verdict`` with each side's kind (IC exact, OT and GC upper bounds): a bound below IC's value
    holds, a bound above it says nothing; GC against OT compares two upper bounds and can neither hold nor refute."""
    p = proxy.set_index(["coupling", "t"])
    vs, parts = [], {"GC < IC": [], "OT < IC": [], "GC < OT": []}
    for t in sorted(set(proxy.t)):
        for name, (a, b) in (("GC < IC", (gc, "IC")), ("OT < IC", ("OT", "IC")), ("GC < OT", (gc, "OT"))):
            A, B = p.loc[(a, t)], p.loc[(b, t)]
            d = diff_verdict(A.proxy, A.stderr, B.proxy, B.stderr, "less", level)
            v = bound_verdict(d.lo, d.hi, "less", _kind(proxy, a), _kind(proxy, b))
            vs.append(v)
            parts[name].append(v)
    summ = "; ".join(f"{k}: " + ("all hold" if all(v == "holds" for v in vs_) else
                                 f"{sum(v == 'holds' for v in vs_)}/{len(vs_)} hold") for k, vs_ in parts.items())
    txt = ", ".join(f"t={t:g}: {p.loc[(gc, t)].proxy:.3g}" for t in sorted(set(proxy.t))) + f" ({summ})"
    return combine_verdicts(vs), txt


def _trend(proxy: pd.DataFrame, gc: str, ratio_max: float, level: float = 0.9) -> tuple[str, str]:
    """Theorem 2 for one GC coupling: the ratio R~_GC / R~_IC at the largest level below ``ratio_max`` (an upper
    bound of the ratio, GC's R~ being an upper bound and IC's exact: ``bound_verdict``). The slope of the log ratio
    against log t is reported, not judged (a slope of upper bounds bounds nothing)."""
    tr = ratio_trend(_ratio(proxy, gc), level)
    if tr["n_levels"] < 1:
        return "inconclusive", "no level"
    v = bound_verdict(tr["r_last_lo"], tr["r_last_hi"], "less", _kind(proxy, gc), "exact", ref=ratio_max)
    r = _ratio(proxy, gc)
    txt = (", ".join(f"{a.t:g}: {a.ratio_GC:.2g}" for a in r.itertuples())
           + f"; at t = {tr['t_last']:g}: {tr['r_last']:.3g} [{tr['r_last_lo']:.3g}, {tr['r_last_hi']:.3g}]"
           + (f"; slope (reported) {tr['slope']:.3g} [{tr['slope_lo']:.3g}, {tr['slope_hi']:.3g}]"
              if tr["n_levels"] >= 2 else ""))
    return v, txt


def _proxy_power(proxy: pd.DataFrame, labels, ratio_max: float, level: float, ratio: bool) -> str:
    """Theorem 2: the chance that the last level's ratio interval lies below ratio_max at the measured ratio;
    Fig. 2's order: the smallest chance over levels that GC's bound is shown below IC's value (GC against OT is
    never decided, whatever the sample)."""
    from scipy import stats
    z = float(stats.norm.ppf(0.5 + level / 2))
    out = []
    for k in labels:
        r = _ratio(proxy, f"GC {k}").sort_values("t")
        if ratio:
            last = r.iloc[-1]
            pw = float(stats.norm.cdf((np.log(ratio_max) - np.log(last.ratio_GC)) / last.ratio_GC_se_log - z)) \
                if last.ratio_GC > 0 and last.ratio_GC_se_log > 0 else float("nan")
            out.append(f"{k} {pw:.0%} at the measured ratio")
        else:
            p = proxy.set_index(["coupling", "t"])
            pws = []
            for t in sorted(set(proxy.t)):
                a, b = p.loc[(f"GC {k}", t)], p.loc[("IC", t)]
                pws.append(interval_power(b.proxy - a.proxy, float(np.hypot(a.stderr, b.stderr)), level)
                           if a.proxy < b.proxy else 0.0)
            out.append(f"{k} GC < IC: {min(pws):.0%} at the weakest level; GC < OT: none (two upper bounds)")
    return "; ".join(out)


ABSTRACT = ("Abstract: 'We prove that this flow reduces the previously identified discrepancy and the noise-data "
            "transport cost.'")


def proxy_claims(proxy: pd.DataFrame, guard: references.Guard | None = None, ratio_max: float = 0.5,
                 level: float = 0.9, label: str = "trained", require=None) -> list[dict]:
    """Fig. 2 and Theorem 2, each judged on GC with the predictor ``label`` and with the ideal flow (those in
    ``require``, default both, must hold), and on the controls (collapsed, untrained, identity, the exact flow
    shrunk by 0.5 and 0.7, the Gaussian fit: each must be refuted, else the row is at most inconclusive). Every GC
    subject must also pass the quality guard (``guard``: its endpoints a generator of the data in the data's own
    feature space): a predictor that collapses or shrinks its outputs makes R~ small without generating the data.

    1. At every level: R~_GC < R~_OT < R~_IC (``_order``: bounds never refute; GC against OT is undecidable).
    2. Theorem 2 (the row that carries the abstract's "this flow reduces the previously identified discrepancy"):
       the ratio R~_GC / R~_IC at the largest level below ``ratio_max``. The caveat: R~ is Theorem 2's proxy, which
       leaves out the Jacobian of Theorem 1's R = int lambda E||J (z - v)||^2."""
    require = tuple(require or (label, "ideal"))
    gcs = [c[3:] for c in dict.fromkeys(proxy.coupling) if c.startswith("GC ")]
    ctrls = [k for k in gcs if k not in (label, "ideal")]
    guard = guard if guard is not None else proxy_guard(proxy)

    def with_guard(v, k):
        gv, gt = guard.verdict(k)
        return combine_verdicts([v[0], gv]), f"{v[1]}; guard {gv}: {gt}"
    p = proxy.set_index(["coupling", "t"])
    base = ("IC (exact) " + ", ".join(f"{p.loc[('IC', t)].proxy:.3g}" for t in sorted(set(proxy.t))) + "; OT (upper "
            "bound) " + ", ".join(f"{p.loc[('OT', t)].proxy:.3g}" for t in sorted(set(proxy.t))))
    out = []
    for fn, paper, text, note in (
            (lambda gc: _order(proxy, gc, level), PAPER["order"],
             "R~_GC < R~_OT < R~_IC at every level (IC exact; OT and GC upper bounds, so GC against OT cannot be "
             "decided: at most inconclusive), with GC's endpoints passing the quality guard", base),
            (lambda gc: _trend(proxy, gc, ratio_max, level), PAPER["ratio"],
             f"Theorem 2 (carries the abstract's 'this flow reduces the previously identified discrepancy'): "
             f"R~_GC / R~_IC at the largest level below {ratio_max:g} (an upper bound of the ratio), with GC's "
             f"endpoints passing the quality guard; caveat: R~ is the paper's proxy of the CT/CD discrepancy and "
             f"leaves out the Jacobian of Theorem 1's R", ABSTRACT)):
        subjects = {k: with_guard(fn(f"GC {k}"), k) for k in (label, "ideal") if k in gcs}
        controls = {k: with_guard(fn(f"GC {k}"), k) for k in ctrls}
        out.append(judged_row(text, paper, subjects, controls, require=require, note=f"{guard.text()}; {note}",
                              power=_proxy_power(proxy, [k for k in (label, "ideal") if k in gcs], ratio_max, level,
                                                 text.startswith("Theorem 2"))))
    return out


def plot_proxy(proxy: pd.DataFrame, out, dataset: str = "") -> None:
    """Fig. 2: the plug-in R~_t of IC, OT and GC (trained, ideal, controls) against t, and the ratio to IC.
    Saved as proxy_vs_t.png/pdf and shown."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 4))
    ax, bx = fig.subplots(1, 2)
    ic = proxy[proxy.coupling == "IC"].set_index("t").proxy
    for k, (cp, d) in enumerate(proxy.groupby("coupling", sort=False)):
        st = "--" if cp.startswith("GC") and cp[3:] not in ("trained", "ideal") else "-"
        ax.plot(d.t, d.proxy, st, marker="o", ms=3, color=f"C{k}", label=cp)
        if cp != "IC":
            bx.plot(d.t, d.proxy.to_numpy() / ic.loc[d.t].to_numpy(), st, marker="o", ms=3, color=f"C{k}", label=cp)
    ax.set(xscale="log", yscale="log", xlabel="t", ylabel=r"$\tilde R_t = E\|z - v_t(x_t)\|^2$",
           title=f"gap proxy per coupling ({dataset})")
    bx.axhline(1.0, color="k", lw=0.8)
    bx.set(xscale="log", yscale="log", xlabel="t", ylabel="ratio to IC", title="Theorem 2: ratio to IC")
    for a in (ax, bx):
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7)
    fig.tight_layout()
    report.show_figure(fig, Path(out) / "proxy_vs_t.png")

