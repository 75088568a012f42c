"""Pre-registered endpoints of the long digits profiles (gclib.experiments.fid_curves): the endpoints computed
by hand on synthetic curves, verdicts that can come out every way (a real effect holds, no effect is not "holds",
a reversed effect is refuted), the power formula against a simulation of the verdict itself, the final
evaluation on a tiny run, and the committed profiles: endpoints named, seeds as planned, power text from the code."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from gclib.experiments.common import detectable_effect, paired_power, paired_verdict
from gclib.experiments.fid_curves import (Run, Sweep, endpoint, evaluate_final, final_evaluation, make_sweep,
                                          preregistered_claims, sweep_from_params)
from nbhelpers import ROOT

PRE = {"primary": [{"endpoint": "final", "a": "GC mu=0.5", "b": "IC"},
                   {"endpoint": "final", "a": "GC mu=0.5", "b": "OT"}],
       "secondary": [{"endpoint": "mean_log", "a": "GC mu=0.5", "b": "IC"},
                     {"endpoint": "steps_to_reach", "a": "GC mu=0.5", "b": "IC"}],
       "censoring": "never reached ranks last; paired sign test"}


def sweep(tmp_path, pre=PRE, seeds=range(8)) -> Sweep:
    return Sweep(base={"total_steps": 400, "eval_every": 100, "dataset": "digits"}, metric="fd_digits",
                 seeds=list(seeds), mus=[0.5], include_ot=True, frozen={}, frozen_mu=0.5, frozen_seed=0, workers=1,
                 out=tmp_path, preregistration=pre)


def curves(gc_factor: float, seeds=range(8), noise: float = 0.03, rng_seed: int = 0) -> pd.DataFrame:
    """IC's curve 100/step^0.5-like, OT = IC, GC = IC * gc_factor, each with multiplicative per-seed noise."""
    g = np.random.default_rng(rng_seed)
    rows = []
    for s in seeds:
        for label, f in (("IC", 1.0), ("OT", 1.0), ("GC mu=0.5", gc_factor)):
            for step in (100, 200, 300, 400):
                rows.append({"label": label, "seed": s, "step": step,
                             "fd_digits": 100 * f / math.sqrt(step / 100) * math.exp(noise * g.standard_normal())})
    return pd.DataFrame(rows)


def test_endpoints_by_hand(tmp_path):
    sw, c = sweep(tmp_path), curves(0.8, seeds=[0, 1])
    g = c[(c.label == "GC mu=0.5") & (c.seed == 1)].sort_values("step").fd_digits.to_numpy()
    assert endpoint(sw, c, None, "final", "GC mu=0.5")[1] == g[-1]
    assert endpoint(sw, c, None, "first", "GC mu=0.5")[1] == g[0]
    assert math.isclose(endpoint(sw, c, None, "mean_log", "GC mu=0.5")[1], np.log(g).mean())
    ic_final = c[(c.label == "IC") & (c.seed == 1) & (c.step == 400)].fd_digits.item()
    want = next((st for st, v in zip((100, 200, 300, 400), g) if v <= ic_final), None)
    got = endpoint(sw, c, None, "steps_to_reach", "GC mu=0.5", "IC")[1]
    assert got == want if want is not None else math.isnan(got)   # never reached: censored (NaN), not a number
    final = pd.DataFrame({"label": ["GC mu=0.5"] * 2, "seed": [0, 1], "fd_digits": [7.0, 8.0]})
    assert endpoint(sw, c, final, "final", "GC mu=0.5").tolist() == [7.0, 8.0]  # the final evaluation wins


@pytest.mark.parametrize("factor, want", [(0.8, "holds"), (1.0, "not holds"), (1.25, "refuted")])
def test_verdicts_can_come_out_every_way(tmp_path, factor, want):
    rows = preregistered_claims(sweep(tmp_path), curves(factor))
    primary = [r for r in rows if r["role"] == "primary"]
    assert [r["n"] for r in rows] == [8] * 4 and len(primary) == 2
    assert primary[0]["claim"] == "GC mu=0.5 ends below IC (final fd_digits)" and "8 paired seeds" in primary[0]["measured"]
    for r in primary + [rows[2]]:
        assert (r["verdict"] != "holds") if want == "not holds" else (r["verdict"] == want), r


