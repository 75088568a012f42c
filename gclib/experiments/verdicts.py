r"""How a theory row turns measurements into a verdict (docs/method.md section 7, "How a row is judged").

Two rules every row of toy_flows, ct_cd_gap and transport_cost obeys, each implemented once, here:

1. **Bounds never refute the wrong way** (``bound_verdict``). A side of a comparison may be an estimate of the
   quantity itself ("exact": a Monte Carlo mean of it) or only a bound on it: the gap proxy R~_t of a coupling is
   the Bayes risk of predicting z from the coupling's point, so E||z - h(y)||^2 for any named h is an **upper**
   bound of it (docs/method.md section 3; exact only for IC, whose own velocity is the data's). "a < b" can hold
   only if an upper estimate of a lies below a lower estimate of b, and can be refuted only if a lower estimate of
   a lies above an upper estimate of b. So an upper bound below the other side holds; an upper bound above it is
   at most inconclusive; two upper bounds compared can neither hold nor refute.
2. **Controls gate the verdict** (``gate``). Every row names the negative controls it must reject (broken
   predictors, wrong teachers, shrunk generators, ...). A control is rejected only when its own verdict on the row
   is "refuted"; a row with a control that is not rejected (its verdict "holds" or "inconclusive") is at most
   inconclusive, and says which control it could not reject.

``judged_row`` builds the metrics.json entry of a row from the verdicts of its subjects (the model judged, the
exact reference, the controls) with both rules applied.
"""
from __future__ import annotations

import numpy as np

from .common import claim, combine_verdicts

KINDS = ("exact", "upper", "lower")
REJECTED = "refuted"   # the only control verdict that counts as rejected


def _check_kind(name: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"{name}={kind!r} is not valid; allowed values: {', '.join(map(repr, KINDS))}")
    return kind


def bound_verdict(lo: float, hi: float, expect: str = "less", a: str = "exact", b: str = "exact",
                  ref: float = 0.0) -> str:
    """The verdict of "a < b" (``expect="less"``) or "a > b" (``"greater"``) from an interval [lo, hi] of the
    estimated difference a - b (or of a alone against a fixed ``ref``, with b "exact"), where each side's
    estimate is ``"exact"`` (an unbiased estimate of that side), an ``"upper"`` bound or a ``"lower"`` bound of it.

    - "holds" needs the interval on the paper's side of ``ref`` AND estimates that err the safe way: for "a < b",
      a's estimate exact or an upper bound and b's exact or a lower bound (then a <= a^ < b^ <= b);
    - "refuted" needs the interval on the other side AND estimates that err the other way: for "a < b", a's exact
      or a lower bound and b's exact or an upper bound;
    - "inconclusive" otherwise (or when the interval is not finite).
    With both sides exact this is ``common.interval_verdict``."""
    if expect not in ("less", "greater"):
        raise ValueError(f"expect={expect!r} is not valid; allowed values: 'less', 'greater'")
    _check_kind("a", a)
    _check_kind("b", b)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    below, above = hi < ref, lo > ref
    # the side whose estimate may sit above its true value is "upper"; "less" wants a small, b large
    small_ok = {"less": (a in ("exact", "upper"), b in ("exact", "lower")),
                "greater": (a in ("exact", "lower"), b in ("exact", "upper"))}[expect]
    big_ok = {"less": (a in ("exact", "lower"), b in ("exact", "upper")),
              "greater": (a in ("exact", "upper"), b in ("exact", "lower"))}[expect]
    paper_side, other_side = (below, above) if expect == "less" else (above, below)
    if paper_side and all(small_ok):
        return "holds"
    if other_side and all(big_ok):
        return "refuted"
    return "inconclusive"


def gate(verdict: str, controls: dict) -> tuple[str, list]:
    """(verdict, unrejected): a row's ``verdict`` with its controls applied. ``controls``: {name: verdict of the
    control on the row}. Every control must be "refuted"; if one is not, a "holds" becomes "inconclusive" (a
    "refuted" or "inconclusive" stays). ``unrejected``: the names of the controls not rejected, in order.
    A row without controls cannot hold (nothing shows the row can fail): its verdict is at most inconclusive."""
    unrejected = [k for k, v in controls.items() if v != REJECTED]
    if verdict == "holds" and (unrejected or not controls):
        return "inconclusive", unrejected
    return verdict, unrejected


def control_summary(controls: dict) -> str:
    """One word for all of a row's controls: "refuted" (all rejected), "holds" (one passed the row) or
    "inconclusive"."""
    vs = list(controls.values())
    if vs and all(v == REJECTED for v in vs):
        return REJECTED
    return "holds" if any(v == "holds" for v in vs) else "inconclusive"


def judged_row(text: str, paper: str, subjects: dict, controls: dict, *, require=("model",), power: str = "",
               note: str = "", **extra) -> dict:
    """The metrics.json entry of one row.

    subjects: {label: (verdict, measured text)} of the models the row judges (e.g. "model" / "trained" and
    "ideal"); the row's own verdict combines those named in ``require`` (every one must hold; any refuted
    refutes; a label absent from ``subjects`` counts as inconclusive), then ``gate`` applies the controls.
    controls: {name: (verdict, measured text)}. power: what the row's test can detect at its sample size (printed
    in the measured column). Fields: claim, paper, verdict, measured, control (the names), control_verdict (one
    word, ``control_summary``), controls ({name: verdict}), subjects ({label: verdict}), unrejected (the controls
    not rejected), power, and ``extra``."""
    parts = [subjects[k][0] if k in subjects else "inconclusive" for k in require]
    verdict, unrejected = gate(combine_verdicts(parts), {k: v[0] for k, v in controls.items()})
    measured = " / ".join(f"{k}: {v[0]} ({v[1]})" for k, v in subjects.items())
    measured += " / controls: " + ("; ".join(f"{k} {v[0]} ({v[1]})" for k, v in controls.items()) or "none")
    if unrejected:
        measured += f" / not rejected: {', '.join(unrejected)} (so the row is at most inconclusive)"
    if power:
        measured += f" / power: {power}"
    if note:
        measured += f"; {note}"
    row = claim(text, verdict, measured, paper)
    row.update(control=", ".join(controls), control_verdict=control_summary({k: v[0] for k, v in controls.items()}),
               controls={k: v[0] for k, v in controls.items()}, subjects={k: v[0] for k, v in subjects.items()},
               unrejected=unrejected, power=power, **extra)
    return row


def interval_power(effect: float, se: float, level: float = 0.9) -> float:
    """The chance that a normal ``level`` interval of an estimate with standard error ``se`` excludes 0 on the side
    of ``effect`` when the true value is ``effect`` (the measured one: the power of the row's test at its sample
    size and the size of the effect it saw)."""
    from scipy import stats
    if not (np.isfinite(effect) and np.isfinite(se)) or se <= 0:
        return float(effect != 0) if np.isfinite(effect) else float("nan")
    return float(stats.norm.cdf(abs(effect) / se - stats.norm.ppf(0.5 + level / 2)))
