"""Theorem 1's rows on a finite data set (docs/method.md section 3): the verdicts of the CT/CD gap measured by
``ct_cd_gap`` (it stays positive; it converges to the limit; Theorem 1 (ii) on the gradients; zero for a deterministic
coupling), each on the model judged, the ideal and the controls, with their power; and the paper's sentence of
every row of the notebook (``PAPER``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .inference import dkw_eps
from .transport_cost import equivalence_verdict
from .verdicts import interval_power, judged_row


PAPER = {
    "positive": "Theorem 1: with D = phi(||.||), phi(r) ~ C r^alpha near 0, N^alpha (L_CT - L_CD) tends to "
                "C T^(alpha-1) R(theta) > 0: the CT/CD gap does not vanish in the continuous-time limit.",
    "limit": "Theorem 1: N^alpha (L_CT - L_CD) -> C T^(alpha-1) R(theta), R = int lambda(t) E||df/dx (z - v_t)||^2 dt "
             "with v_t the true PF-ODE velocity (an asymptotic statement, N -> infinity).",
    "grad2": "Theorem 1 (ii), alpha = 2 (docs/method.md section 3; derivation in gclib/metrics/gap.py): the scaled "
             "gradients of L_CT and L_CD converge to the same limit; they differ only at the next order.",
    "grad1": "Theorem 1 (ii), alpha != 2 (here alpha = 1): the scaled gradients of L_CT and L_CD converge to "
             "different limits.",
    "det": "Theorem 1: the limit vanishes only when z = v_t(x_t), i.e. for a deterministic coupling (then CT = CD).",
    "order": "Fig. 2 (CIFAR-10): R~_GC < R~_OT < R~_IC, the separation between couplings growing with t.",
    "ratio": "Theorem 2: R~_GC << R~_IC as t -> infinity, i.e. the ratio R~_GC / R~_IC falls with t.",
}



def limit_power(rel_sd: float, n: int, tol: float, level: float = 0.9) -> float:
    """Power of the limit row's equivalence test when N gap equals the limit: the chance that the ``level``
    interval m +- z se of the relative difference lies inside +-tol, with m ~ N(0, se^2), se = rel_sd / sqrt(n)
    (rel_sd: the per-sample standard deviation of (N gap_k - limit_k) / limit). 2 Phi(tol / se - z) - 1, or 0."""
    from scipy import stats
    z = float(stats.norm.ppf(0.5 + level / 2))
    se = rel_sd / np.sqrt(n)
    return float(max(0.0, 2 * stats.norm.cdf(tol / se - z) - 1)) if se > 0 else 1.0


def limit_n_for_power(rel_sd: float, tol: float, power: float = 0.8, level: float = 0.9) -> int:
    """The smallest n with ``limit_power`` >= power: n = (rel_sd (z + z_p) / tol)^2, z_p = Phi^-1((1 + power) / 2)."""
    from scipy import stats
    z, zp = float(stats.norm.ppf(0.5 + level / 2)), float(stats.norm.ppf(0.5 + power / 2))
    return int(np.ceil((rel_sd * (z + zp) / tol) ** 2))



Z_POSITIVE = 3.0   # "the gap stays positive": z above this at every N ...
POSITIVE_LEVEL = 0.9973002039367398   # ... or the distribution-free bound at the same error: 1 - 2 P(Z > 3)
ROUNDING = 1e-12   # a per-sample gap above -ROUNDING x its largest draw is nonnegative to float rounding



def _nonnegative(r) -> bool:
    """Whether the per-sample gap at the largest N is nonnegative to float rounding (its most negative draw above
    -ROUNDING x its largest): the premise of the distribution-free bound (False where the columns are missing)."""
    neg, top = float(getattr(r, "gap_neg", np.nan)), float(getattr(r, "gap_max", np.nan))
    return bool(np.isfinite(neg) and np.isfinite(top) and top > 0 and neg >= -ROUNDING * top)


def _positive(r) -> str:
    """"The gap stays positive": z > 3 at every N (a normal approximation), or, for a subject whose per-sample gap
    at the largest N is nonnegative to rounding (the exact flow: its CD term is its own ODE step, zero to the
    solver's rounding), the distribution-free lower bound of the mean above 0 at the same one-sided error as z > 3
    (POSITIVE_LEVEL; such a gap is large only near the
    boundaries between the data points' basins, so its mean rests on a few draws and the normal approximation does
    not hold). "refuted" when z < -3 at the largest N."""
    if _nonnegative(r):
        return "holds" if r.gap_lcb > 0 else "inconclusive"
    return "holds" if r.gap_min_z > Z_POSITIVE else ("refuted" if r.gap_z_at_N_max < -Z_POSITIVE else "inconclusive")


def _positive_text(r) -> str:
    if not _nonnegative(r):
        return f"min over N of (L_CT - L_CD)/stderr {r.gap_min_z:.3g}, N gap {r.scaled_gap:.3g} at N = {r.N_max}"
    return (f"N gap {r.scaled_gap:.3g} at N = {r.N_max}, distribution-free lower bound {r.gap_lcb:.3g} (per-sample gap "
            f"nonnegative to rounding: most negative {r.gap_neg:.2g}, largest {r.gap_max:.3g}, carrying "
            f"{r.gap_top_share:.0%} of the sum; z {r.gap_z_at_N_max:.3g} not used)")


LIMIT_ESS_MIN = 100   # the limit row's normal interval is used only when the limit rests on this many effective draws


def limit_ess(n: int, limit: float, limit_stderr: float) -> float:
    """Kish's effective sample size of the limit's per-sample (nonnegative) plain terms p_k, (sum p)^2 / sum p^2,
    from their count n, mean ``limit`` and standard error ``limit_stderr`` (sample sd with ddof 1 over sqrt(n)):
    n / (1 + (n - 1) (se / mean)^2). About 1 when one draw carries the whole sum; n when all are equal."""
    n, m, se = int(n), float(limit), float(limit_stderr)
    if not (np.isfinite(m) and np.isfinite(se)) or m == 0:
        return float("nan")
    return n / (1.0 + (n - 1) * (se / m) ** 2)


def _ess(r) -> float:
    """``limit_ess`` of one row of the limits table."""
    return limit_ess(r.n, r.limit, r.limit_stderr)


def _few_draws(r) -> bool:
    """Whether the limit rests on fewer than LIMIT_ESS_MIN effective draws (False where the columns are missing)."""
    ess = _ess(r)
    return bool(np.isfinite(ess) and ess < LIMIT_ESS_MIN)


def _limit(r, tol) -> str:
    """The equivalence verdict of the relative difference's interval, or "inconclusive" when the limit rests on
    fewer than LIMIT_ESS_MIN effective draws (Kish, ``limit_ess``): then the sums are a few draws' and their
    normal interval says nothing (the exact flow of digits: one draw of 2560 carries 75% of the limit; on other
    draws one of 1024 carries 99%, and the limit is 20 times larger)."""
    return "inconclusive" if _few_draws(r) else equivalence_verdict(r.rel_lo, r.rel_hi, tol)


def _lim_txt(r) -> str:
    txt = (f"N={r.N_max}, n={r.n}: N gap {r.scaled_gap:.3g}, limit {r.limit:.3g} +- {r.limit_stderr:.2g}, "
           f"(N gap - limit)/limit {r.rel:+.1%} [{r.rel_lo:+.1%}, {r.rel_hi:+.1%}]")
    if _few_draws(r):
        txt += (f"; the limit rests on {_ess(r):.3g} effective draws of {r.n} "
                f"(Kish), fewer than {LIMIT_ESS_MIN}: the interval is not used")
    return txt


def _lim_power(k: str, r, tol: float, level: float) -> str:
    """The limit row's power text for subject ``k``: none where the limit rests on few effective draws."""
    if _few_draws(r):
        return (f"{k}: none for the {tol:.0%} test at n = {r.n} (the limit's {_ess(r):.3g} effective draws; its "
                f"spread is set by rare draws, so more draws of the same kind do not buy power)")
    return (f"{k}: {limit_power(r.rel_sd, r.n, tol, level):.0%} for the {tol:.0%} test at n = {r.n} (from the "
            f"per-sample spread)")


MIXTURE_SUBJECT = "exact flow of the continuous mixture (references.SMOOTH_MIXTURE)"
FINITE_NA = ("n/a, not judged: the exact flow of a finite set is not differentiable (it jumps at the boundaries "
             "between the points' basins), so E[N gap] grows like N and Theorem 1's limit is infinite for it (tests/"
             "test_metrics_gap.py's quadrature)")
MIXTURE_WHY = ("the ideal of this row was changed to the exact flow of a continuous density after the finite set's "
               "exact flow came out inconclusive (issue 30): Theorem 1 assumes a differentiable consistency function")
WRONG, WRONG_MIXTURE = "wrong teacher (v = 0)", "wrong teacher (v = 0) on the mixture's flow"


def limit_subjects(L: pd.DataFrame, label: str, rel_tol: float) -> tuple[dict, dict, str]:
    """The limit row's subjects, controls and n/a text from the limits table ``L`` (indexed by model): the model
    judged and the ideal, the exact flow of the continuous mixture ("mixture") when the table has one, else the
    table's "ideal"; the controls, each a wrong teacher v = 0 sharing its subject's limit: on the mixture's flow,
    and on the model judged only when that model's limit can be judged (at least LIMIT_ESS_MIN effective draws).
    Otherwise the model's control is n/a, named in the text, not left unrejected: it shares the limit that cannot
    be judged (the exact flow of a finite set judged as the model), so nothing it says bears on the row."""
    ideal = "mixture" if "mixture" in L.index else "ideal"
    subjects = {k: L.loc[src] for k, src in ((label, label), ("ideal", ideal)) if src in L.index}
    ctl, na = {}, ""
    if "wrong teacher" in L.index:
        wt = L.loc["wrong teacher"]
        if label in subjects and _few_draws(subjects[label]):
            na = (f"{WRONG} on {label}: n/a (it shares {label}'s limit, which rests on "
                  f"{_ess(wt):.3g} effective draws: the row cannot judge it)")
        else:
            ctl[WRONG] = (_limit(wt, rel_tol), _lim_txt(wt))
    if "mixture wrong teacher" in L.index:
        mw = L.loc["mixture wrong teacher"]
        ctl[WRONG_MIXTURE] = (_limit(mw, rel_tol), _lim_txt(mw))
    return subjects, ctl, na


def _grad_txt(g: pd.DataFrame, case: str) -> str:
    d = g[g.case == case]
    return ", ".join(f"N={int(r.N)}, n={int(r.n)}: along the CD gradient (G_CT - G_CD)/G_CD {r.proj:+.2%} +- "
                     f"{r.proj_se:.2%}; whole gradient ||E(G_CT - G_CD)|| / ||E G_CD|| {r.r:.3f} [{r.r_lo:.3f}, "
                     f"{r.r_hi:.3f}]" for r in d.itertuples())


WHOLE_TOL = 0.2   # alpha = 2: ||E(G_CT - G_CD)|| / ||E G_CD|| above this (its interval's bottom) refutes


def _grad_verdict(g: pd.DataFrame, case: str, same: bool, tol: float, level: float = 0.9) -> tuple[str, str]:
    """same=True (alpha = 2, the limits coincide): an equivalence test along the gradient itself (the direction of
    the mean CD gradient, cross-fitted) with the whole gradient beside it. "holds" when the ``level`` interval of the
    relative difference (G_CT - G_CD) . u / G_CD . u at the largest N lies inside +-tol and the whole-gradient
    ratio r = ||E(G_CT - G_CD)|| / ||E G_CD|| is not shown above ``WHOLE_TOL``; "refuted" when that interval lies
    outside +-tol OR r's interval lies above WHOLE_TOL (the difference is large in some direction); else
    "inconclusive". same=False (alpha = 1, they differ; existential): "holds" when the interval of
    ||E(G_CT - G_CD)||^2 excludes 0, "refuted" only when the difference is 0 to float rounding (a deterministic
    coupling), "inconclusive" otherwise."""
    from scipy import stats
    d = g[g.case == case]
    if d.empty:
        return "inconclusive", "not measured"
    r = d.iloc[-1]
    if same:
        z = float(stats.norm.ppf(0.5 + level / 2))
        v = equivalence_verdict(r.proj - z * r.proj_se, r.proj + z * r.proj_se, tol)
        if r.r_lo > WHOLE_TOL:
            v = "refuted"
    else:
        v = "refuted" if bool(r.exact_zero) else ("holds" if r.r_lo > 0 else "inconclusive")
    return v, _grad_txt(g, case)


def grad_power(se: float, tol: float, level: float = 0.9) -> float:
    """The chance that the alpha = 2 equivalence test holds when the CT and CD limits coincide, at the measured
    standard error ``se`` of the relative difference along the gradient: ``limit_power`` with rel_sd = se, n = 1."""
    return limit_power(se, 1, tol, level)


def grad_detect(effect: float, se: float, tol: float, level: float = 0.9) -> float:
    """The chance that the alpha = 2 test refutes a teacher whose true relative difference is ``effect`` (e.g. the
    1.1 v control's measured one) at standard error ``se``: P(|m| - z se > tol), m ~ N(effect, se^2)."""
    from scipy import stats
    z = float(stats.norm.ppf(0.5 + level / 2))
    if se <= 0:
        return float(abs(effect) > tol)
    return float(stats.norm.sf((tol - effect) / se + z) + stats.norm.cdf((-tol - effect) / se - z))


def _zero_gap(r, ref: float) -> str:
    """A deterministic coupling's gap against "the gap stays positive": "refuted" when its scaled gap at the
    largest N is 0 to float rounding (|N gap| + 3 se within 1e-3 of ``ref``, the same model's gap on the data set),
    "holds" when positive (z > 3), else "inconclusive"."""
    gz = float(r.gap_z)
    se = abs(float(r.scaled_gap) / gz) if gz else 0.0
    if abs(float(r.scaled_gap)) + 3 * se <= 1e-3 * abs(ref):
        return "refuted"
    return "holds" if gz > 3 else ("refuted" if gz < -3 else "inconclusive")


def _positive_power(r) -> str:
    """The chance of z > 3 at the largest N at the measured effect, and the draws that give 80% (normal); for a
    subject judged by the distribution-free bound: the share of positive draws the bound needs (about its eps)
    against the share measured."""
    from scipy import stats
    if _nonnegative(r):
        eps = dkw_eps(int(r.n), POSITIVE_LEVEL)
        return (f"distribution-free bound at n = {int(r.n)}: positive once about {eps:.1%} of the draws are above 0 "
                f"({r.gap_pos:.0%} are)")
    z = float(r.gap_z_at_N_max)
    if not np.isfinite(z) or z <= 0:
        return f"z {z:.3g} at n = {int(r.n)}"
    need = int(np.ceil(int(r.n) * ((3 + stats.norm.ppf(0.8)) / z) ** 2))
    return (f"z {z:.3g} at N = {int(r.N_max)}, n = {int(r.n)}: P(z > 3) {stats.norm.cdf(z - 3):.0%} at the measured "
            f"effect; 80% needs n ~ {need}")


def gap_claims(limits: pd.DataFrame, grads: pd.DataFrame, det: pd.DataFrame, rel_tol: float = 0.1,
               grad_tol: float = 0.2, label: str = "trained", require=None, level: float = 0.9) -> list[dict]:
    """Theorem 1's rows, per distance: (1) the gap stays positive (z > 3 at every N; where the per-sample gap is
    nonnegative to rounding, as the exact flow's, the distribution-free lower bound of the mean above 0), ``label`` (the model
    judged) and the ideal; control: the deterministic coupling (one point: gap 0, refuted); (2) N gap -> plain limit within
    rel_tol (equivalence test), model and ideal; control: the wrong teacher v = 0. Then (3) Theorem 1 (ii) for
    alpha = 2 (the whole gradient within grad_tol; controls: the wrong teachers v = 0 and 1.1 v) and alpha = 1
    (they differ; control: one point); (4) R = 0 for a deterministic coupling (control: the data set). ``require``:
    the subjects that must hold (default: ``label`` and "ideal"); the controls gate every row
    (``verdicts.judged_row``)."""
    require = tuple(require or (label, "ideal"))
    out = []
    one = det[(det.model == label) & (det.data == "one point")] if det is not None else pd.DataFrame()
    whole = det[(det.model == label) & (det.data == "data set")] if det is not None else pd.DataFrame()
    for st in dict.fromkeys(limits.setting):
        L = limits[limits.setting == st].set_index("model")
        subjects = {k: L.loc[k] for k in (label, "ideal") if k in L.index}
        wt = L.loc["wrong teacher"] if "wrong teacher" in L.index else None
        ref = float(whole.scaled_gap.iloc[0]) if not whole.empty else float(subjects[label].scaled_gap)
        parts = {k: (_positive(r), _positive_text(r)) for k, r in subjects.items()}
        ctl = {} if one.empty else {"deterministic coupling (one data point)": (
            _zero_gap(one.iloc[0], ref), f"N gap {float(one.scaled_gap.iloc[0]):.2g}, z {float(one.gap_z.iloc[0]):.2g}; "
                                         f"zero: |N gap| + 3 se below 1e-3 of the data set's {ref:.3g}")}
        pw = "; ".join(f"{k} {_positive_power(r)}" for k, r in subjects.items())
        out.append(judged_row(f"The CT/CD gap stays positive as N grows ({st})", PAPER["positive"], parts, ctl,
                              require=require, power=pw))
        lim_subjects, ctl, na = limit_subjects(L, label, rel_tol)
        parts = {k: (_limit(r, rel_tol), _lim_txt(r)) for k, r in lim_subjects.items()}
        if "ideal" in parts and "mixture" in L.index:
            m = L.loc["mixture"]
            parts["ideal"] = (parts["ideal"][0], f"{MIXTURE_SUBJECT}: {parts['ideal'][1]}; relative difference "
                              f"{m.rel:+.2e}, the limit on {_ess(m):.3g} effective draws")
        if "ideal" in L.index and "mixture" in L.index:
            parts["exact flow of the data set"] = ("inconclusive", FINITE_NA)
        pw = "; ".join(_lim_power(k, r, rel_tol, level) for k, r in lim_subjects.items())
        note = ("paired estimator (the per-sample Taylor identity, true for any teacher; not judged): "
                + ", ".join(f"{k} {r.limit_paired:.3g}" for k, r in lim_subjects.items()))
        if na:
            note += f"; {na}"
        if any(_few_draws(r) for r in [*lim_subjects.values(), *([wt] if wt is not None else [])]):
            note += (f"; an interval is used only when the limit rests on at least {LIMIT_ESS_MIN} effective draws "
                     f"(Kish; rule added after the exact flow's inconclusive result, issue 30)")
        if "mixture" in L.index:
            note += "; " + MIXTURE_WHY
        out.append(judged_row(f"N (L_CT - L_CD) converges to Theorem 1's limit C T^(alpha-1) R with R from the true "
                              f"velocity (plain estimator; within {rel_tol:.0%}, 90% interval) ({st})", PAPER["limit"],
                              parts, ctl, require=require, power=pw, note=note))
    if grads is not None and len(grads):
        main = grads[grads.case == "alpha=2"].iloc[-1]
        v1 = grads[grads.case == "alpha=2, teacher 1.1 v"]
        pw = (f"{grad_power(main.proj_se, grad_tol, level):.0%} to hold when the limits coincide (se "
              f"{main.proj_se:.2%} at n = {int(main.n)})")
        if not v1.empty:
            pw += (f"; {grad_detect(v1.proj.iloc[-1], v1.proj_se.iloc[-1], grad_tol, level):.0%} to refute a teacher "
                   f"10% too large along the gradient alone (at its measured {v1.proj.iloc[-1]:+.2%} +- "
                   f"{v1.proj_se.iloc[-1]:.2%}; the whole-gradient test adds to it)")
        ctl = {k: _grad_verdict(grads, f"alpha=2, {k}", True, grad_tol, level) for k in ("wrong teacher v = 0",
                                                                                         "teacher 1.1 v")}
        out.append(judged_row(f"Theorem 1 (ii), alpha = 2: the scaled gradients of L_CT and L_CD converge to the same "
                              f"limit (along the gradient itself, the mean CD gradient's direction: the 90% interval "
                              f"of (G_CT - G_CD)/G_CD at the largest N inside +-{grad_tol:.0%}; refuted also when the "
                              f"whole gradient's ||E(G_CT - G_CD)|| / ||E G_CD|| is above {WHOLE_TOL:g})",
                              PAPER["grad2"],
                              {label: _grad_verdict(grads, "alpha=2", True, grad_tol, level),
                               "ideal": ("inconclusive", "n/a: the exact flow has no parameters")},
                              ctl, require=(label,), power=pw))
        a1 = grads[grads.case == "alpha=1"]
        pw1 = (f"{interval_power(a1.q.iloc[-1], a1.q_se.iloc[-1], level):.0%} to show a difference of the measured size "
               f"(q {a1.q.iloc[-1]:.3g} +- {a1.q_se.iloc[-1]:.2g} at n = {int(a1.n.iloc[-1])})") if not a1.empty else ""
        out.append(judged_row("Theorem 1 (ii), alpha = 1 (D = ||a - b||): the scaled gradients of L_CT and L_CD "
                              "converge to different limits (the interval of ||E(G_CT - G_CD)||^2 excludes 0)",
                              PAPER["grad1"], {label: _grad_verdict(grads, "alpha=1", False, grad_tol),
                                               "ideal": ("inconclusive", "n/a: no parameters")},
                              {"deterministic coupling (one data point)": _grad_verdict(grads, "alpha=1, one point",
                                                                                         False, grad_tol)},
                              require=(label,), power=pw1))
    if det is not None and len(det) and not whole.empty:
        ic = whole.iloc[0]

        def zero(r):  # R negligible against the IC coupling's, and the gap consistent with 0 (or negligible)
            small_gap = abs(r.gap_z) < 3 or abs(r.scaled_gap) <= 1e-6 * abs(ic.scaled_gap)
            return "holds" if abs(r.R) <= 1e-6 * abs(ic.R) and small_gap else "refuted"
        parts = {}
        for k in (label, "ideal"):
            d = det[(det.model == k) & (det.data == "one point")]
            if not d.empty:
                parts[k] = (zero(d.iloc[0]), f"R {d.R.iloc[0]:.2g}, N gap {d.scaled_gap.iloc[0]:.2g}")
        out.append(judged_row("R = 0 and CT = CD for a deterministic coupling (one data point: z = v_t(x_t))",
                              PAPER["det"], parts,
                              {"the data set (independent coupling)": (zero(ic), f"R {ic.R:.3g}, N gap "
                                                                                 f"{ic.scaled_gap:.3g}")},
                              require=require, power="exact to float rounding (no sampling: z = v_t on every draw)",
                              note="zero: R below 1e-6 of the control's and the gap within 3 standard errors of 0 "
                                   "(float rounding)"))
    return out


