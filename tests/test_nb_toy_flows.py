"""notebooks/toy_flows.ipynb (Fig. 1, Eq. 16): a papermill smoke run at the defaults (every row on the trained and
the exact predictor, no control passes), the claim function on synthetic alignments giving each verdict, and the
clear errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gclib.experiments import toy_flows as tf
from gclib.experiments.common import VERDICTS
from nbhelpers import ROOT, assert_fails_clearly, load_params, run_notebook


def test_defaults_compute_every_row(tmp_path):
    m = run_notebook("toy_flows", tmp_path / "out.ipynb", {"metrics.json", "alignment.csv", "eq16.csv", "paths.png",
                                                           "alignment.png"})
    flows = set(m["mean_cos"])
    assert {"IC", "OT B=8", "OT B=32", "OT B=256", "GC ideal", "GC trained", "GC collapsed"} <= flows
    assert len(m["claims"]) == 3
    for c in m["claims"]:
        assert c["verdict"] in VERDICTS and c["control_verdict"] != "holds", c
        assert "trained" in c["measured"] and "ideal" in c["measured"]
    assert m["claims"][0]["paper"].startswith("Fig. 1 caption")


def _align(cos: dict, dev: dict, seeds=(0, 1, 2, 3), noise=1e-3):
    rng = np.random.default_rng(0)
    rows = []
    for s in seeds:
        for f in cos:
            for t in (0.1, 1.0):
                rows.append(dict(seed=s, flow=f, t=t, cos=cos[f] + noise * rng.standard_normal(), cos_se=0.0,
                                 dev=dev[f] + noise * rng.standard_normal(), dev_se=0.0))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("gc, expected", [((0.99, 0.01), "holds"), ((0.80, 0.50), "refuted"),
                                          ((0.90, 0.10), "inconclusive")])
def test_alignment_claims_can_come_out_either_way(gc, expected):
    cos = {"IC": 0.90, "OT B=8": 0.90, "GC trained": gc[0], "GC ideal": gc[0], "GC collapsed": 0.2}
    dev = {"IC": 0.10, "OT B=8": 0.10, "GC trained": gc[1], "GC ideal": gc[1], "GC collapsed": 90.0}
    claims = tf.alignment_claims(_align(cos, dev))
    assert [c["verdict"] for c in claims] == [expected, expected]
    assert all(c["control_verdict"] == "refuted" for c in claims)


def test_eq16_row_rejects_a_collapsed_predictor():
    rows = []
    for s in range(5):
        for label, shift, end in (("trained", 0.3, 0.01), ("ideal", 0.3, 0.0), ("collapsed", 0.3, 0.4)):
            for t in (0.2, 1.0):
                e = 0.01 * np.sin(s + t)
                rows.append(dict(seed=s, predictor=label, t=t, w2_gc=0.2 + shift + e, w2_floor=0.2 + e,
                                 end_gc=0.1 + end + e, end_floor=0.1 + e))
    eq = pd.DataFrame(rows)
    al = _align({"IC": 0.9, "GC trained": 0.99, "GC ideal": 0.99, "GC collapsed": 0.2},
                {"IC": 0.1, "GC trained": 0.01, "GC ideal": 0.01, "GC collapsed": 90.0})
    c = tf.alignment_claims(al, eq, endpoint_tol=0.05)[-1]
    assert "Eq. 16" in c["claim"] and c["verdict"] == "holds" and c["control_verdict"] == "refuted"


def test_bad_flow_params_fail_clearly(tmp_path):
    assert_fails_clearly("toy_flows", tmp_path / "bad.ipynb", "ot_batches=[1] is not valid", ot_batches=[1])


def test_bad_seeds_fail_clearly():
    """setup takes the one mapping check_params returns; every rule names a declared parameter."""
    from gclib.experiments.params import notebook_parameters
    declared = notebook_parameters("toy_flows")
    assert set(tf.RULES) <= set(declared)
    with pytest.raises(ValueError, match=r"^toy_flows: seeds=\[\] is not valid"):
        tf.setup({**declared, "seeds": []})
    with pytest.raises(ValueError, match=r"^toy_flows: seeds=\[1, 1\] is not valid"):
        tf.setup({**declared, "seeds": [1, 1]})
    with pytest.raises(ValueError, match=r"^toy_flows: t_max=0.01 is not valid"):
        tf.setup({**declared, "t_max": 0.01})


def test_cpu_params_are_notebook_parameters():
    load_params("toy_flows", "cpu")
