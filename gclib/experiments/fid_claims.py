"""The claims of a FID-curve sweep: the paper's comparative statements judged by paired differences over seeds
(``common.paired_verdict``), a pre-registered profile's endpoints (with Holm's family-wise verdicts and censored
"steps to reach" rows, ``inference``), the exploratory budget rows, metrics.json and the notebook's summary. Runs
that differ only in the flow or mu share their random numbers at one seed (``gclib.rng``), so the paired
differences measure the flow, not the draws.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .common import claim, combine_verdicts, paired_claim, paired_verdict
from .fid_sweep import ENDPOINTS, Sweep, _check_other_budget, mu_label
from .inference import add_holm, censored_sign_test, paired_p

def final_table(curves: pd.DataFrame, metric: str, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``metric`` at each run's last evaluated step, one row per label
    (in ``labels`` order when given), with the number of seeds."""
    last = curves.loc[curves.groupby(["label", "seed"])["step"].idxmax()]
    t = last.groupby("label")[metric].agg(["mean", "std", "count"]).rename(columns={"count": "seeds"})
    if labels is not None:
        t = t.reindex([l for l in labels if l in t.index])
    return t.reset_index()


# --------------------------------------------------------------------------------------------- claims
def per_seed(curves: pd.DataFrame, metric: str, label: str, how: str = "final", seeds=None) -> pd.Series:
    """One value per seed of ``label``'s curve: "final" (last evaluated step), "first" (first step > 0),
    "auc" (mean of the metric over the evaluated steps > 0, trapezoid rule on the step axis: lower is faster
    convergence)."""
    c = curves[(curves.label == label) & (curves.step > 0)].sort_values("step")
    out = {}
    for seed, g in c.groupby("seed"):
        y, x = g[metric].to_numpy(float), g.step.to_numpy(float)
        if how == "final":
            out[seed] = y[-1]
        elif how == "first":
            out[seed] = y[0]
        elif how == "auc":
            out[seed] = float(np.trapezoid(y, x) / (x[-1] - x[0])) if len(x) > 1 else y[0]
        else:
            raise ValueError(f"how={how!r} is not valid; allowed values: 'final', 'first', 'auc'")
    s = pd.Series(out).sort_index()
    return s if seeds is None else s.reindex(seeds)


def steps_to_reach(curves: pd.DataFrame, metric: str, label: str, target: pd.Series) -> pd.Series:
    """Per seed: the first evaluated step at which ``label``'s curve is at or below target[seed] (NaN if never)."""
    c = curves[(curves.label == label) & (curves.step > 0)].sort_values("step")
    out = {}
    for seed, g in c.groupby("seed"):
        hit = g[g[metric] <= target.get(seed, np.nan)]
        out[seed] = float(hit.step.iloc[0]) if len(hit) else float("nan")
    return pd.Series(out).sort_index()


def _pair(curves, metric, a, b, how="final"):
    sa, sb = per_seed(curves, metric, a, how), per_seed(curves, metric, b, how)
    common = sorted(set(sa.dropna().index) & set(sb.dropna().index))
    return sa.reindex(common).to_numpy(), sb.reindex(common).to_numpy()


PAPER = {
    "gc_ic": "Table 1 (CIFAR-10, one-step FID): iCT-GC 5.95 against iCT-IC 7.42; GC (mu = 0.5) improves on IC "
             "on every data set.",
    "gc_ot": "Table 1 (CIFAR-10, one-step FID): iCT-GC 5.95 against iCT-OT 6.75.",
    "ot_ic": "Table 1 (CIFAR-10, one-step FID): iCT-OT 6.75 against iCT-IC 7.42 (minibatch OT improves on IC).",
    "speed": "The paper reports that GC speeds up convergence: its FID curves (Figs. 4-5) fall faster than IC's.",
    "mid_mu": "Fig. 5: every 0.3 <= mu <= 0.7 reaches a lower FID than both IC and OT on CIFAR-10.",
    "mu1": "Fig. 5: pure GC (mu = 1) improves fastest at first, then degrades (its intermediate marginals drift).",
    "frozen": "Fig. 4: GC with a strong frozen IC predictor trains better than with a weak one, and better than IC.",
}


