"""notebooks/toy_flows.ipynb (Fig. 1): a papermill smoke run at the defaults (every claim computed, with a verdict
from its interval), the claim function on synthetic alignments giving each verdict, and the clear errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gclib.experiments import toy_flows as tf
from gclib.experiments.common import VERDICTS
from nbhelpers import ROOT, assert_fails_clearly, load_params, run_notebook

NB = ROOT / "notebooks" / "toy_flows.ipynb"


def test_defaults_compute_every_claim(tmp_path):
    m = run_notebook("toy_flows", tmp_path / "out.ipynb", {"metrics.json", "alignment.csv", "paths.png", "alignment.png"})
    assert set(m["mean_cos"]) == {"ic", "ot", "gc"}
    assert all(-1 <= v <= 1 for v in m["mean_cos"].values()) and all(v >= 0 for v in m["mean_dev"].values())
    assert [c["claim"].split(" better than ")[1][:2] for c in m["claims"]] == ["IC", "mi"]
    for c in m["claims"]:
        assert set(c) == {"claim", "paper", "verdict", "measured"}
        assert c["verdict"] in VERDICTS and c["paper"].startswith("Fig. 1")
        assert "paired seeds" in c["measured"]
    assert len({r["seed"] for r in m["per_seed"]}) == 5


def _align(cos: dict, dev: dict, seeds=(0, 1, 2, 3), noise=1e-3):
    """A synthetic alignment table: per flow a constant cos and dev, plus a small per-seed jitter."""
    rng = np.random.default_rng(0)
    rows = []
    for s in seeds:
        for f in cos:
            for t in (0.1, 1.0):
                rows.append(dict(seed=s, flow=f, t=t, cos=cos[f] + noise * rng.standard_normal(), cos_se=0.0,
                                 dev=dev[f] + noise * rng.standard_normal(), dev_se=0.0))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("gc, expected", [((0.99, 0.01), "holds"), ((0.80, 0.50), "refuted"),
                                          ((0.99, 0.50), "refuted"), ((0.90, 0.10), "inconclusive")])
def test_alignment_claims_can_come_out_either_way(gc, expected):
    al = _align({"ic": 0.90, "ot": 0.90, "gc": gc[0]}, {"ic": 0.10, "ot": 0.10, "gc": gc[1]})
    claims = tf.alignment_claims(al)
    assert [c["verdict"] for c in claims] == [expected, expected]


def test_one_seed_is_inconclusive():
    al = _align({"ic": 0.9, "gc": 0.99}, {"ic": 0.1, "gc": 0.01}, seeds=(0,))
    assert [c["verdict"] for c in tf.alignment_claims(al)] == ["inconclusive"]


def test_bad_flow_fails_clearly(tmp_path):
    assert_fails_clearly("toy_flows", tmp_path / "bad.ipynb", "flow='cd' is not valid; allowed values: 'ic', 'ot', 'gc'",
                         flows=["ic", "cd"])


def test_bad_seeds_fail_clearly():
    with pytest.raises(ValueError, match=r"seeds=\[\] is not valid"):
        tf.setup("_never", [], 10, 1, 2.0, 3.0, 4, 8, ["ic"])


def test_cpu_params_are_notebook_parameters():
    load_params("toy_flows", "cpu")
