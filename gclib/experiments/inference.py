"""Inference over seeds beyond one paired interval: a family of primary rows judged together (Holm's step-down
correction) and an endpoint whose value a seed may never reach (censored: a paired sign test).

Every pre-registered profile judges each row with a paired Student-t interval at level 0.9
(``common.paired_verdict``). A row's verdict alone controls its own error at 0.10; a profile's primary rows
together are a family, and ``holm`` gives the verdict each keeps when the family-wise error is held at the same
0.10. A "steps to reach" endpoint has no value for a seed that never reaches the target: ``censored_sign_test``
ranks such a seed after every seed that reaches it, and counts, seed by seed, which of the two runs got there
first. A mean whose draws are heavy-tailed (a few draws carry most of it) gets a distribution-free lower bound
(``mean_lower_bound``) instead of a normal approximation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .common import PairedVerdict


def paired_p(v: PairedVerdict) -> float:
    """The two-sided p-value of the paired t-test behind ``v`` (the mean difference against 0). It is below
    1 - v.level exactly when v's interval excludes 0, so a row's verdict and its p-value always agree."""
    from scipy import stats
    if v.n < 2 or not (np.isfinite(v.lo) and np.isfinite(v.hi)):
        return float("nan")
    half = (v.hi - v.lo) / 2
    if half == 0:
        return 0.0 if v.mean != 0 else 1.0
    se = half / stats.t.ppf(0.5 + v.level / 2, v.n - 1)
    return float(2 * stats.t.sf(abs(v.mean) / se, v.n - 1))


def holm_adjust(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values: with p_(1) <= ... <= p_(m) sorted, the adjusted p_(i) is
    max_{j <= i} min(1, (m - j + 1) p_(j)); rejecting where the adjusted value is below alpha holds the
    family-wise error at alpha. A NaN (a row with < 2 seeds) stays NaN and counts in m."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    out = np.full(m, np.nan)
    order = sorted((i for i in range(m) if np.isfinite(p[i])), key=lambda i: p[i])
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def holm_verdicts(verdicts, pvalues, alpha: float = 0.1) -> list[str]:
    """The verdict each row keeps under Holm's correction at family-wise ``alpha``: a row's own verdict ("holds"
    or "refuted", whose direction its interval gives) when its adjusted p-value is below alpha, "inconclusive"
    otherwise."""
    adj = holm_adjust(pvalues)
    return [v if (v != "inconclusive" and np.isfinite(a) and a < alpha) else "inconclusive"
            for v, a in zip(verdicts, adj)]


def add_holm(rows: list[dict], alpha: float = 0.1) -> list[dict]:
    """Mark a profile's rows for the family-wise verdict: the rows whose ``role`` is "primary" form the family and
    get ``p`` (their own two-sided p-value, which they must carry), ``p_holm`` and ``verdict_holm``; every other row
    gets ``verdict_holm`` = "unadjusted (<role>)". Returns the same rows, changed in place."""
    fam = [r for r in rows if r.get("role") == "primary"]
    for r, a, v in zip(fam, holm_adjust([r["p"] for r in fam]), holm_verdicts([r["verdict"] for r in fam],
                                                                           [r["p"] for r in fam], alpha)):
        r.update(p_holm=None if not np.isfinite(a) else float(a), verdict_holm=v,
                 family=f"{len(fam)} primary rows, Holm, family-wise {alpha:g}")
    for r in rows:
        if r.get("role") != "primary":
            r["verdict_holm"] = f"unadjusted ({r.get('role') or 'not pre-registered'})"
    return rows


@dataclass
class SignTest:
    """A paired sign test of "a reaches the target before b" over seeds where either may never reach it."""
    verdict: str
    earlier: int         # seeds where a reached it first (a reached, b later or never)
    later: int           # seeds where b reached it first
    ties: int            # same evaluation, or neither reached it (left out of the test)
    reached_a: int
    reached_b: int
    n: int
    p: float             # two-sided exact binomial p-value of earlier against later
    level: float

    def text(self, name_a: str = "a", name_b: str = "b") -> str:
        return (f"reached by {name_a} in {self.reached_a} of {self.n} seeds, by {name_b} in {self.reached_b}; "
                f"{name_a} first on {self.earlier}, {name_b} first on {self.later}, tied on {self.ties}; "
                f"sign test p = {self.p:.3g} (never reached ranks last; {self.level:.0%} level)")


def censored_sign_test(a, b, expect: str = "less", level: float = 0.9) -> SignTest:
    """``a``, ``b``: per seed (paired), the step at which each run first reached the target, NaN or inf where it
    never did. A never-reached seed ranks after every reached one, so a pair is "a first" when a reached it at a
    smaller step or only a reached it, "b first" the other way round, and a tie when both reached it at the same
    step or neither did (ties are left out, as the sign test does). The two-sided exact binomial test of the
    "a first" count against half the untied seeds gives p; "holds" when p < 1 - level in the paper's direction
    (expect="less": a reaches it sooner), "refuted" when p < 1 - level the other way, else "inconclusive"."""
    from scipy import stats
    if expect not in ("less", "greater"):
        raise ValueError(f"expect={expect!r} is not valid; allowed values: 'less', 'greater'")
    a = np.where(np.isfinite(np.asarray(a, dtype=np.float64)), a, np.inf)
    b = np.where(np.isfinite(np.asarray(b, dtype=np.float64)), b, np.inf)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"censored_sign_test needs two 1-D sequences of equal length (one value per seed); got "
                         f"shapes {a.shape} and {b.shape}")
    earlier, later = int(np.sum(a < b)), int(np.sum(a > b))
    ties = len(a) - earlier - later
    p = float(stats.binomtest(earlier, earlier + later, 0.5).pvalue) if earlier + later else 1.0
    direction = "less" if earlier > later else "greater" if later > earlier else None
    verdict = "inconclusive" if p >= 1 - level or direction is None else "holds" if direction == expect else "refuted"
    return SignTest(verdict, earlier, later, ties, int(np.isfinite(a).sum()), int(np.isfinite(b).sum()), len(a), p,
                    level)


def dkw_eps(n: int, level: float = 0.9) -> float:
    """The one-sided DKW band's half-width for n draws at one-sided confidence (1 + level) / 2 (Massart's constant):
    sqrt(ln(2 / (1 - level)) / (2 n))."""
    return float(np.sqrt(np.log(2.0 / (1.0 - level)) / (2.0 * n)))


def mean_lower_bound(x, level: float = 0.9) -> float:
    """A distribution-free lower confidence bound for the mean of the variable that ``x`` samples, at one-sided
    confidence (1 + level) / 2 (the lower end of a two-sided ``level`` interval), for a variable bounded below by
    the sample's minimum (the plug-in support: use it where the lower end is known, e.g. a variable that is
    nonnegative up to float rounding).

    E[X] = a + int_a^inf S(tau) dtau for X >= a, with S the survival function. By the one-sided
    Dvoretzky-Kiefer-Wolfowitz inequality (Massart's constant), S(tau) >= S_n(tau) - eps for every tau at once
    with probability >= 1 - alpha, eps = sqrt(ln(1 / alpha) / (2 n)), alpha = (1 - level) / 2, so
    E[X] >= a + int_a^inf max(S_n(tau) - eps, 0) dtau (Anderson's bound). It needs no normal approximation: it
    holds for a heavy-tailed variable whose mean rests on a few draws, where a t-interval is not valid."""
    v = np.sort(np.asarray(x, dtype=np.float64).ravel())
    if v.size < 2 or not np.all(np.isfinite(v)):
        raise ValueError(f"mean_lower_bound needs at least 2 finite values; got {v.size} values "
                         f"({int(np.sum(~np.isfinite(v)))} not finite)")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level} must be in (0, 1)")
    n = v.size
    eps = dkw_eps(n, level)
    above = (n - np.arange(1, n)) / n   # S_n on [v_(i), v_(i+1)): the share of draws above it
    return float(v[0] + np.sum(np.diff(v) * np.clip(above - eps, 0.0, None)))