PAPER["speed_ot"] = ("Abstract: our method 'not only accelerates consistency training convergence but also enhances "
                     "its overall performance'; Figs. 4-5 plot GC's FID curve beside IC's and OT's.")


def endpoint(sw: Sweep, curves: pd.DataFrame, final: pd.DataFrame | None, name: str, label: str,
             other: str | None = None) -> pd.Series:
    """One value per seed of ``label`` for the endpoint ``name`` (see ENDPOINTS); ``other`` is the reference run
    of "steps_to_reach"."""
    m = sw.metric
    if name == "final":
        if final is not None:
            f = final[final.label == label].set_index("seed")[m]
            return f.sort_index()
        return per_seed(curves, m, label, "final")
    if name == "first":
        return per_seed(curves, m, label, "first")
    if name == "mean_log":
        c = curves[(curves.label == label) & (curves.step > 0)]
        return c.assign(_l=np.log(c[m].to_numpy(float))).groupby("seed")["_l"].mean().sort_index()
    if name == "steps_to_reach":   # NaN where the curve never reaches the target: a censored seed
        target = per_seed(curves, m, other or label, "final")
        return steps_to_reach(curves, m, label, target)
    raise ValueError(f"endpoint={name!r} is not valid; allowed values: {', '.join(map(repr, ENDPOINTS))}")


def _endpoint_text(name: str, metric: str) -> str:
    return {"final": f"final {metric}", "first": f"{metric} at the first evaluation",
            "mean_log": f"mean log {metric} over training", "steps_to_reach": "steps to reach the reference's final "
            f"{metric}"}[name]


def _claim_words(name: str, a: str, b: str, expect: str, metric: str) -> str:
    if name == "final":
        return f"{a} ends {'below' if expect == 'less' else 'above'} {b} ({_endpoint_text(name, metric)})"
    if name == "first":
        return f"{a} is {'ahead of' if expect == 'less' else 'behind'} {b} at the first evaluation ({metric})"
    if name == "mean_log":
        return f"{a} converges {'faster' if expect == 'less' else 'slower'} than {b} ({_endpoint_text(name, metric)})"
    return f"{a} reaches {b}'s final {metric} in fewer steps than {b}"


def _paper_for(name: str, a: str, b: str) -> str:
    if name in ("mean_log", "steps_to_reach", "first"):
        return PAPER["speed_ot"] if b == "OT" else PAPER["speed"]
    if a.startswith("GC frozen"):
        return PAPER["frozen"]
    if a == mu_label(1.0):
        return PAPER["mu1"]
    if a.startswith("GC mu=") and a != mu_label(0.5):
        return PAPER["mid_mu"]
    return {"IC": PAPER["gc_ic"], "OT": PAPER["gc_ot"]}.get(b, PAPER["gc_ic"]) if a.startswith("GC") else PAPER["ot_ic"]


def preregistered_claims(sw: Sweep, curves: pd.DataFrame, final: pd.DataFrame | None = None,
                         level: float = 0.9) -> list[dict]:
    """One row per endpoint of the sweep's pre-registration, primary first: the paired difference a - b over the
    seeds both runs have, its interval and verdict, tagged with its role and number of seeds (and, when a run is
    shared with another profile, which one)."""
    pre = sw.preregistration
    shared = {l: prof for prof, labels in (pre.get("shared_with") or {}).items() for l in labels}
    rows = []
    for role in ("primary", "secondary"):
        for e in pre.get(role) or []:
            name, a, b, expect = e["endpoint"], e["a"], e["b"], e.get("expect", "less")
            sa, sb = endpoint(sw, curves, final, name, a, b), endpoint(sw, curves, final, name, b, b)
            note = [f"{l} runs shared with {shared[l]}" for l in (a, b) if l in shared]
            if name == "steps_to_reach":
                row = _censored_row(sw, sa, sb, a, b, expect, level)
            else:
                common = sorted(set(sa.dropna().index) & set(sb.dropna().index))
                va, vb = sa.reindex(common).to_numpy(float), sb.reindex(common).to_numpy(float)
                v = paired_verdict(va, vb, expect, level)
                fmt = lambda x: f"{np.mean(x):.4g}" if len(x) else "nan"
                row = claim(_claim_words(name, a, b, expect, sw.metric), v.verdict,
                            f"{a} {fmt(va)} vs {b} {fmt(vb)}; {v.text(a, b, 3)}", _paper_for(name, a, b))
                row.update(n=int(v.n), p=paired_p(v), diff={"mean": v.mean, "lo": v.lo, "hi": v.hi})
            if note:
                row["measured"] += f"; {', '.join(note)}"
            row.update(role=role, endpoint=name, a=a, b=b)
            rows.append(row)
    return add_holm(rows, alpha=round(1 - level, 12))


