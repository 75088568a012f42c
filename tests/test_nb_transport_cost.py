"""notebooks/transport_cost.ipynb: papermill smoke runs at the defaults and with ``-p flow gc`` (every claim computed,
costs and bounds sane), the claim functions on synthetic costs giving each verdict (none can only hold), the clear
errors for bad parameters, and the params/ files validate.

Trained models are cached under runs/ by configuration hash (the same configs nbval uses), so reruns are quick.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gclib.experiments import transport_cost as tc
from gclib.experiments.common import VERDICTS, train_config
from nbhelpers import ROOT, assert_fails_clearly, assert_paper_scale, load_params, run_notebook

NB = ROOT / "notebooks" / "transport_cost.ipynb"


def run_nb(tmp_path: Path, **params) -> dict:
    return run_notebook("transport_cost", tmp_path / "out.ipynb",
                        {"metrics.json", "cost_vs_t.csv", "baselines.csv", "cost_vs_t.png"}, **params)


@pytest.fixture(scope="module")
def defaults(tmp_path_factory):
    return run_nb(tmp_path_factory.mktemp("tc"))


def test_defaults_costs_and_claims(defaults):
    m = defaults
    assert m["flow"] == "ic" and m["model"]["used"] == "default" and m["model_quality"]["metric"] == "W2"
    curve = sorted(m["curve"], key=lambda r: r["t"])
    assert curve[0]["t"] == 0.0 and curve[0]["cost"] == pytest.approx(m["ic_cost"])
    assert curve[0]["identity_cost"] == pytest.approx(curve[0]["cost"])
    for r in curve:
        # c(t) is the cost of one coupling of law(x^_t) with N(0, I); its n-sample OT estimate is of the same size
        assert 0 < r["w2sq_noise"] < 1.2 * r["cost"] and r["w2_data"] > 0
    assert m["exact_ot_data_noise"] == pytest.approx(curve[0]["w2sq_noise"])
    assert all(v["ok"] for v in m["sanity"].values())  # minibatch OT <= IC on shared draws (by construction)
    claims = m["claims"]
    assert [c["paper"].split(":")[0] for c in claims] == ["Lemma 1 / Corollary 1", "Corollary 2", "Fig. 3 (CIFAR-10)"]
    for c in claims:
        assert set(c) == {"claim", "paper", "verdict", "measured"} and c["verdict"] in VERDICTS
    assert not any("lower bound" in c["claim"] or "below IC" in c["claim"] for c in claims)


def test_flow_gc_from_project_root(tmp_path):
    m = run_nb(tmp_path, flow="gc")
    assert m["flow"] == "gc" and m["mu"] == 0.5
    assert m["gc_min_cost"] < m["ic_cost"]


def _costs(c_levels: dict, identity: dict, ot=(0.5, 0.5), ot_se=0.01, n=400, sd=0.05, seed=0):
    """Synthetic Costs: per-draw costs with the given means (shared noise across levels: common random numbers)."""
    rng = np.random.default_rng(seed)
    common_noise = rng.standard_normal(n)
    per = {t: v + sd * common_noise + 0.1 * sd * rng.standard_normal(n) for t, v in c_levels.items()}
    ident = {t: v + sd * common_noise for t, v in identity.items()}
    curve = pd.DataFrame([dict(t=t, cost=float(per[t].mean()), stderr=float(per[t].std(ddof=1) / np.sqrt(n)))
                          for t in sorted(per)])
    base = pd.DataFrame([dict(coupling="IC", batch_size=np.nan, cost=float(per[0.0].mean()), stderr=0.01)]
                        + [dict(coupling="minibatch OT", batch_size=b, cost=c, stderr=ot_se)
                           for b, c in zip((64, 256), ot)])
    return tc.Costs(curve, base, per, ident, dict(n=n, ot_n=n))


IDENT = {0.0: 3.0, 0.02: 2.9, 0.05: 2.8, 1.0: 1.0, 2.0: 3.0, 5.0: 30.0}


@pytest.mark.parametrize("levels, ot, expected", [
    ({0.0: 3.0, 0.02: 2.85, 0.05: 2.7, 1.0: 0.9, 2.0: 0.6, 5.0: 0.4}, (0.5, 0.5), ["holds", "holds", "holds"]),
    ({0.0: 3.0, 0.02: 2.95, 0.05: 2.9, 1.0: 0.9, 2.0: 0.6, 5.0: 0.8}, (0.5, 0.5), ["refuted", "refuted", "refuted"]),
    ({0.0: 3.0, 0.02: 2.9, 0.05: 2.8, 1.0: 0.9, 2.0: 0.9, 5.0: 0.5}, (0.5, 0.48), ["inconclusive", "inconclusive",
                                                                                 "inconclusive"]),
])
def test_transport_claims_can_come_out_either_way(levels, ot, expected):
    costs = _costs(levels, IDENT, ot=ot, ot_se=0.05 if expected[2] == "inconclusive" else 0.01)
    claims = tc.transport_claims(costs, "ic", n_near=2, large_t=1.0)
    assert [c["verdict"] for c in claims] == expected


def test_identity_of_the_model_is_not_a_pass():
    """A model that returns its input (c = c_id) cannot pass the near-0 row: the decrease alone is not enough."""
    costs = _costs(IDENT, IDENT)
    costs.per_draw = {t: v.copy() for t, v in costs.identity.items()}
    near = tc.transport_claims(costs, "ic", n_near=2, large_t=1.0)[0]
    assert near["verdict"] == "inconclusive" and "c(0.02) - c(0) = -0.1" in near["measured"]


def test_sanity_check_is_reported_not_claimed():
    s = tc.sanity_checks(_costs(IDENT, IDENT, ot=(4.0, 0.5)))
    assert [v["ok"] for v in s.values()] == [False]


@pytest.mark.parametrize("params, message", [
    (dict(flow="foo"), "flow='foo' is not valid; allowed values: 'ic', 'ot', 'gc'"),
    (dict(mu=1.5), "mu=1.5 is outside [0, 1]"),
    (dict(dataset="cifar100"), "dataset='cifar100' is not valid"),
    (dict(predictor="long_ic"), "predictor='long_ic' is not valid with dataset='8gaussians'"),
    (dict(large_t=50.0), "large_t=50.0 is not valid"),
    (dict(ot_n=4096), "ot_n=4096 is not valid"),
])
def test_bad_parameter_fails_clearly(tmp_path, params, message):
    assert_fails_clearly("transport_cost", tmp_path / "bad.ipynb", message, **params)


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_params_files_validate(variant):
    p = load_params("transport_cost", variant)
    cfg = train_config(p["dataset"], p["flow"], mu=p["mu"], steps=p["train_steps"], seed=p["seed"],
                       **p["train_overrides"])
    assert all(cfg.sigma_min <= t <= cfg.sigma_max for t in p["ts"])
    assert all(2 <= b <= p["n"] for b in p["ot_batch_sizes"]) and p["ot_n"] <= p["n"]
    assert sum(t >= p["large_t"] for t in p["ts"]) >= 2
    if variant == "gpu":
        assert_paper_scale(cfg)
    else:
        assert cfg.dataset == "digits" and p["predictor"] == "long_ic"