def test_shared_runs_are_named(tmp_path):
    pre = {**PRE, "shared_with": {"cpu_long": ["IC", "OT"]}}
    rows = preregistered_claims(sweep(tmp_path, pre), curves(0.8))
    assert "IC runs shared with cpu_long" in rows[0]["measured"]
    assert "OT runs shared with cpu_long" in rows[1]["measured"]


def test_paired_power_matches_a_simulation_of_the_verdict():
    g = np.random.default_rng(1)
    effect, sd, n, reps = 1.0, 1.5, 6, 4000
    d = effect + sd * g.standard_normal((reps, n))
    hits = np.mean([paired_verdict(-x, np.zeros(n)).verdict == "holds" for x in d])
    p = paired_power(effect, sd, n)
    assert abs(hits - p) < 4 * math.sqrt(p * (1 - p) / reps), (hits, p)
    assert math.isclose(paired_power(detectable_effect(sd, n), sd, n), 0.8, rel_tol=1e-6)
    assert paired_power(0.0, sd, n) == pytest.approx(0.05, abs=1e-9)  # no effect: the one-sided error rate


def test_bad_preregistration_is_named():
    base = dict(variant="x", base_config="params/train/digits.yaml", overrides={"total_steps": 100},
                metric="fd_digits", seeds=[0, 1], mus=[0.5], root=ROOT)
    with pytest.raises(ValueError, match=r"preregistration.primary\[0\].a='GC mu=0.3' is not a run"):
        make_sweep(**base, preregistration={"primary": [{"endpoint": "final", "a": "GC mu=0.3", "b": "IC"}]})
    with pytest.raises(ValueError, match="endpoint"):
        make_sweep(**base, preregistration={"primary": [{"endpoint": "auc", "a": "GC mu=0.5", "b": "IC"}]})
    with pytest.raises(ValueError, match="at least one primary"):
        make_sweep(**base, preregistration={"secondary": []})
    with pytest.raises(ValueError, match="final_eval: n=1"):
        make_sweep(**base, final_eval={"n": 1, "sampling_seeds": [0]})
    with pytest.raises(ValueError, match="sampling_seeds"):
        make_sweep(**base, final_eval={"n": 10, "sampling_seeds": [0, 0]})


def test_long_profiles_fix_endpoints_and_seeds_before_the_runs():
    plan = {"cpu_long": (10, 4000), "cpu_long_2x": (5, 8000), "cpu_long_mu": (5, 4000)}
    for name, (seeds, steps) in plan.items():
        sw = sweep_from_params(ROOT / "params" / "fid_curves" / f"{name}.yaml", root=ROOT)
        assert len(sw.seeds) >= seeds and sw.base["total_steps"] == steps, name
        assert sw.preregistration["primary"] and sw.preregistration["power"], name
        fe = sw.final_eval
        assert fe["n"] * len(fe["sampling_seeds"]) >= 10_000 and len(fe["sampling_seeds"]) >= 5, name
    # the power statement of cpu_long.yaml is what the code computes from cpu_long's earlier spread
    assert round(detectable_effect(1.34, 10), 1) == 1.1 and round(detectable_effect(2.28, 10), 1) == 1.9
    assert round(paired_power(2.02, 1.34, 5), 2) == 0.86 and round(paired_power(3.82, 2.28, 5), 2) == 0.92
    # cpu_long_mu's baselines are cpu_long's runs (same configs), so it names them as shared
    a = sweep_from_params(ROOT / "params" / "fid_curves" / "cpu_long.yaml", root=ROOT)
    b = sweep_from_params(ROOT / "params" / "fid_curves" / "cpu_long_mu.yaml", root=ROOT)
    assert a.base == b.base
    assert set(b.preregistration["shared_with"]["cpu_long"]) == {"IC", "OT", "GC mu=0.5"}


def test_final_evaluation_pools_sampling_seeds_and_is_cached(tmp_path, one_thread):
    from conftest import tiny_config
    from gclib.train import train
    cfg = tiny_config(tmp_path, total_steps=10, checkpoint_every=10)
    base = {**cfg, "eval_metrics": []}
    sw = Sweep(base=base, metric="w2", seeds=[0], mus=[], include_ot=False, frozen={}, frozen_mu=0.5, frozen_seed=0,
               workers=1, out=tmp_path / "out", final_eval={"n": 64, "sampling_seeds": [0, 1]})
    from gclib.experiments.fid_curves import run_config
    run = Run("IC", 0, {"flow": "ic"})
    with pytest.raises(FileNotFoundError, match="final checkpoint of IC"):
        evaluate_final(sw, run)
    train(run_config(base, run))
    v1 = evaluate_final(sw, run)
    cache = list((tmp_path / "runs").glob("*/final_eval-*.json"))
    assert len(cache) == 1 and '"samples": 128' in cache[0].read_text()
    assert evaluate_final(sw, run) == v1 and v1["w2"] > 0
    t = final_evaluation(sw)
    assert t.w2.tolist() == [v1["w2"]] and (tmp_path / "out" / "final_eval.csv").is_file()


