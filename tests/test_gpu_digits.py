"""The GPU path of the central digits profile (benchmarks/gpu_digits.sh, params/fid_curves/gpu_digits.yaml),
checked on CPU: its runs are cpu_long.yaml's runs (same configuration hashes), the script refuses to start
without CUDA, and its --smoke mode (CPU, 2 seeds, 40 steps) goes end to end through the notebook to
pre-registered claims."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch

from gclib.config import config_hash, load_config
from gclib.experiments.fid_curves import run_config, sweep_from_params
from nbhelpers import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_digits.sh"


def test_gpu_profile_trains_exactly_cpu_longs_runs():
    cpu = sweep_from_params(ROOT / "params" / "fid_curves" / "cpu_long.yaml", root=ROOT)
    gpu = sweep_from_params(ROOT / "params" / "fid_curves" / "gpu_digits.yaml", root=ROOT)
    assert gpu.base["device"] == "cuda" and gpu.workers > 2
    assert {k: v for k, v in gpu.base.items() if k != "device"} == {k: v for k, v in cpu.base.items() if k != "device"}
    hashes = lambda sw: [config_hash(load_config(None, run_config(sw.base, r))) for r in sw.runs()]
    assert hashes(gpu) == hashes(cpu) and len(hashes(cpu)) == 30
    assert gpu.preregistration["primary"] == cpu.preregistration["primary"] and gpu.final_eval == cpu.final_eval


def test_the_replication_is_cpu_longs_runs_at_fresh_seeds_with_its_own_power_estimate():
    cpu = sweep_from_params(ROOT / "params" / "fid_curves" / "cpu_long.yaml", root=ROOT)
    rep = sweep_from_params(ROOT / "params" / "fid_curves" / "cpu_long_replication.yaml", root=ROOT)
    assert {k: v for k, v in rep.base.items() if k != "device"} == {k: v for k, v in cpu.base.items() if k != "device"}
    assert rep.seeds == list(range(10, 40)) and len(rep.runs()) == 90
    used = set()
    for p in (ROOT / "params" / "fid_curves").glob("*.yaml"):
        if p.name != "cpu_long_replication.yaml" and "digits" in str(sweep_from_params(p, root=ROOT).base.get("dataset")):
            used |= set(sweep_from_params(p, root=ROOT).seeds)
    assert used and not used & set(rep.seeds)       # no other digits profile has trained these seeds
    pre = rep.preregistration
    assert pre["primary"] == cpu.preregistration["primary"] and "shared_with" not in pre
    # the stated power follows from cpu_long's committed final evaluation
    import pandas as pd
    from gclib.experiments.common import detectable_effect, paired_power
    f = pd.read_csv(ROOT / "results" / "fid_curves" / "cpu_long" / "final_eval.csv").pivot(
        index="seed", columns="label", values="fd_digits")
    for b, detect, power in (("IC", "1.58", "0.89"), ("OT", "1.84", "0.92")):
        d = f["GC mu=0.5"] - f[b]
        assert f"{detectable_effect(d.std(), 30):.2f}" == detect and detect in pre["power"]
        assert f"{paired_power(abs(d.mean()), d.std(), 30):.2f}" == power and power in pre["power"]


def test_the_replications_committed_result_is_all_90_runs_at_its_own_seeds():
    """results/fid_curves/cpu_long_replication: every run of seeds 10-39 trained to the end and evaluated once, a
    seed's three runs on one kind of device, and both primary rows judged on 30 paired seeds with a family-wise
    verdict (their recomputation from these CSVs is tests/test_inference.py's)."""
    import pandas as pd
    out = ROOT / "results" / "fid_curves" / "cpu_long_replication"
    m = json.loads((out / "metrics.json").read_text())
    assert m["seeds"] == list(range(10, 40)) and m["steps"] == 4000
    fe = pd.read_csv(out / "final_eval.csv")
    assert sorted(fe.seed.unique()) == list(range(10, 40)) and len(fe) == 90 and not fe.fd_digits.isna().any()
    assert fe.groupby("label").size().to_dict() == {"GC mu=0.5": 30, "IC": 30, "OT": 30}
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 90 and (runs.groupby("seed").device.nunique() == 1).all()
    curves = pd.read_csv(out / "curves.csv")
    assert curves.groupby(["label", "seed"]).step.max().eq(4000).all() and len(curves.groupby(["label", "seed"])) == 90
    primary = [c for c in m["claims"] if c["role"] == "primary"]
    assert [(c["a"], c["b"], c["endpoint"]) for c in primary] == [("GC mu=0.5", "IC", "final"),
                                                                  ("GC mu=0.5", "OT", "final")]
    assert all(c["n"] == 30 and c["verdict_holm"] in ("holds", "refuted", "inconclusive") for c in primary)
    for label, v in m["final"].items():
        assert v["seeds"] == 30 and v["mean"] == pytest.approx(fe[fe.label == label].fd_digits.mean(), rel=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_script_refuses_without_cuda_in_one_line(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "GCLIB_RUNS": str(tmp_path)})
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        "gpu_digits.sh: no CUDA device here (use --smoke for the CPU check)"]
    assert not any(tmp_path.iterdir())  # nothing trained


def test_smoke_run_goes_end_to_end(tmp_path):
    out = ROOT / "results" / "fid_curves" / "_pytest-gpu-smoke"
    try:
        r = subprocess.run(["bash", str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "GCLIB_RUNS_SMOKE": str(tmp_path)})
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        m = json.loads((out / "metrics.json").read_text())
        assert m["seeds"] == [0, 1] and m["final_from"].startswith("final evaluation: 100 one-step samples x 2")
        primary = [c for c in m["claims"] if c.get("role") == "primary"]
        assert [c["claim"] for c in primary] == ["GC mu=0.5 ends below IC (final fd_digits)",
                                                 "GC mu=0.5 ends below OT (final fd_digits)"]
        assert all(c["n"] == 2 and c["verdict"] in ("holds", "refuted", "inconclusive") for c in m["claims"])
        assert len((out / "final_eval.csv").read_text().splitlines()) == 1 + 6
        assert len(list(tmp_path.glob("*/final_eval-*.json"))) == 6 and len(list(tmp_path.glob("*/done.json"))) == 6
        # the six runs trained as one stack (GPU_DIGITS_STACK's default)
        assert {json.loads(p.read_text()).get("stack_size") for p in tmp_path.glob("*/done.json")} == {6}
    finally:
        shutil.rmtree(out, ignore_errors=True)
