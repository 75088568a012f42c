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
                        {"metrics.json", "cost_vs_t.csv", "baselines.csv", "lemma1.csv", "cost_vs_t.png"}, **params)


@pytest.fixture(scope="module")
def defaults(tmp_path_factory):
    return run_nb(tmp_path_factory.mktemp("tc"))


def test_defaults_rows_and_controls(defaults):
    m = defaults
    curve = pd.DataFrame(m["curve"])
    assert set(curve.predictor) == {"trained", "ideal", "collapsed", "untrained", "identity"}
    ic = curve[curve.t == 0.0]
    assert np.allclose(ic.cost, m["ic_cost"])  # every predictor starts from the IC cost on the same draws
    claims = m["claims"]
    assert [c["paper"].split(" ")[0] for c in claims] == ["Lemma", "Corollary", "Abstract", "Minibatch"]
    for c in claims:
        assert set(c) >= {"claim", "paper", "verdict", "measured", "control", "control_verdict"}
        assert c["verdict"] in VERDICTS and c["control_verdict"] != "holds", c
    lem = pd.DataFrame(m["lemma1"])
    assert (lem.rel_formula.abs() < 0.05).all()  # the formula is the derivative (exact chain rule)
    assert not any("identity map's cost" in c["claim"] or "t >= " in c["claim"] for c in claims)


def test_flow_gc_from_project_root(tmp_path):
    m = run_nb(tmp_path, flow="gc")
    assert m["flow"] == "gc" and m["mu"] == 0.5 and all(c["control_verdict"] != "holds" for c in m["claims"])


def _costs(levels: dict, labels=("trained", "ideal", "collapsed"), ot=(5.0, 4.0), ot_se=0.01, n=400, sd=0.05,
           w2=None):
    rng = np.random.default_rng(0)
    common = rng.standard_normal(n)
    per, rows = {}, []
    for label in labels:
        per[label] = {}
        for t, v in levels[label].items():
            per[label][t] = v + sd * common + (0.1 * sd * rng.standard_normal(n) if v != levels[label].get(0.002) else 0)
            rows.append(dict(predictor=label, t=t, cost=float(per[label][t].mean()),
                             stderr=float(per[label][t].std(ddof=1) / np.sqrt(n)),
                             w2_data=(w2 or {}).get(label, 1.0) if t > 0 else np.nan, w2sq_noise=np.nan))
    base = [dict(coupling="IC", batch_size=np.nan, cost=10.0, stderr=0.1)]
    for b, c in zip((64, 256), ot):
        base += [dict(coupling="minibatch OT", batch_size=b, cost=c, stderr=ot_se),
                 dict(coupling="unmatched batches", batch_size=b, cost=10.0, stderr=0.1)]
    return tc.Costs(pd.DataFrame(rows), pd.DataFrame(base), per, dict(n=n, ot_n=n, w2_floor=1.0))


def _lem(rel=0.0):
    rows = []
    for label in ("trained", "ideal"):
        for t in (0.05, 5.0):
            rows.append(dict(predictor=label, t=t, rel_formula=rel, rel_formula_lo=rel - 0.01,
                             rel_formula_hi=rel + 0.01, rel_shortcut=0.5, rel_shortcut_lo=0.4, rel_shortcut_hi=0.6))
    return pd.DataFrame(rows)


LEVELS = {"trained": {0.0: 10.0, 0.002: 10.0, 0.02: 9.5, 0.05: 9.0, 80.0: 3.0},
          "ideal": {0.0: 10.0, 0.002: 10.0, 0.02: 9.7, 0.05: 9.2, 80.0: 3.5},
          "collapsed": {0.0: 10.0, 0.002: 2.0, 0.02: 2.0, 0.05: 2.0, 80.0: 2.0}}


def test_transport_claims_hold_and_controls_fail():
    claims = tc.transport_claims(_costs(LEVELS, w2={"trained": 1.2, "ideal": 1.0, "collapsed": 3.0}), _lem())
    assert [c["verdict"] for c in claims] == ["holds", "holds", "holds", "holds"]
    assert [c["control_verdict"] for c in claims] == ["refuted", "inconclusive", "refuted", "inconclusive"]


def test_transport_claims_can_fail():
    bad = {k: dict(v) for k, v in LEVELS.items()}
    bad["ideal"][80.0] = 6.0            # the exact flow above OT: the row cannot hold
    bad["trained"][0.02] = 10.5          # cost rises near 0
    claims = tc.transport_claims(_costs(bad, w2={"trained": 2.5, "ideal": 1.0, "collapsed": 3.0}), _lem(rel=0.3))
    assert [c["verdict"] for c in claims[:3]] == ["refuted", "refuted", "refuted"]


@pytest.mark.parametrize("params, message", [
    (dict(flow="foo"), "flow='foo' is not valid; allowed values: 'ic', 'ot', 'gc'"),
    (dict(mu=1.5), "mu=1.5 is outside [0, 1]"),
    (dict(dataset="cifar100"), "dataset='cifar100' is not valid"),
    (dict(ot_n=4096), "ot_n=4096 is not valid"),
    (dict(lemma_n=4096), "lemma_n=4096 is not valid"),
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