def test_long_status_counts_finished_partial_and_pending_runs(tmp_path, monkeypatch, one_thread):
    import yaml
    from conftest import tiny_config
    from gclib.reproduce import long_status
    from gclib.train import train
    root = tmp_path / "proj"
    (root / "params" / "train").mkdir(parents=True)
    (root / "params" / "fid_curves").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "gclib"\n')
    base = {k: v for k, v in tiny_config(tmp_path).items() if k != "runs_dir"}
    (root / "params" / "train" / "toy.yaml").write_text(yaml.safe_dump(base))
    (root / "params" / "fid_curves" / "cpu_long_t.yaml").write_text(yaml.safe_dump(dict(
        variant="cpu_long_t", base_config="params/train/toy.yaml", overrides={"total_steps": 20}, metric="w2",
        seeds=[0], mus=[0.5], include_ot=False, workers=2)))
    monkeypatch.setenv("GCLIB_RUNS", str(tmp_path / "cache"))
    assert long_status(root) == ["fid_curves/cpu_long_t: 2 runs of its own: 0 finished, 0 partly trained, "
                                 "2 not started; time left unknown (no run has trained here yet)"]
    sw = sweep_from_params(root / "params" / "fid_curves" / "cpu_long_t.yaml", root=root)
    from gclib.experiments.fid_curves import run_config
    ic, gc = sw.runs()
    train(run_config(sw.base, ic))
    res = train(run_config(sw.base, gc))
    (res.run_dir / "done.json").unlink()  # as if killed after its last checkpoint
    line = long_status(root)[0]
    assert "1 finished, 1 partly trained (resume at steps 20), 0 not started" in line, line


def test_results_that_predate_a_preregistration_are_marked_superseded(tmp_path):
    import json
    import yaml
    from gclib.reproduce import superseded
    (tmp_path / "params" / "fid_curves").mkdir(parents=True)
    (tmp_path / "params" / "fid_curves" / "p.yaml").write_text(yaml.safe_dump({"seeds": [0, 1, 2, 3], "preregistration": PRE}))
    (tmp_path / "params" / "fid_curves" / "q.yaml").write_text(yaml.safe_dump({"seeds": [0, 1]}))
    old = {"seeds": [0, 1], "claims": []}
    assert "SUPERSEDED: an earlier run on seeds [0, 1]" in superseded(tmp_path, "fid_curves", "p", old)
    assert superseded(tmp_path, "fid_curves", "p", {**old, "seeds": [0, 1, 2, 3], "preregistration": PRE}) is None
    assert superseded(tmp_path, "fid_curves", "q", old) is None  # no pre-registration: nothing to supersede


# ---------------------------------------------------------------------------------------- budget rows
def _final(leads: dict, seeds, base: float = 20.0) -> pd.DataFrame:
    """A final evaluation with IC at ``base`` and GC / OT at IC + the given per-seed leads."""
    rows = []
    for s in seeds:
        rows += [{"label": "IC", "seed": s, "fd_digits": base + s},
                 {"label": "GC mu=0.5", "seed": s, "fd_digits": base + s + leads["gc"][s]},
                 {"label": "OT", "seed": s, "fd_digits": base + s + leads["ot"][s]}]
    return pd.DataFrame(rows)


def _budget_sweep(tmp_path, short_leads, steps=800, short_steps=400, metric="fd_digits", missing=False) -> Sweep:
    import json
    d = tmp_path / "short"
    d.mkdir(exist_ok=True)
    if not missing:
        _final(short_leads, range(5)).to_csv(d / "final_eval.csv", index=False)
    (d / "metrics.json").write_text(json.dumps({"metric": metric, "steps": short_steps}))
    return Sweep(base={"total_steps": steps, "eval_every": 100, "dataset": "digits"}, metric="fd_digits",
                 seeds=list(range(5)), mus=[0.5], include_ot=True, frozen={}, frozen_mu=0.5, frozen_seed=0, workers=1,
                 out=tmp_path / "long", preregistration=PRE, compare_budget="short")


