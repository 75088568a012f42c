"""notebooks/transport_cost.ipynb: papermill smoke runs at the defaults and with ``-p flow gc`` (every row measured
on the trained predictor, the exact flow and its controls; no control passes its row), the claim functions on
synthetic costs giving each verdict, the clear errors for bad parameters, and the params/ files validate."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gclib.experiments import transport_cost as tc
from gclib.experiments.common import VERDICTS, train_config
from nbhelpers import ROOT, assert_fails_clearly, assert_paper_scale, load_params, run_notebook


def run_nb(tmp_path: Path, **params) -> dict:
    return run_notebook("transport_cost", tmp_path / "out.ipynb",
                        {"metrics.json", "cost_vs_t.csv", "baselines.csv", "cost_vs_t.png"}, **params)


@pytest.fixture(scope="module")
def defaults(tmp_path_factory):
    return run_nb(tmp_path_factory.mktemp("tc"))


def test_defaults_rows_and_controls(defaults):
    m = defaults
    curve = pd.DataFrame(m["curve"])
    assert set(curve.predictor) == {"trained", "ideal", "collapsed", "untrained", "identity", "shrunk 0.5",
                                    "shrunk 0.7", "Gaussian fit"}
    ic = curve[curve.t == 0.0]
    assert np.allclose(ic.cost, m["ic_cost"])  # every predictor starts from the IC cost on the same draws
    claims = m["claims"]
    assert [c["paper"].split(" ")[0] for c in claims] == ["Corollary", "Abstract", "Minibatch"]
    for c in claims:
        assert set(c) >= {"claim", "paper", "verdict", "measured", "control", "control_verdict", "unrejected"}
        assert c["verdict"] in VERDICTS and c["control_verdict"] != "holds", c
        assert c["verdict"] != "holds" or c["unrejected"] == []
    assert m["guard"]["metric"] == "W2" and m["guard"]["floor"] < m["guard"]["limit"] < m["guard"]["yardstick"]
    cont = pd.DataFrame(m["continuous"])   # Corollary 1's ideal: the 8gaussians mixture, measured and closed form
    assert (abs(cont.cost - cont.closed_form) < 5 * cont.stderr).all()
    assert not any("Lemma 1" in c["claim"] or "identity map's cost" in c["claim"] for c in claims)


def test_flow_gc_from_project_root(tmp_path):
    m = run_nb(tmp_path, flow="gc")
    assert m["flow"] == "gc" and m["mu"] == 0.5 and all(c["control_verdict"] != "holds" for c in m["claims"])


def _costs(levels: dict, labels=("trained", "ideal", "collapsed", "Gaussian fit"), ot=(5.0, 4.0), ot_se=0.01,
           n=400, sd=0.05, guard=None):
    """Synthetic Costs: per-draw costs around ``levels`` (a shared draw effect, so paired differences are precise),
    the guard metric at t_max (floor 1, the Gaussian fit's 100: limit 10)."""
    rng = np.random.default_rng(0)
    common = rng.standard_normal(n)
    per, rows = {}, []
    guard = {"trained": 2.0, "ideal": 1.0, "collapsed": 300.0, "Gaussian fit": 100.0, **(guard or {})}
    for label in labels:
        lv = levels.get(label, levels["ideal"])
        per[label] = {}
        for t, v in lv.items():
            per[label][t] = v + sd * common + (0.1 * sd * rng.standard_normal(n) if v != lv.get(0.002) else 0)
            rows.append(dict(predictor=label, t=t, cost=float(per[label][t].mean()),
                             stderr=float(per[label][t].std(ddof=1) / np.sqrt(n)),
                             guard=guard[label] if t == max(lv) else np.nan, w2sq_noise=np.nan))
    base = [dict(coupling="IC", batch_size=np.nan, cost=10.0, stderr=0.1)]
    for b, c in zip((64, 256), ot):
        base += [dict(coupling="minibatch OT", batch_size=b, cost=c, stderr=ot_se),
                 dict(coupling="unmatched batches", batch_size=b, cost=10.0, stderr=0.1)]
    return tc.Costs(pd.DataFrame(rows), pd.DataFrame(base), per, dict(n=n, ot_n=n, metric="w2", guard_floor=1.0))


def _cont(decrease=True):
    rng = np.random.default_rng(1)
    base = 2.0 + 0.5 * rng.standard_normal(500)
    per = {0.002: base, 0.02: base - (0.03 if decrease else 0.0) + 1e-3 * rng.standard_normal(500),
           0.05: base - (0.04 if decrease else -0.01) + 1e-3 * rng.standard_normal(500)}
    df = pd.DataFrame([dict(t=t, cost=v.mean(), stderr=v.std() / np.sqrt(500), closed_form=v.mean()) for t, v in per.items()])
    df.attrs["per_draw"] = per
    return df


LEVELS = {"trained": {0.0: 10.0, 0.002: 10.0, 0.02: 9.5, 0.05: 9.0, 80.0: 3.0},
          "ideal": {0.0: 10.0, 0.002: 10.0, 0.02: 9.7, 0.05: 9.2, 80.0: 3.5},
          "collapsed": {0.0: 10.0, 0.002: 2.0, 0.02: 2.0, 0.05: 2.0, 80.0: 2.0},
          "Gaussian fit": {0.0: 10.0, 0.002: 10.0, 0.02: 9.0, 0.05: 8.0, 80.0: 2.5}}


def test_transport_claims_hold_and_controls_fail():
    claims = tc.transport_claims(_costs(LEVELS), _cont())
    assert [c["verdict"] for c in claims] == ["holds", "holds", "holds"]
    assert [c["control_verdict"] for c in claims] == ["refuted", "refuted", "refuted"]   # flat c, guard, equal costs
    assert tc.transport_claims(_costs(LEVELS), None)[0]["verdict"] == "inconclusive"   # no continuous reference


def test_transport_claims_can_fail():
    bad = {k: dict(v) for k, v in LEVELS.items()}
    bad["ideal"][80.0] = 6.0            # the exact flow above OT: the row cannot hold
    bad["trained"][0.02] = 10.5          # cost rises near 0
    claims = tc.transport_claims(_costs(bad, guard={"trained": 20.0}), _cont(decrease=False))
    assert [c["verdict"] for c in claims[:2]] == ["refuted", "refuted"]
    assert "guard refuted" in claims[1]["measured"].split(" / ")[0]   # the trained outputs fail the guard
    # a control that passes the guard and beats OT is not rejected: the row is capped
    weak = tc.transport_claims(_costs(LEVELS, guard={"collapsed": 2.0}), _cont())
    assert weak[1]["verdict"] == "inconclusive" and weak[1]["unrejected"] == ["collapsed"]


@pytest.mark.parametrize("params, message", [
    (dict(flow="foo"), "flow='foo' is not valid; allowed values: 'ic', 'ot', 'gc'"),
    (dict(mu=1.5), "mu=1.5 is outside [0, 1]"),
    (dict(dataset="cifar100"), "dataset='cifar100' is not valid"),
    (dict(ot_n=4096), "ot_n=4096 is not valid"),
    (dict(lemma_n=4096), "lemma_n"),   # Lemma 1 is a formula test now, not a parameter of the notebook
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
    assert "predictor" not in p
    if variant == "gpu":
        assert_paper_scale(cfg)
    else:
        assert cfg.dataset == "digits" and cfg.total_steps <= 1500 and p["ot_batch_sizes"] == [64, 256, 1024]


def test_setup_takes_one_checked_mapping():
    """setup takes the one mapping check_params returns; every rule names a declared parameter, and a bad value
    is named in one line before any work."""
    from gclib.experiments.params import notebook_parameters
    declared = notebook_parameters("transport_cost")
    assert set(tc.RULES) <= set(declared)
    with pytest.raises(ValueError, match=r"^transport_cost: ot_batch_sizes=\[1\] is not valid"):
        tc.setup({**declared, "ot_batch_sizes": [1]})
    with pytest.raises(ValueError, match=r"^transport_cost: n_near=99 is not valid"):
        tc.setup({**declared, "n_near": 99})
