"""notebooks/fid_curves.ipynb (Figs. 4-5, Table 1): sweep construction and tables, a small papermill smoke run,
clear errors, and the params/ files validate (the gpu set without running it)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from gclib.config import load_config
from gclib.experiments.fid_curves import final_table, make_sweep, mu_label, sweep_claims, sweep_runs
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
                     {"metrics.json", "curves.csv", "final.csv", "sweep.png", "sweep.pdf", "frozen.png", "samples.png"},
                     seeds=[0, 1], mus=[1.0], frozen={"weak": 20, "strong": 40}, workers=2,
                     overrides={"dataset": "8gaussians", "total_steps": 40, "eval_every": 10, "eval_n": 200,
                                "eval_metrics": ["w2"], "lr": 1e-3, "checkpoint_every": 20, "s1": 20})
    assert set(m["final"]) == {"IC", "OT", "GC mu=1", "GC frozen weak", "GC frozen strong"}
    assert all(v["mean"] > 0 and math.isfinite(v["std"]) for v in m["final"].values())
    texts = [c["claim"] for c in m["claims"]]
    for want in ("GC mu=1 ends below IC", "OT ends below IC", "GC mu=1 converges faster than IC",
                 "pure GC (mu = 1) improves fastest, then degrades",
                 "a strong frozen predictor helps more than a weak one, and beats IC"):
        assert any(t.startswith(want) for t in texts), (want, texts)
    assert all(c["verdict"] in ("holds", "refuted", "inconclusive") and "t-interval" in c["measured"]
               for c in m["claims"])


def synthetic_curves(gc_shift: float, ot_shift: float = 0.0, seeds=(0, 1, 2)):
    rows = []
    for seed in seeds:
        base = 3.0 + seed  # seed effects larger than the flow effects: only pairing sees them
        for label, shift in (("IC", 0.0), ("GC mu=0.5", gc_shift), ("OT", ot_shift)):
            for k, step in enumerate((100, 200, 300, 400)):
                rows.append({"label": label, "seed": seed, "step": step,
                             "w2": base / (k + 1) + shift * (1 + 0.01 * seed)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("gc_shift, verdict", [(-0.2, "holds"), (0.2, "refuted")])
def test_sweep_claims_can_come_out_either_way(gc_shift, verdict):
    sw = make_sweep("test_synthetic", "params/train/toy.yaml", {}, "w2", [0, 1, 2], [0.5])
    rows = {c["claim"].split(" (")[0]: c["verdict"] for c in sweep_claims(sw, synthetic_curves(gc_shift))}
    assert rows["GC mu=0.5 ends below IC"] == verdict
    assert rows["GC mu=0.5 converges faster than IC"] == verdict
    assert rows["OT ends below IC"] == "inconclusive"  # OT identical to IC: the interval straddles 0


@pytest.mark.parametrize("params, message", [
    (dict(mus=[0.5, 2.0]), "mu=2.0 is outside [0, 1]"),
    (dict(metric="is"), "metric='is' is not valid"),
    (dict(overrides={"flowz": "ic"}), "flowz"),
    (dict(frozen={"weak": 7}), "multiple of checkpoint_every"),
    (dict(workers=0), "workers=0 is not valid"),
])
def test_bad_parameters_fail_clearly(tmp_path, params, message):
    assert_fails_clearly("fid_curves", tmp_path / "bad.ipynb", message, **params)


@pytest.mark.parametrize("variant", ["cpu", "cpu_digits", "cpu_long", "cpu_long_mu", "cpu_long_toy", "gpu",
                                     "gpu_imagenet32", "gpu_celeba64", "gpu_lsun_church64"])
def test_params_files_validate(variant):
    p = load_params("fid_curves", variant)
    sw = make_sweep("test_validate", p["base_config"], p["overrides"], p["metric"], p["seeds"], p["mus"],
                    p["include_ot"], p.get("frozen"), p.get("frozen_mu", 0.5), p.get("frozen_seed", 0),
                    p.get("per_flow"), p.get("fid"), p.get("workers", 1))
    cfg = load_config(ROOT / p["base_config"], p["overrides"])
    for run in sw.runs():
        cfg.replace(**run.overrides, seed=run.seed)  # every run's configuration validates
    evals = cfg.total_steps // cfg.eval_every if cfg.eval_every else 1
    if variant in ("cpu_long", "cpu_long_mu"):
        assert cfg.total_steps * cfg.batch_size >= 250_000 and evals >= 8
        assert cfg.eval_every <= cfg.total_steps // 8  # the first evaluation at most 1/8 of the way in
        assert len(p["seeds"]) >= (2 if variant == "cpu_long_mu" else 3)
    if variant == "cpu_long_toy":  # the authors' toy settings, 5 seeds, W2^2 on 4096 samples
        assert (cfg.dataset, cfg.num_data, cfg.sigma_min, cfg.ema_every, cfg.lr, cfg.batch_size, cfg.total_steps) == \
            ("two_gaussians", 10_000, 0.001, 2, 5e-5, 256, 10_000)
        assert len(p["seeds"]) >= 5 and cfg.eval_n >= 4096 and p["metric"] == "w2sq"
    if variant in ("cpu_long", "cpu_long_mu"):
        assert cfg.eval_n >= 2000 and p["metric"] == "fd_digits" and cfg.dataset == "digits"
    if variant == "cpu_long_mu":  # reuses cpu_long's runs: identical settings
        assert p["overrides"] == load_params("fid_curves", "cpu_long")["overrides"]
    if variant == "gpu":
        assert cfg.dataset == "cifar10" and cfg.model == "unet_cifar10" and cfg.batch_size == 512
        assert cfg.total_steps == 100_000 and p["metric"] == "fid"
    elif variant.startswith("gpu_"):
        assert cfg.dataset == variant[4:] and p["metric"] == "fid" and cfg.total_steps == 100_000
    else:
        assert len(p["seeds"]) >= 3 or variant == "cpu_long_mu"


def test_setup_takes_one_checked_mapping():
    """The notebook's setup(p) checks the declared value rules, then builds the same Sweep as make_sweep."""
    from gclib.experiments import fid_curves
    from gclib.experiments.params import notebook_parameters
    declared = notebook_parameters("fid_curves")
    assert set(fid_curves.RULES) <= set(declared)
    with pytest.raises(ValueError, match=r"^fid_curves: seeds=\[0, 0\] is not valid"):
        fid_curves.setup({**declared, "seeds": [0, 0]})
    a = fid_curves.setup({**declared, "variant": "test_synthetic"})
    b = make_sweep("test_synthetic", declared["base_config"], declared["overrides"], declared["metric"],
                   declared["seeds"], declared["mus"])
    from gclib.experiments.fid_curves import run_config
    assert [run_config(a.base, r) for r in a.runs()] == [run_config(b.base, r) for r in b.runs()]