def _censored_row(sw: Sweep, sa: pd.Series, sb: pd.Series, a: str, b: str, expect: str, level: float) -> dict:
    """The "steps to reach" row: a seed whose curve never reaches the target is censored (ranked after every step
    that reaches it) and the row is judged by a paired sign test (``inference.censored_sign_test``). A profile whose
    censoring rule was added after its pre-registration (``censoring_added`` later than ``date``) also shows the
    scoring it had before: never reached = one evaluation interval past the end, judged by the t-interval."""
    pre = sw.preregistration
    seeds = sorted(set(sa.index) & set(sb.index))
    va, vb = sa.reindex(seeds).to_numpy(float), sb.reindex(seeds).to_numpy(float)
    t = censored_sign_test(va, vb, expect, level)
    measured = t.text(a, b)
    added = str(pre.get("censoring_added") or "")
    if added and added > str(pre.get("date", "")):
        end = int(sw.base["total_steps"]) + int(sw.base.get("eval_every") or sw.base["total_steps"])
        fill = lambda x: np.where(np.isfinite(x), x, end)
        old = paired_verdict(fill(va), fill(vb), expect, level)
        measured += (f"; the censoring rule was added on {added}, after the pre-registration ({pre['date']}): under "
                     f"the earlier scoring (never reached = step {end}) {old.text(a, b, 3)}, {old.verdict}")
    row = claim(_claim_words("steps_to_reach", a, b, expect, sw.metric), t.verdict, measured,
                _paper_for("steps_to_reach", a, b))
    row.update(n=int(t.n), p=float(t.p))
    return row


def _budget_results(sw: Sweep) -> tuple[pd.DataFrame, int]:
    """The final evaluation and number of steps of ``sw.compare_budget``'s committed results (results/fid_curves/
    <profile>/final_eval.csv and metrics.json), checked against this sweep: one ValueError naming the problem."""
    import json
    where = sw.out.parent / sw.compare_budget
    what = f"compare_budget={sw.compare_budget!r}"
    if not (where / "final_eval.csv").is_file() or not (where / "metrics.json").is_file():
        raise ValueError(f"{what}: no final evaluation of that profile in {where}; run its notebook, then this "
                         f"one again (its runs and final evaluation are cached)")
    m = json.loads((where / "metrics.json").read_text())
    _check_other_budget(sw, m.get("metric"), m["steps"])
    other = pd.read_csv(where / "final_eval.csv")
    if not set(sw.seeds) & set(other.seed):
        raise ValueError(f"{what}: it has no seed in common with seeds={list(sw.seeds)}")
    return other, int(m["steps"])


PAPER["budget"] = ("Not a sentence of the paper: it reports one training budget per data set (Table 1). Abstract: "
                   "GC 'not only accelerates consistency training convergence but also enhances its overall "
                   "performance'; a lead that only came from faster convergence would shrink with a longer budget.")


