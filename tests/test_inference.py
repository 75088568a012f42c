"""Family-wise verdicts and censored endpoints (gclib.experiments.inference and their use in fid_curves): Holm's
adjustment against a hand computation, a family where the adjustment changes a verdict, the p-value agreeing with
the interval, the sign test with a never-reached seed against the binomial by hand, and the committed profiles'
rows recomputed from their committed CSVs."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from gclib.experiments.common import paired_verdict
from gclib.experiments.fid_curves import Sweep, preregistered_claims, sweep_claims, sweep_from_params
from gclib.experiments.inference import (add_holm, censored_sign_test, holm_adjust, holm_verdicts, mean_lower_bound,
                                        paired_p)
from nbhelpers import ROOT


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.2 with m = 4: 4 * 0.01, 3 * 0.03, max(0.09, 2 * 0.04), max(0.09, 0.2)
    assert holm_adjust([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm_adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])          # capped at 1
    adj = holm_adjust([0.02, float("nan")])                              # a NaN row counts in m
    assert adj[0] == pytest.approx(0.04) and math.isnan(adj[1])


def test_the_adjustment_changes_a_verdict():
    # three rows that each hold at 0.10 on their own; only the strongest survives the family-wise 0.10
    verdicts, p = ["holds", "holds", "refuted"], [0.02, 0.06, 0.09]
    assert holm_verdicts(verdicts, p, 0.1) == ["holds", "inconclusive", "inconclusive"]
    # alone in its family, a row keeps its own verdict, in either direction
    assert holm_verdicts(["refuted"], [0.09], 0.1) == ["refuted"]
    assert holm_verdicts(["inconclusive"], [0.5], 0.1) == ["inconclusive"]


def test_paired_p_agrees_with_the_interval():
    g = np.random.default_rng(0)
    for shift in (0.0, 0.3, 0.6, 1.0, -0.8):
        a = g.standard_normal(7) + shift
        v = paired_verdict(a, np.zeros(7), "greater")
        p = paired_p(v)
        from scipy import stats
        assert p == pytest.approx(stats.ttest_1samp(a, 0.0).pvalue, rel=1e-9)
        assert (p < 0.1) == (v.verdict != "inconclusive")


def test_add_holm_marks_the_family_and_leaves_the_rest_unadjusted():
    # adjusted: 3 * 0.03 = 0.09; max(0.09, 2 * 0.05) = 0.10; max(0.10, 0.07) = 0.10 (not below 0.10)
    rows = [{"role": "primary", "verdict": "holds", "p": 0.03}, {"role": "primary", "verdict": "holds", "p": 0.05},
            {"role": "primary", "verdict": "refuted", "p": 0.07},
            {"role": "secondary", "verdict": "holds", "p": 0.001}, {"role": "exploratory", "verdict": "refuted"}]
    add_holm(rows, 0.1)
    assert [r["verdict_holm"] for r in rows] == ["holds", "inconclusive", "inconclusive", "unadjusted (secondary)",
                                                 "unadjusted (exploratory)"]
    assert [r["p_holm"] for r in rows[:3]] == pytest.approx([0.09, 0.10, 0.10])
    assert "p_holm" not in rows[3] and rows[0]["family"].startswith("3 primary rows")


def test_sign_test_with_a_never_reached_seed():
    nan = float("nan")
    # a first on seeds 0, 1, 2, 4 (seed 4: only a reaches it); b first on seed 3 (a never); seed 5 tied; seed 6: neither
    a = [100, 200, 300, nan, 400, 500, nan]
    b = [200, 300, 400, 400, nan, 500, nan]
    t = censored_sign_test(a, b)
    assert (t.earlier, t.later, t.ties, t.reached_a, t.reached_b, t.n) == (4, 1, 2, 5, 5, 7)
    assert t.p == pytest.approx(2 * (1 + 5) / 2 ** 5)              # two-sided binomial, 4 of 5: 2 * P(X <= 1)
    assert t.verdict == "inconclusive"
    # eight seeds where a is first (two of them because b never reaches it) hold; reversed, they are refuted
    a8, b8 = [1, 2, 3, 4, 5, 6, 7, 8], [2, 3, 4, 5, 6, 7, nan, nan]
    assert censored_sign_test(a8, b8).verdict == "holds" and censored_sign_test(a8, b8).p == pytest.approx(2 / 256)
    assert censored_sign_test(b8, a8).verdict == "refuted"
    assert censored_sign_test(b8, a8, expect="greater").verdict == "holds"
    with pytest.raises(ValueError, match="equal length"):
        censored_sign_test([1, 2], [1])


def _curves(reach_never: set) -> pd.DataFrame:
    """IC falls to 10 at step 400; GC is below 10 from step 100, except on the seeds in ``reach_never`` (20)."""
    rows = []
    for s in range(6):
        for step, ic in ((100, 40.0), (200, 20.0), (300, 15.0), (400, 10.0)):
            gc = 20.0 if s in reach_never else {100: 9.0, 200: 8.5, 300: 8.0, 400: 7.0}[step]
            rows += [{"label": "IC", "seed": s, "step": step, "fd_digits": ic + 0.01 * s},
                     {"label": "GC mu=0.5", "seed": s, "step": step, "fd_digits": gc}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("added, both", [("", False), ("2026-12-07", True)])
def test_the_steps_to_reach_row_is_censored(tmp_path, added, both):
    pre = {"date": "2026-11-30", "primary": [{"endpoint": "final", "a": "GC mu=0.5", "b": "IC"}],
           "secondary": [{"endpoint": "steps_to_reach", "a": "GC mu=0.5", "b": "IC"}],
           "censoring": "never reached ranks last", **({"censoring_added": added} if added else {})}
    sw = Sweep(base={"total_steps": 400, "eval_every": 100, "dataset": "digits"}, metric="fd_digits",
               seeds=list(range(6)), mus=[0.5], include_ot=False, frozen={}, frozen_mu=0.5, frozen_seed=0, workers=1,
               out=tmp_path, preregistration=pre)
    row = preregistered_claims(sw, _curves({5}))[1]
    # GC first on seeds 0-4 (100 against 400), IC first on seed 5 (GC never): 5 against 1, p = 2 * 7 / 64
    assert row["verdict"] == "inconclusive" and row["p"] == pytest.approx(14 / 64)
    assert "reached by GC mu=0.5 in 5 of 6 seeds, by IC in 6" in row["measured"]
    # the old scoring (never = step 500) calls the same seeds "holds": -300 on five seeds, +100 on one
    assert ("under the earlier scoring (never reached = step 500)" in row["measured"]) == both
    assert ("holds" in row["measured"].split("earlier scoring")[-1]) == both
    assert preregistered_claims(sw, _curves(set()))[1]["verdict"] == "holds"   # 6 of 6 first: p = 1/32


def test_a_steps_to_reach_endpoint_needs_a_censoring_rule():
    from gclib.experiments.fid_curves import make_sweep
    pre = {"primary": [{"endpoint": "steps_to_reach", "a": "GC mu=0.5", "b": "IC"}]}
    with pytest.raises(ValueError, match="censoring"):
        make_sweep("x", "params/train/digits.yaml", {"total_steps": 100}, "fd_digits", [0, 1], [0.5], root=ROOT,
                   preregistration=pre)


@pytest.mark.parametrize("variant", ["cpu_long_replication", "cpu_long", "cpu_long_2x", "cpu_long_mu"])
def test_committed_rows_recompute_from_the_committed_csvs(variant):
    """metrics.json's claims (with their family-wise verdicts) are what the code computes from curves.csv and
    final_eval.csv; the params files state the censoring rule wherever a steps_to_reach endpoint is."""
    sw = sweep_from_params(ROOT / "params" / "fid_curves" / f"{variant}.yaml", root=ROOT)
    out = ROOT / "results" / "fid_curves" / variant
    claims = sweep_claims(sw, pd.read_csv(out / "curves.csv"), final=pd.read_csv(out / "final_eval.csv"))
    committed = json.loads((out / "metrics.json").read_text())["claims"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("p", "p_holm", "diff")} for r in rows]
    assert strip(json.loads(json.dumps(claims))) == strip(committed)
    for r, c in zip(claims, committed):
        for k in ("p", "p_holm"):
            assert (r.get(k) is None and c.get(k) is None) or r[k] == pytest.approx(c[k], rel=1e-12)
    assert all("verdict_holm" in c for c in committed)
    primary = [c for c in committed if c["role"] == "primary"]
    assert all(c["verdict_holm"] in ("holds", "refuted", "inconclusive") for c in primary)


def test_reanalyse_starts_from_the_committed_results(tmp_path, monkeypatch):
    """reanalyse=True: the committed curves and final evaluation are read before anything is rewritten, written
    back byte for byte, and no run is trained; a variant without them is refused in one line."""
    from gclib.experiments import fid_curves
    src = ROOT / "results" / "fid_curves" / "cpu_long_2x"
    out = tmp_path / "results" / "fid_curves" / "cpu_long_2x"
    out.mkdir(parents=True)
    for n in ("curves.csv", "final_eval.csv", "samples.png"):
        (out / n).write_bytes((src / n).read_bytes())
    sw = sweep_from_params(ROOT / "params" / "fid_curves" / "cpu_long_2x.yaml", root=ROOT)
    sw.out, sw.reanalyse = out, True
    sw.committed = fid_curves._read_committed(sw)
    monkeypatch.setattr(fid_curves, "train_sweep", lambda *a, **k: pytest.fail("reanalyse trained a run"))
    monkeypatch.setattr(fid_curves, "evaluate_final", lambda *a, **k: pytest.fail("reanalyse evaluated a run"))
    (out / "curves.csv").write_text("overwritten")
    curves, final = fid_curves.run_sweep(sw), fid_curves.final_evaluation(sw)
    assert (out / "curves.csv").read_bytes() == (src / "curves.csv").read_bytes()
    assert (out / "final_eval.csv").read_bytes() == (src / "final_eval.csv").read_bytes()
    fid_curves.plot_samples(sw)
    assert (out / "samples.png").read_bytes() == (src / "samples.png").read_bytes()
    assert len(curves) and len(final) == 15
    (out / "final_eval.csv").unlink()
    with pytest.raises(ValueError, match=r"reanalyse=True: final_eval.csv missing"):
        fid_curves._read_committed(sw)


DIGITS_PROFILES = ("cpu_long_replication", "cpu_long", "cpu_long_2x", "cpu_long_mu")   # pre-registered, with results


def test_forest_plot_and_central_table_show_every_committed_row(tmp_path):
    """Every paired row with an interval of the pre-registered digits profiles is a row of the forest plot, with the
    numbers of its claim; the table lists each primary row with both verdicts and says which seeds were seen."""
    import shutil
    from gclib.experiments.forest import central_table, forest_plot, forest_rows, timing_table
    rows = forest_rows(ROOT)
    profiles = {r["profile"] for r in rows}
    assert set(DIGITS_PROFILES) <= profiles
    n_primary = 0
    for variant in DIGITS_PROFILES:
        claims = json.loads((ROOT / "results" / "fid_curves" / variant / "metrics.json").read_text())["claims"]
        n_primary += sum(c.get("role") == "primary" for c in claims)
        with_interval = [c for c in claims if c.get("diff")]
        mine = [r for r in rows if r["profile"] == variant]
        assert len(mine) == len(with_interval) > 0
        for r, c in zip(mine, with_interval):
            assert c["measured"].count(f"{r['mean']:.3g}") and r["verdict"] == c["verdict"]
            assert r["lo"] <= r["mean"] <= r["hi"]
    png = forest_plot(rows, tmp_path / "forest.png")
    assert png.stat().st_size > 10_000 and (tmp_path / "forest.pdf").is_file()
    assert forest_plot([], tmp_path / "none.png") is None
    table = "\n".join(central_table(ROOT))
    assert table.count("| **holds** |") + table.count("| **inconclusive** |") + table.count("| **refuted** |") == n_primary
    assert "Seeds 0-2" in table and "Seeds 0-1" in table
    # a profile with runs.csv shows its device and time per run
    fake = tmp_path / "results" / "fid_curves" / "cpu_long"
    fake.mkdir(parents=True)
    shutil.copy(ROOT / "results" / "fid_curves" / "cpu_long" / "metrics.json", fake)
    pd.DataFrame({"label": ["IC", "OT"], "seed": [0, 0], "device": ["cpu", "cpu"], "seconds": [600.0, 700.0]}).to_csv(
        fake / "runs.csv", index=False)
    assert "| cpu_long | 4000 | cpu (2) | 650 | 600-700 |" in timing_table(tmp_path)


# ------------------------------------------------------------------ distribution-free lower bound of a mean
def test_mean_lower_bound_by_hand():
    """Anderson's bound a + int (S_n - eps)^+ computed by hand: 100 draws, k ones and 100 - k zeros, level 0.9
    (one-sided 95%): eps = sqrt(ln 20 / 200) = 0.1224; S_n = k / 100 on [0, 1)."""
    eps = math.sqrt(math.log(20) / 200)
    for k, expected in ((20, 0.20 - eps), (10, 0.0), (100, 1.0)):
        x = np.r_[np.zeros(100 - k), np.ones(k)]
        assert mean_lower_bound(x) == pytest.approx(max(expected, 0.0) if k < 100 else 1.0, abs=1e-12)
    # two levels: 0 (50 draws), 1 (30), 3 (20): S_n is 0.5 on [0, 1) and 0.2 on [1, 3)
    x = np.r_[np.zeros(50), np.ones(30), 3 * np.ones(20)]
    assert mean_lower_bound(x) == pytest.approx((0.5 - eps) + 2 * (0.2 - eps), abs=1e-12)
    # a shift moves the bound by the same amount (the support's lower end is the sample's minimum)
    assert mean_lower_bound(x - 5.0) == pytest.approx(mean_lower_bound(x) - 5.0, abs=1e-12)


def test_mean_lower_bound_covers_a_heavy_tailed_mean():
    """A variable whose mean rests on rare draws (100 with probability 1%, else 0: mean 1): the bound stays below
    the mean in at least 95% of 2000 samples of 500 draws; the t-interval's lower end does not (it misses far more
    often: most samples have no or one rare draw, and its normal approximation is then wrong)."""
    rng = np.random.default_rng(0)
    x = 100.0 * (rng.random((2000, 500)) < 0.01)
    lbs = np.array([mean_lower_bound(r) for r in x])
    assert np.mean(lbs <= 1.0) >= 0.95
    t_lo = x.mean(1) - 1.645 * x.std(1, ddof=1) / math.sqrt(500)
    assert np.mean(t_lo <= 1.0) < np.mean(lbs <= 1.0)


def test_mean_lower_bound_is_not_positive_without_a_positive_mean():
    """Broken inputs: a gap that is 0, and one that is symmetric rounding noise, give no positive bound; a clearly
    positive variable does."""
    rng = np.random.default_rng(1)
    assert mean_lower_bound(np.zeros(1000)) == 0.0
    assert mean_lower_bound(1e-23 * rng.standard_normal(2560)) < 0
    assert mean_lower_bound(-np.abs(rng.standard_normal(500))) < 0
    assert mean_lower_bound(np.abs(rng.standard_normal(500))) > 0.5


@pytest.mark.parametrize("x, level, msg", [([1.0], 0.9, "at least 2 finite values"),
                                           ([1.0, np.nan], 0.9, "1 not finite"), ([1.0, 2.0], 1.0, "level=1.0")])
def test_mean_lower_bound_refuses_bad_input(x, level, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        mean_lower_bound(x, level)
