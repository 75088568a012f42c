"""Paired verdicts (gclib.experiments.common): the Student-t interval against scipy's, all three outcomes, and the
claims of a sweep computed from synthetic curves coming out either way."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gclib.experiments.common import claim, paired_claim, paired_verdict
from gclib.experiments.fid_curves import per_seed, steps_to_reach


def test_interval_matches_scipy_one_sample_t():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=7), rng.normal(size=7)
    v = paired_verdict(a, b, level=0.9)
    ci = stats.ttest_1samp(a - b, 0.0).confidence_interval(0.9)
    assert np.isclose(v.lo, ci.low) and np.isclose(v.hi, ci.high) and np.isclose(v.mean, (a - b).mean())


@pytest.mark.parametrize("a, b, expect, verdict", [
    ([1.0, 2.0, 3.0], [2.0, 3.0, 4.1], "less", "holds"),
    ([1.0, 2.0, 3.0], [2.0, 3.0, 4.1], "greater", "refuted"),
    ([1.0, 2.0, 3.0], [0.0, 1.0, 2.5], "less", "refuted"),
    ([1.0, 2.0, 3.0], [1.1, 1.9, 3.05], "less", "inconclusive"),
    ([1.0], [2.0], "less", "inconclusive"),            # one seed: no interval
])
def test_three_outcomes(a, b, expect, verdict):
    assert paired_verdict(a, b, expect).verdict == verdict


def test_pairing_removes_shared_seed_variation():
    # seed effects dominate each flow's spread, the flow effect is small and consistent: paired -> holds
    seed_effect = np.array([0.0, 5.0, -3.0, 8.0])
    gc, ic = seed_effect + 1.0, seed_effect + 1.2 + np.array([0.01, -0.01, 0.02, 0.0])
    assert paired_verdict(gc, ic).verdict == "holds"
    assert stats.ttest_ind(gc, ic).pvalue > 0.5  # unpaired, the same numbers say nothing


def test_claim_rows_and_errors():
    row = paired_claim("GC ends below IC", [1, 2, 3], [2, 3, 4.1], "GC", "IC", paper="Table 1")
    assert row["verdict"] == "holds" and row["paper"] == "Table 1" and "GC - IC = -1.03" in row["measured"]
    assert claim("x", False, "m")["verdict"] == "refuted"
    with pytest.raises(ValueError, match="verdict='yes'"):
        claim("x", "yes", "m")
    with pytest.raises(ValueError, match="one value per seed"):
        paired_verdict([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="expect='below'"):
        paired_verdict([1, 2], [1, 2], "below")


def curves_of(values: dict) -> pd.DataFrame:
    rows = []
    for (label, seed), ys in values.items():
        rows += [{"label": label, "seed": seed, "step": 10 * (i + 1), "m": y} for i, y in enumerate(ys)]
    return pd.DataFrame(rows)


def test_per_seed_summaries_and_steps_to_reach():
    c = curves_of({("A", 0): [4.0, 2.0, 1.0], ("A", 1): [3.0, 3.0, 3.0], ("B", 0): [5.0, 3.0, 2.5]})
    assert per_seed(c, "m", "A", "final").tolist() == [1.0, 3.0]
    assert per_seed(c, "m", "A", "first").tolist() == [4.0, 3.0]
    # trapezoid on steps 10, 20, 30: (3 + 1.5) * 10 / 20 = 2.25
    assert per_seed(c, "m", "A", "auc").tolist() == [2.25, 3.0]
    reach = steps_to_reach(c, "m", "A", per_seed(c, "m", "B", "final"))
    assert reach.loc[0] == 20.0 and np.isnan(reach.loc[1])  # seed 1 never gets down to B's final (none given)