def budget_claims(sw: Sweep, final: pd.DataFrame | None, level: float = 0.9) -> list[dict]:
    """Exploratory rows (not pre-registered): for each primary final endpoint a - b, does the lead change with the
    budget? Per seed in both profiles: (a - b here) - (a - b in ``sw.compare_budget``), the runs of the two
    profiles at one seed being independent draws; "holds" when the lead at the longer budget is larger (a
    difference below 0 for the longer one minus the shorter), "refuted" when it is smaller, "inconclusive"
    otherwise. The measured column gives the lead at each budget with its own interval."""
    if not sw.compare_budget or final is None:
        return []
    other, other_steps = _budget_results(sw)
    steps = int(sw.base["total_steps"])
    (long_, n_long), (short, n_short) = sorted([(final, steps), (other, other_steps)], key=lambda t: -t[1])
    lead = lambda f, a, b: (f[f.label == a].set_index("seed")[sw.metric] - f[f.label == b].set_index("seed")[sw.metric])
    iv = lambda p: f"{p.mean:.3g} [{p.lo:.3g}, {p.hi:.3g}]"
    at = lambda x: iv(paired_verdict(x, np.zeros(len(x)), "less", level))   # a lead and its own interval
    rows = []
    for e in sw.preregistration["primary"]:
        if e["endpoint"] != "final":
            continue
        a, b = e["a"], e["b"]
        dl, ds = lead(long_, a, b), lead(short, a, b)
        common = sorted(set(dl.dropna().index) & set(ds.dropna().index) & set(sw.seeds))
        vl, vs = dl.reindex(common).to_numpy(float), ds.reindex(common).to_numpy(float)
        v = paired_verdict(vl, vs, e.get("expect", "less"), level)
        row = claim(f"{a}'s final lead over {b} is larger at {n_long} steps than at {n_short} ({sw.metric})",
                    v.verdict, f"{a} - {b}: {at(vl)} at {n_long} steps, {at(vs)} at {n_short}; change (longer - "
                    f"shorter) {iv(v)} ({v.level:.0%} t-interval, {v.n} seeds in both profiles); the {other_steps}-step "
                    f"runs are {sw.compare_budget}'s, evidence in its own rows too",
                    PAPER["budget"])
        row.update(role="exploratory", n=int(v.n), endpoint="budget", a=a, b=b, diff={"mean": v.mean, "lo": v.lo, "hi": v.hi})
        rows.append(row)
    return rows


def sweep_claims(sw: Sweep, curves: pd.DataFrame, level: float = 0.9, final: pd.DataFrame | None = None) -> list[dict]:
    """The paper's comparative statements judged on this sweep by paired differences over seeds (final metric,
    or the area under the curve for convergence speed), each holds / refuted / inconclusive. A sweep with a
    pre-registration is judged on exactly its pre-registered endpoints (``preregistered_claims``), followed by the
    exploratory budget rows when ``compare_budget`` names another profile (``budget_claims``)."""
    if sw.preregistration:
        return add_holm(preregistered_claims(sw, curves, final, level) + budget_claims(sw, final, level),
                        alpha=round(1 - level, 12))
    m, gc = sw.metric, sw.gc_main
    f = lambda x: f"{np.mean(x):.3g}"
    labels = set(curves.label)
    if gc not in labels or "IC" not in labels:   # the paper's statements compare GC with IC (and OT)
        return []
    claims = [paired_claim(f"{gc} ends below IC (final {m})", *_pair(curves, m, gc, "IC"), gc, "IC",
                           paper=PAPER["gc_ic"], level=level)]
    if "OT" in labels:
        claims.append(paired_claim(f"{gc} ends below OT (final {m})", *_pair(curves, m, gc, "OT"), gc, "OT",
                                   paper=PAPER["gc_ot"], level=level))
        claims.append(paired_claim(f"OT ends below IC (final {m})", *_pair(curves, m, "OT", "IC"), "OT", "IC",
                                   paper=PAPER["ot_ic"], level=level))
    a, b = _pair(curves, m, gc, "IC", "auc")
    v = paired_verdict(a, b, "less", level)
    reach = steps_to_reach(curves, m, gc, per_seed(curves, m, "IC"))
    reach_txt = ", ".join("never" if np.isnan(s) else f"{s:.0f}" for s in reach.to_numpy())
    claims.append(claim(f"{gc} converges faster than IC (mean {m} over training, paired)", v.verdict,
                        f"mean over the curve: {gc} {f(a)} vs IC {f(b)}; {v.text(gc, 'IC')}; steps for {gc} to "
                        f"reach IC's final {m} per seed: {reach_txt} of {int(curves.step.max())}", PAPER["speed"]) | {"n": v.n})
    if "OT" in labels:
        a, b = _pair(curves, m, gc, "OT", "auc")
        v = paired_verdict(a, b, "less", level)
        claims.append(claim(f"{gc} converges faster than OT (mean {m} over training, paired)", v.verdict,
                            f"mean over the curve: {gc} {f(a)} vs OT {f(b)}; {v.text(gc, 'OT')}", PAPER["speed_ot"]) | {"n": v.n})
    mid = [mu_label(x) for x in sw.mus if 0.3 <= x <= 0.7 and mu_label(x) != gc]
    if mid and "OT" in labels:
        parts, texts = [], []
        for l in mid:
            for other in ("IC", "OT"):
                pv = paired_verdict(*_pair(curves, m, l, other), "less", level)
                parts.append(pv.verdict)
                texts.append(pv.text(l, other))
        claims.append(claim(f"every other 0.3 <= mu <= 0.7 ({', '.join(mid)}) ends below both IC and OT",
                            combine_verdicts(parts), "; ".join(texts), PAPER["mid_mu"]))
    if 1.0 in sw.mus:
        g1 = mu_label(1.0)
        early = paired_verdict(*_pair(curves, m, g1, "IC", "first"), "less", level)
        late = paired_verdict(*_pair(curves, m, g1, gc, "final"), "greater", level)
        first = int(curves[curves.step > 0].step.min())
        claims.append(claim("pure GC (mu = 1) improves fastest, then degrades (ahead of IC at the first evaluation, "
                            f"behind {gc} at the end)", combine_verdicts([early.verdict, late.verdict]),
                            f"step {first}: {early.text(g1, 'IC')}; final: {late.text(g1, gc)}", PAPER["mu1"]))
    if "strong" in sw.frozen and "weak" in sw.frozen:
        s, w = "GC frozen strong", "GC frozen weak"
        p1 = paired_verdict(*_pair(curves, m, s, w), "less", level)
        p2 = paired_verdict(*_pair(curves, m, s, "IC"), "less", level)
        claims.append(claim("a strong frozen predictor helps more than a weak one, and beats IC",
                            combine_verdicts([p1.verdict, p2.verdict]), f"{p1.text('strong', 'weak')}; {p2.text('strong', 'IC')}",
                            PAPER["frozen"]))
    return claims