def test_budget_rows_by_hand_and_every_way(tmp_path):
    from gclib.experiments.fid_curves import budget_claims
    short = {"gc": [-2.0, -1.5, -2.5, -1.0, -2.0], "ot": [0.5, -0.5, 1.0, 0.0, 0.3]}
    sw = _budget_sweep(tmp_path, short)
    jitter = np.array([0.1, -0.2, 0.05, 0.15, -0.1])
    for shift, want in ((-1.5, "holds"), (0.0, "inconclusive"), (+1.5, "refuted")):
        long_ = {"gc": list(np.array(short["gc"]) + shift + jitter), "ot": short["ot"]}   # GC moves, OT does not
        rows = budget_claims(sw, _final(long_, range(5), base=10.0))
        assert [r["role"] for r in rows] == ["exploratory"] * 2 and [r["n"] for r in rows] == [5, 5]
        assert rows[0]["claim"] == "GC mu=0.5's final lead over IC is larger at 800 steps than at 400 (fd_digits)"
        assert all(r["verdict"] == want for r in rows), (shift, rows)
        # the change is the mean of the per-seed differences of leads: shift + mean(jitter), here by hand
        change = float(re.search(r"change \(longer - shorter\) (\S+) \[", rows[0]["measured"]).group(1))
        assert math.isclose(change, shift + jitter.mean(), rel_tol=1e-3, abs_tol=1e-9)
        assert f"at 800 steps, {np.mean(short['gc']):.3g} [" in rows[0]["measured"]
        assert "the 400-step runs are short's" in rows[0]["measured"]
    # the other profile at the longer budget: the roles of the two swap, the direction of the question does not
    sw = _budget_sweep(tmp_path, short, steps=200)
    rows = budget_claims(sw, _final({"gc": list(np.array(short["gc"]) - 1.5 + jitter), "ot": short["ot"]}, range(5)))
    assert rows[0]["claim"].endswith("larger at 400 steps than at 200 (fd_digits)") and rows[0]["verdict"] == "refuted"


@pytest.mark.parametrize("change, match", [
    (dict(short_steps=800), "trains for 800 steps too"),
    (dict(metric="kid_digits"), "scored with 'kid_digits'"),
    (dict(missing=True), "no final evaluation of that profile in .*short; run its notebook"),
])
def test_bad_budget_comparison_is_named(tmp_path, change, match):
    from gclib.experiments.fid_curves import budget_claims
    sw = _budget_sweep(tmp_path, {"gc": [0.0] * 5, "ot": [0.0] * 5}, **change)
    with pytest.raises(ValueError, match=match):
        budget_claims(sw, _final({"gc": [0.0] * 5, "ot": [0.0] * 5}, range(5)))


def test_budget_comparison_checked_before_any_work(tmp_path):
    kw = dict(variant="x", base_config="params/train/toy.yaml", overrides={"total_steps": 10}, metric="w2",
              seeds=[0, 1], mus=[0.5], root=ROOT, preregistration=PRE)
    with pytest.raises(ValueError, match=r"compare_budget='nope': no such profile"):
        make_sweep(**kw, compare_budget="nope")
    with pytest.raises(ValueError, match="compare_budget='cpu_long': .* has none"):
        make_sweep(**{**kw, "preregistration": None}, compare_budget="cpu_long")
    with pytest.raises(ValueError, match="compare_budget='cpu_long': that profile is scored with 'fd_digits'"):
        make_sweep(**kw, compare_budget="cpu_long")
    digits = {**kw, "base_config": "params/train/digits.yaml", "metric": "fd_digits"}
    with pytest.raises(ValueError, match="compare_budget='cpu_long': that profile trains for 4000 steps too"):
        make_sweep(**{**digits, "overrides": {"total_steps": 4000}}, compare_budget="cpu_long")
    assert make_sweep(**digits, compare_budget="cpu_long").compare_budget == "cpu_long"   # 10 steps: another budget


def test_the_2x_profile_compares_against_cpu_long():
    sw = sweep_from_params(ROOT / "params" / "fid_curves" / "cpu_long_2x.yaml", root=ROOT)
    assert sw.compare_budget == "cpu_long" and set(sw.seeds) <= set(range(10))
