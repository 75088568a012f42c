"""notebooks/ct_cd_gap.ipynb: a papermill smoke run at the defaults (Theorem 1's measurements are sane and every
claim is computed with a verdict), the claim functions on synthetic inputs giving each verdict (none can only hold),
the clear errors for bad parameters, and the params/ files validate.

Trained models are cached under runs/ by configuration hash (the same configs nbval uses), so reruns are quick.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gclib.experiments import ct_cd_gap as gap
from gclib.experiments.common import VERDICTS, train_config
from nbhelpers import ROOT, assert_fails_clearly, assert_paper_scale, load_params, run_notebook

NB = ROOT / "notebooks" / "ct_cd_gap.ipynb"


@pytest.fixture(scope="module")
def defaults(tmp_path_factory):
    return run_notebook("ct_cd_gap", tmp_path_factory.mktemp("ccg") / "out.ipynb",
                        {"metrics.json", "gap_vs_N.csv", "gap_limits.csv", "gap_vs_N.png", "proxy.csv",
                         "proxy_ratio.csv", "proxy_vs_t.png"})


def test_defaults_measurements_and_claims(defaults):
    lims = {r["setting"]: r for r in defaults["limits"]}
    assert set(lims) == {"squared L2", "pseudo-Huber, paper c = 0.00076", "pseudo-Huber, c = 0.1"}
    for r in lims.values():
        assert r["limit"] > 0 and r["limit_paired"] > 0
    # the exactly quadratic distance is in its regime by definition; the quadratic-regime measure moves towards 1
    assert lims["squared L2"]["quad_ratio_at_N_max"] == 1.0
    for s in ("pseudo-Huber, c = 0.1", "pseudo-Huber, paper c = 0.00076"):
        assert 0 < lims[s]["quad_ratio_at_N_max"] <= 1.05
    # the fitted IC proxy agrees with the exact one at the largest level (a check of the fitting procedure)
    r = max(defaults["ratio"], key=lambda r: r["t"])
    assert r["comparable"] and abs(r["IC_fitted"] / r["IC_exact"] - 1) < 0.25
    claims = defaults["claims"]
    assert len(claims) == 2 * 3 + 2
    for c in claims:
        assert set(c) == {"claim", "paper", "verdict", "measured"} and c["verdict"] in VERDICTS and c["paper"]
    assert not any("grows with t" in c["claim"] for c in claims)
    assert "R~_GC / R~_IC" in claims[-1]["claim"] and claims[-1]["paper"].startswith("Theorem 2")
    assert defaults["model"]["used"] == "default" and defaults["model_quality"]["metric"] == "W2"


def _limits(rel_err_paired=0.0, quad=1.0, min_z=10.0, z_last=10.0):
    return pd.DataFrame([dict(setting="s", limit=1.0, limit_stderr=0.1, limit_paired=1.0, N_max=1280, N_min=10,
                              scaled_gap_at_N_max=1.0 + rel_err_paired, rel_err_at_N_max=rel_err_paired,
                              rel_err_paired_at_N_max=rel_err_paired, rel_err_at_N_min=0.5, gap_min_z=min_z,
                              gap_z_at_N_max=z_last, quad_ratio_at_N_max=quad, trend="N=1280: 1")])


@pytest.mark.parametrize("kw, expected", [
    (dict(), ["holds", "holds"]),
    (dict(rel_err_paired=-0.4), ["holds", "refuted"]),                 # asymptotic and far from the limit
    (dict(rel_err_paired=-0.4, quad=0.57), ["holds", "inconclusive"]),  # pre-asymptotic: never "refuted"
    (dict(min_z=-5, z_last=-5), ["refuted", "holds"]),
    (dict(min_z=1, z_last=1), ["inconclusive", "holds"]),
])
def test_gap_claims_can_come_out_either_way(kw, expected):
    claims = gap.gap_claims(_limits(**kw), rel_tol=0.1)
    assert [c["verdict"] for c in claims] == expected
    if kw.get("quad", 1.0) != 1.0:
        assert "not yet asymptotic at N <= 1280" in claims[1]["measured"]


def _proxy(gc, ot, ic, ts=(1.0, 2.0, 5.0, 10.0), rel_se=0.01, ic_fit=None):
    rows = []
    for k, t in enumerate(ts):
        vals = {("IC", "exact"): ic[k], ("IC", "fitted"): (ic_fit or ic)[k], ("OT", "fitted"): ot[k],
                ("GC", "fitted"): gc[k]}
        rows += [dict(flow=f, method=m, t=t, proxy=v, stderr=rel_se * v) for (f, m), v in vals.items()]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("gc_frac, expected", [
    ((0.6, 0.3, 0.1, 0.05), ["holds", "holds"]),       # ordered; ratio falls and ends well below 1
    ((0.9, 0.9, 0.9, 0.9), ["holds", "refuted"]),      # ratio flat near 1 (only GC < OT < IC: ordering holds)
    ((0.3, 0.35, 0.4, 0.45), ["holds", "refuted"]),    # ratio rises with t
    ((0.3, 0.3, 0.3, 0.3), ["holds", "inconclusive"]),  # flat but below the threshold: no trend either way
    ((0.6, 0.2, 0.2, 0.4), ["holds", "inconclusive"]),  # falls, then rises again: no clear trend
])
def test_proxy_claims_can_come_out_either_way(gc_frac, expected):
    ic = np.array([1.0, 0.5, 0.1, 0.03])
    ot = 0.95 * ic
    gc = np.array(gc_frac) * ot / 0.95 * 0.9
    proxy = _proxy(gc, ot, ic)
    ratio = gap.proxy_ratio(proxy, fit_tol=0.25)
    assert [c["verdict"] for c in gap.proxy_claims(proxy, ratio, ratio_max=0.5)] == expected


def test_proxy_ordering_refuted_and_incomparable_levels_left_out():
    ic = np.array([1.0, 0.5, 0.1, 0.03])
    proxy = _proxy(gc=2 * ic, ot=1.5 * ic, ic=ic, ic_fit=[50.0, 20.0, 0.1, 0.03])
    ratio = gap.proxy_ratio(proxy, fit_tol=0.25)
    assert ratio.comparable.tolist() == [False, False, True, True]
    claims = gap.proxy_claims(proxy, ratio, ratio_max=0.5)
    assert [c["verdict"] for c in claims] == ["refuted", "refuted"]
    assert "left out, fit not comparable: t = 1, 2" in claims[1]["measured"]
    one = gap.proxy_ratio(_proxy(gc=0.1 * ic, ot=0.5 * ic, ic=ic, ic_fit=[9.0, 9.0, 9.0, 0.03]))
    assert gap.proxy_claims(proxy, one)[1]["verdict"] == "inconclusive"  # fewer than 2 comparable levels


@pytest.mark.parametrize("params, message", [
    (dict(dataset="mnist2"), "dataset='mnist2' is not valid"),
    (dict(gc_mu=-0.1), "mu=-0.1 is outside [0, 1]"),
    (dict(T=100.0), "T=100.0 is not valid"),
    (dict(proxy_ts=[0.0, 1.0]), "proxy_ts=[0.0, 1.0] is not valid"),
    (dict(predictor="long_ic"), "predictor='long_ic' is not valid with dataset='8gaussians'"),
    (dict(predictor="best"), "predictor='best' is not valid; allowed values: 'default', 'long_ic'"),
    (dict(ratio_max=1.5), "ratio_max=1.5 is not valid"),
])
def test_bad_parameter_fails_clearly(tmp_path, params, message):
    assert_fails_clearly("ct_cd_gap", tmp_path / "bad.ipynb", message, **params)


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_params_files_validate(variant):
    p = load_params("ct_cd_gap", variant)
    cfg = train_config(p["dataset"], "ic", steps=p["train_steps"], seed=p["seed"], **p["train_overrides"])
    assert cfg.sigma_min < p["T"] <= cfg.sigma_max
    assert all(cfg.sigma_min <= t <= cfg.sigma_max for t in p["proxy_ts"])
    if variant == "gpu":
        assert_paper_scale(cfg)
    else:
        assert cfg.dataset == "digits" and p["predictor"] == "long_ic"