def _final_summary(sw: Sweep, curves: pd.DataFrame, final: pd.DataFrame | None) -> pd.DataFrame:
    """Mean, sd and number of seeds of the final metric per label: from the final evaluation when there is one,
    else from the curve's last point."""
    if final is None:
        return final_table(curves, sw.metric).set_index("label")
    t = final.groupby("label")[sw.metric].agg(["mean", "std", "count"]).rename(columns={"count": "seeds"})
    return t.reindex([l for l in sw.mu_labels + sw.frozen_labels if l in t.index])


def write_claims(sw: Sweep, curves: pd.DataFrame, claims: list[dict], final: pd.DataFrame | None = None) -> pd.DataFrame:
    """metrics.json for this variant (final values per label, the pre-registration and the claims); returns the
    claims as a table."""
    from .. import report
    t = _final_summary(sw, curves, final)
    report.write_metrics(sw.out, {
        **sw.columns, "dataset": sw.base["dataset"], "steps": int(sw.base["total_steps"]),
        "batch_size": int(sw.base["batch_size"]), "seeds": list(sw.seeds),
        "final_from": (f"final evaluation: {sw.final_eval['n']} one-step samples x "
                       f"{len(sw.final_eval['sampling_seeds'])} sampling seeds" if final is not None else
                       f"the curve's last evaluation ({sw.base.get('eval_n')} samples)"),
        "final": {l: dict(mean=float(t.loc[l, "mean"]), std=float(np.nan_to_num(t.loc[l, "std"])),
                          seeds=int(t.loc[l, "seeds"])) for l in t.index},
        "preregistration": sw.preregistration or None,
        "claims": claims})
    cols = ["claim", "paper", "verdict", "measured"] + (["role", "n", "verdict_holm"] if sw.preregistration else [])
    return pd.DataFrame(claims)[cols] if claims else pd.DataFrame(columns=cols)


def summary(sw: Sweep, curves: pd.DataFrame, claims: list[dict], final: pd.DataFrame | None = None) -> str:
    """A short deterministic text for nbval: final means (2 significant digits) and the verdicts."""
    from .. import report
    t = _final_summary(sw, curves, final)
    return report.summary({"final_mean": {l: float(t.loc[l, "mean"]) for l in t.index},
                           "verdicts": [c["verdict"] for c in claims]})
