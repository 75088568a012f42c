"""notebooks/transport_cost.ipynb: papermill smoke runs at the defaults (the paper's orderings that hold there),
``-p flow gc`` from the project root, the clear error for a bad flow/mu, and the params/ files validate.

Trained models are cached under runs/ by configuration hash (the same configs nbval uses), so reruns are quick.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from gclib.experiments.common import train_config  # noqa: E402
from nbhelpers import ROOT, assert_fails_clearly, assert_paper_scale, load_params, run_notebook  # noqa: E402

NB = ROOT / "notebooks" / "transport_cost.ipynb"


def run_nb(tmp_path: Path, **params) -> dict:
    return run_notebook("transport_cost", tmp_path / "out.ipynb",
                        {"metrics.json", "cost_vs_t.csv", "baselines.csv", "cost_vs_t.png"}, **params)


@pytest.fixture(scope="module")
def defaults(tmp_path_factory):
    return run_nb(tmp_path_factory.mktemp("tc"))


def claim(metrics, start):
    return next(c for c in metrics["claims"] if c["claim"].startswith(start))


def test_defaults_orderings(defaults):
    m = defaults
    ic, gc, ex = m["ic_cost"], m["gc_min_cost"], m["exact_ot_cost"]
    ot = {int(b): c for b, c in m["minibatch_ot_costs"].items()}
    assert m["flow"] == "ic"
    # OT's cost below IC's (by far on the toy), exact OT below every minibatch OT (shared draws: always)
    assert all(c < 0.9 * ic for c in ot.values())
    assert all(ex <= c + 1e-9 for c in ot.values()) and ex <= ic
    # GC's cost below IC's, and below minibatch OT's at the smallest batch (at B >= 256 minibatch OT is near exact
    # in 2-D and GC does not beat it at the default sizes: not asserted, reported in metrics.json)
    assert gc < 0.5 * ic
    assert gc < 0.97 * ot[min(ot)]
    # c decreases near 0
    curve = sorted(m["curve"], key=lambda r: r["t"])
    assert curve[0]["cost"] > curve[1]["cost"] > curve[2]["cost"]
    assert claim(m, "The GC transport cost c(t) decreases")["holds"]
    assert claim(m, "Minibatch OT's cost is below IC's")["holds"]
    assert all(set(c) == {"claim", "holds", "measured"} for c in m["claims"])


def test_flow_gc_from_project_root(tmp_path):
    m = run_nb(tmp_path, flow="gc")
    assert m["flow"] == "gc" and m["mu"] == 0.5
    assert m["gc_min_cost"] < m["ic_cost"]


@pytest.mark.parametrize("params, message", [
    (dict(flow="foo"), "flow='foo' is not valid; allowed values: 'ic', 'ot', 'gc'"),
    (dict(mu=1.5), "mu=1.5 is outside [0, 1]"),
    (dict(dataset="cifar100"), "dataset='cifar100' is not valid"),
])
def test_bad_parameter_fails_clearly(tmp_path, params, message):
    assert_fails_clearly("transport_cost", tmp_path / "bad.ipynb", message, **params)


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_params_files_validate(variant):
    p = load_params("transport_cost", variant)
    cfg = train_config(p["dataset"], p["flow"], mu=p["mu"], steps=p["train_steps"], seed=p["seed"],
                       **p["train_overrides"])
    assert all(cfg.sigma_min <= t <= cfg.sigma_max for t in p["ts"])
    assert all(2 <= b <= p["n"] for b in p["ot_batch_sizes"])
    if variant == "gpu":
        assert_paper_scale(cfg)
    else:
        assert cfg.dataset == "digits"
