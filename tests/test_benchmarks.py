"""Each benchmark runs on a tiny size and writes well-formed results. No timing is asserted."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import benchutil  # noqa: E402
import ot_scaling  # noqa: E402
import sampling  # noqa: E402
import step_time  # noqa: E402
import thread_share  # noqa: E402
from gclib.couplings import OT_AUTO_EMD_MIN_N, couple, ot_permutation, resolve_ot_solver  # noqa: E402


def test_round_robin_and_summary():
    calls = []
    rr = benchutil.round_robin({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                               repeats=3, warmup=1, per_block=2)
    assert rr["rounds"] == 3 and len(rr["times"]["a"]) == 3 and len(rr["times"]["b"]) == 3
    assert calls[:2] == ["a", "b"] and len(calls) == 2 + 3 * 2 * 2
    s = benchutil.summarize([3.0, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    info = benchutil.machine_info()
    for key in ("cpu_model", "logical_cores", "torch", "scipy", "pot", "torch_threads"):
        assert key in info


def test_step_time_tiny(tmp_path):
    res = step_time.run(("tiny",), threads=1, out=tmp_path / "st.json", repeats=2)
    m = res["models"][0]
    assert set(m["variants"]) == set(step_time.VARIANTS)
    assert m["variants"]["ic"]["ratio_to_ic"] == pytest.approx(1.0)
    assert m["variants"]["gc1_rows"]["mean_gc_rows"] == m["batch"]
    assert m["variants"]["ic"]["mean_gc_rows"] == 0
    for s in m["variants"].values():
        assert s["min"] <= s["median"] <= s["max"]
    saved = json.loads((tmp_path / "st.json").read_text())
    assert saved["machine"]["torch_threads"] == 1
    assert "| tiny" in step_time.table(res)
    # phase 2: the target pair alone, 10 x repeats rounds without a budget, and its paired interval
    t = m["target"]
    assert t["variant"] == "gc0.5_rows" and t["at_most"] == 1.15 and t["rounds"] == 20
    assert t["paired_ratio"]["lo"] <= t["paired_ratio"]["median"] <= t["paired_ratio"]["hi"]
    assert t["verdict"] == step_time.verdict(t["paired_ratio"], 1.15)
    assert m["prewarm"]["sizes"] == m["batch"]


def test_ratio_ci():
    c = benchutil.ratio_ci([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert (c["median"], c["lo"], c["hi"], c["rounds"]) == (2.0, 2.0, 2.0, 3)  # a constant ratio has no spread
    num = [float(k) for k in range(1, 102)]
    c = benchutil.ratio_ci(num, [1.0] * 101, level=0.9)
    assert c["median"] == 51.0 and c["lo"] < 51.0 < c["hi"]
    # the sample median of n draws from a density f at the median has sd 1 / (2 f sqrt(n)); here f = 1/100
    # (uniform on [1, 101]), so the 90% interval is about +-1.645 * 100 / (2 sqrt(101))
    half = 1.645 * 100 / (2 * 101 ** 0.5)
    assert c["hi"] - c["lo"] == pytest.approx(2 * half, rel=0.35)
    assert benchutil.ratio_ci(num, [1.0] * 101) == c  # fixed seed: reproducible
    assert benchutil.ratio_ci([], []) is None


def test_verdict():
    ci = lambda lo, hi: {"median": (lo + hi) / 2, "lo": lo, "hi": hi}  # noqa: E731
    assert step_time.verdict(ci(1.10, 1.15), 1.15) == "met"
    assert step_time.verdict(ci(1.151, 1.2), 1.15) == "not met"
    assert step_time.verdict(ci(1.14, 1.16), 1.15) == "within noise of the target"
    assert step_time.verdict(None, 1.15) == "not measured"


def test_prewarm_calls_every_size_twice():
    sizes = []

    def predictor(x, sigma):
        assert x.shape[0] == sigma.shape[0]
        sizes.append(x.shape[0])
        return x

    w = benchutil.prewarm_sizes(predictor, torch.zeros(5, 1, 2, 2), torch.ones(5))
    assert sizes == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert w["sizes"] == 5 and w["first_call_median_s"] >= 0 and w["second_call_median_s"] >= 0
    sizes.clear()
    benchutil.prewarm_sizes(predictor, torch.zeros(5, 1, 2, 2), torch.ones(5), sizes=[2, 4])
    assert sizes == [2, 2, 4, 4]


def test_likely_sizes_cover_the_binomial():
    from scipy.stats import binom
    for batch, mu in ((512, 0.5), (128, 0.5), (8, 0.5), (64, 0.3)):
        r = benchutil.likely_sizes(batch, mu)
        assert 1 <= r.start and r.stop - 1 <= batch
        # 0 GC rows calls no predictor, so it needs no warming
        outside = 1.0 - (binom.cdf(r.stop - 1, batch, mu) - binom.cdf(r.start - 1, batch, mu)) - binom.pmf(0, batch, mu)
        assert outside < 1e-5, (batch, mu, r, outside)  # ~5 sd both sides
    assert list(benchutil.likely_sizes(512, 0.5)) == list(range(199, 314))


def test_ot_scaling_tiny(tmp_path):
    st = step_time.run(("tiny",), threads=1, out=tmp_path / "st.json", repeats=2, variants=["ic"])
    assert st["models"][0]["variants"]["ic"]["median"] > 0
    res = ot_scaling.run(threads=1, out=tmp_path / "ot.json", sizes=(8, 16), dims=(2, 4), budget_s=10.0,
                         share=True, share_batch=16, step_time_json=tmp_path / "st.json", share_model="tiny", share_d=8)
    assert len(res["scaling"]["rows"]) == 4
    assert all(r["objectives_agree"] for r in res["scaling"]["rows"])
    assert 0.0 <= res["share"]["share_auto"] < 1.0
    assert "ot.emd" in ot_scaling.table(res)


def test_sampling_tiny(tmp_path):
    res = sampling.run(sampling.QUICK_CONFIGS, threads=1, repeats=2, out=tmp_path / "s.json")
    assert len(res["rows"]) == len(sampling.QUICK_CONFIGS)
    for r in res["rows"]:
        assert r["samples_per_s"] > 0
        assert "error" not in r["memory"], r["memory"]
        assert r["memory"]["peak_delta_mb"] >= 0


def test_gpu_bench_dry_run(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / "gpu_bench.py"), "--dry-run", "--out-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "gpu-dryrun-cpu.json").read_text())
    modes = {m["mode"]: m for m in res["modes"]}
    assert "error" not in modes["fp32"], modes["fp32"].get("traceback")
    assert "error" not in modes["bf16_cl"], modes["bf16_cl"].get("traceback")
    assert set(modes["fp32"]["variants"]) == {"ic", "ot", "gc0.5_rows", "gc0.5_all", "sample_one_step"}
    assert modes["fp32"]["prewarm"]["size_range"] == [1, 4]  # every GC row count of a batch of 4
    assert modes["bf16_cl_compile"].get("skipped")


def test_run_all_quick(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--threads", "1", "--out-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("step_time.json", "ot_scaling.json", "sampling.json", "README.md"):
        assert (tmp_path / name).exists()
    text = (tmp_path / "README.md").read_text()
    assert "paired ratio [90% CI]" in text and "Target (issue 6)" in text and "torch" in text
    out = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--readme-only", "--out-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("n", [5, 40])
def test_auto_solver_is_exact_and_a_permutation(n):
    g = torch.Generator().manual_seed(n)
    x, z = torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g)
    perms = {s: ot_permutation(x, z, solver=s) for s in ("auto", "emd", "scipy")}
    cost = {s: ((x - z[p]) ** 2).sum().item() for s, p in perms.items()}
    assert cost["auto"] == pytest.approx(cost["emd"]) == pytest.approx(cost["scipy"])
    assert sorted(perms["auto"].tolist()) == list(range(n))
    c = couple("ot", x, z)  # the default solver is "auto"
    assert ((x - c.z) ** 2).sum().item() == pytest.approx(cost["emd"])


def test_auto_solver_choice():
    assert resolve_ot_solver("auto", OT_AUTO_EMD_MIN_N - 1) == "scipy"
    assert resolve_ot_solver("auto", OT_AUTO_EMD_MIN_N) == "emd"
    assert resolve_ot_solver("auto", OT_AUTO_EMD_MIN_N - 1, d=3072) == "scipy"
    assert resolve_ot_solver("auto", 256, d=2) == "emd" and resolve_ot_solver("auto", 64, d=2) == "scipy"
    assert resolve_ot_solver("emd", 4) == "emd" and resolve_ot_solver("scipy", 10 ** 5) == "scipy"
    with pytest.raises(ValueError, match="ot_solver"):
        resolve_ot_solver("hungarian", 4)


def test_thread_share_tiny_measures_idle_and_loaded_and_stops_its_busy_processes(tmp_path, monkeypatch):
    started = []
    real = thread_share.busy_processes
    monkeypatch.setattr(thread_share, "busy_processes", lambda n: started.extend(real(n)) or started[-n:])
    res = thread_share.run(steps=2, repeats=1, busy=1, preset="params/train/toy.yaml", flow="gc",
                           settings={"default": {}, "1 thread": {"OMP_NUM_THREADS": "1"}}, out=tmp_path / "thread_share.json",
                           notes=["a note"])
    assert len(started) == 1 and started[0].poll() is not None       # the busy loop ran only while measured
    d, one = res["settings"]["default"], res["settings"]["1 thread"]
    assert d["idle"]["n"] == d["loaded"]["n"] == 1 and d["wait_policy"] == "PASSIVE" and one["threads"] == 1
    from gclib.machine import default_threads
    assert d["threads"] == default_threads()     # the child reports what train ran on, not the count it put back
    assert d["ratio_of_medians"] == d["loaded"]["median"] / d["idle"]["median"]
    t = res["target"]
    assert t["setting"] == "default" and t["met"] == ((t["ratio"] <= 2.2) if t["quiet"] else None)
    assert len(res["other_work_cores"]["idle"]) == 1
    # the target is judged only on a machine that other work leaves idle
    quiet = {**res, "other_work_cores": {"idle": [0.1]}}
    busy = {**res, "other_work_cores": {"idle": [1.5]}}
    assert thread_share.judge(quiet)["met"] == (t["ratio"] <= 2.2) and thread_share.judge(busy)["met"] is None
    assert "NOT JUDGED" in thread_share.summary(busy) and "NOT JUDGED" not in thread_share.summary(quiet)
    saved = json.loads((tmp_path / "thread_share.json").read_text())
    assert saved["workload"]["steps"] == 2 and saved["notes"] == ["a note"]
    assert f"| default | {d['threads']} | PASSIVE |" in thread_share.table(res) and "| 1 thread | 1 | PASSIVE |" in \
        thread_share.table(res)
    assert "beside 1 busy processes" in thread_share.summary(res)
    import run_all
    assert "## 7." not in run_all.thread_share_section(tmp_path) and "| 1 thread |" in run_all.thread_share_section(tmp_path)


def test_ideal_gap_tail_tiny(tmp_path):
    """benchmarks/ideal_gap_tail.py on 8 draws of one seed: every N reported with its verdict, and the exact flow of
    two points jumps across their basins' boundary (the difference quotient grows like 1 / eps)."""
    import ideal_gap_tail
    res = ideal_gap_tail.main(["--seeds", "0", "--n", "8", "--Ns", "640", "2560", "--out", str(tmp_path / "t.json")])
    assert json.loads((tmp_path / "t.json").read_text())["benchmark"] == "ideal_gap_tail"
    row = res["rows"][0]
    assert [q["N"] for q in row["per_N"]] == [640, 2560] and 1.0 <= row["limit_ess"] <= 8.0
    assert all(q["verdict"] in ("holds", "inconclusive", "refuted") for q in row["per_N"])
    for j in res["jump"]:
        assert 0.9 < j["f_eps"] < 1.0 and j["quotient"] > 0.4 / j["eps"]


def test_mixture_limit_pilot_tiny(tmp_path):
    """benchmarks/mixture_limit_pilot.py on 256 draws: each distance reported; the smooth mixture's N gap is at its
    limit with many effective draws, the v = 0 teacher far below it."""
    import mixture_limit_pilot
    res = mixture_limit_pilot.main(["--stds", "0.25", "--n", "256", "--N", "160", "--out", str(tmp_path / "m.json")])
    assert json.loads((tmp_path / "m.json").read_text())["benchmark"] == "mixture_limit_pilot"
    assert [r["setting"] for r in res["rows"]] == ["squared L2", "pseudo-Huber, paper c = 0.0043"]
    r = res["rows"][0]
    assert abs(r["rel"]) < 0.01 and r["limit_ess"] > 20 and r["wrong_rel_hi"] < -0.1
