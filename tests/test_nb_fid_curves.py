"""notebooks/fid_curves.ipynb (Figs. 4-5, Table 1): sweep construction and tables, a small papermill smoke run,
clear errors, and the params/ files validate (the gpu set without running it)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from gclib.config import load_config
from gclib.experiments.fid_curves import final_table, mu_label, sweep_runs
from nbhelpers import ROOT, assert_fails_clearly, load_params, run_notebook

NB = ROOT / "notebooks" / "fid_curves.ipynb"


def test_sweep_runs_cover_flows_mus_and_frozen():
    runs = sweep_runs([0, 1], mus=[0.3, 1.0], include_ot=True, frozen_mu=0.5,
                      frozen_checkpoints={"strong": "a.pt"}, per_flow={"gc": {"dropout": 0.0}})
    labels = sorted({r.label for r in runs})
    assert labels == sorted(["IC", "GC mu=0.3", "GC mu=1", "OT", "GC frozen strong"])
    assert len(runs) == 2 * 5
    by = {(r.label, r.seed): r.overrides for r in runs}
    assert by[("IC", 0)] == {"flow": "ic"}
    assert by[("GC mu=0.3", 1)] == {"flow": "gc", "mu": 0.3, "predictor": "ema", "dropout": 0.0}
    assert by[("GC frozen strong", 0)] == {"flow": "gc", "mu": 0.5, "predictor": "a.pt", "dropout": 0.0}
    assert mu_label(0) == "IC"
    with pytest.raises(ValueError, match="mu=1.5 is outside"):
        sweep_runs([0], mus=[1.5])
    with pytest.raises(ValueError, match="flow='gcc'"):
        sweep_runs([0], per_flow={"gcc": {}})


def test_final_table_takes_last_step_mean_and_sd():
    curves = pd.DataFrame({"label": ["A"] * 4 + ["B"] * 2, "seed": [0, 0, 1, 1, 0, 0],
                           "step": [10, 20, 10, 20, 10, 20], "w2": [9.0, 1.0, 9.0, 3.0, 5.0, 4.0]})
    t = final_table(curves, "w2", ["B", "A"]).set_index("label")
    assert list(t.index) == ["B", "A"]
    assert t.loc["A", "mean"] == 2.0 and math.isclose(t.loc["A", "std"], math.sqrt(2.0))
    assert t.loc["B", "mean"] == 4.0 and t.loc["A", "seeds"] == 2


def test_small_sweep_runs_end_to_end(tmp_path):
    m = run_notebook("fid_curves", tmp_path / "out.ipynb",
                     {"metrics.json", "curves.csv", "final.csv", "sweep.png", "frozen.png"},
                     seeds=[0, 1], mus=[1.0], frozen={"weak": 20},
                     overrides={"dataset": "8gaussians", "total_steps": 40, "eval_every": 20, "eval_n": 200,
                                "eval_metrics": ["w2"], "lr": 1e-3, "checkpoint_every": 0, "s1": 20})
    assert set(m["final"]) == {"IC", "OT", "GC mu=1", "GC frozen weak"}
    assert all(v["mean"] > 0 and math.isfinite(v["std"]) for v in m["final"].values())
    assert {c["claim"] for c in m["claims"]} >= {"OT ends below IC", "pure GC (mu = 1) improves fastest, then degrades"}


@pytest.mark.parametrize("params, message", [
    (dict(mus=[0.5, 2.0]), "mu=2.0 is outside [0, 1]"),
    (dict(metric="is"), "metric='is' is not valid"),
    (dict(overrides={"flowz": "ic"}), "flowz"),
])
def test_bad_parameters_fail_clearly(tmp_path, params, message):
    assert_fails_clearly("fid_curves", tmp_path / "bad.ipynb", message, **params)


@pytest.mark.parametrize("variant", ["cpu", "cpu_digits", "gpu"])
def test_params_files_validate(variant):
    p = load_params("fid_curves", variant)
    cfg = load_config(ROOT / p["base_config"], p["overrides"])
    for run in sweep_runs(p["seeds"], p["mus"], p["include_ot"], p.get("frozen_mu", 0.5),
                          {k: "x.pt" for k in p.get("frozen", {})}, p.get("per_flow")):
        cfg.replace(**run.overrides, seed=run.seed)  # every run's configuration validates
    assert len(p["seeds"]) >= 3
    if variant == "gpu":
        assert cfg.dataset == "cifar10" and cfg.model == "unet_cifar10" and cfg.batch_size == 512
        assert cfg.total_steps == 100_000 and p["metric"] == "fid"
