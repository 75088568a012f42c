"""Exact minibatch OT time against batch size and dimension: POT's ot.emd against scipy's linear_sum_assignment.

For each dimension d in (2, 64, 3072) and batch n in (64, ..., 4096): x = a Gaussian batch, z = N(0, I);
the squared-Euclidean cost matrix is built once (float64, as gclib.couplings.ot_permutation builds it, timed
separately) and both solvers run on it, interleaved round-robin. Both optima are checked to agree (exact).
Big sizes are guarded by a time budget: a size whose projected solve time (last time x growth factor) would
overrun the budget is skipped and listed under "skipped".

Also: OT's share of a training step at the paper's batch 512 on CIFAR-sized data (d = 3072). The OT time
(cost + solver "auto") at 512 x 3072 is measured here; the CIFAR-10 U-Net step at batch 512 is infeasible on
a CPU, so its time is extrapolated linearly from the per-sample IC step time measured by step_time.py at a
small batch (results/bench/step_time.json; or measured here at batch 4 if that file is absent).

Usage: python benchmarks/ot_scaling.py [--quick] [--budget 100] [--out results/bench/ot_scaling.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import benchutil as bu  # noqa: E402
from gclib.couplings import OT_AUTO_EMD_MIN_N, OT_AUTO_EMD_MIN_N_LOW_DIM, OT_AUTO_LOW_DIM, resolve_ot_solver  # noqa: E402

SIZES = (64, 128, 256, 512, 1024, 2048, 4096)
DIMS = (2, 64, 3072)
GROWTH = 5.0  # projected solve-time growth per doubling of n (network simplex / LSA are ~n^2 to n^3)
MAX_SINGLE_SOLVE_S = 12.0


def repeats_for(n: int) -> int:
    return 5 if n <= 512 else (3 if n <= 2048 else 1)


def solve_emd(cost: np.ndarray) -> float:
    import ot
    n = cost.shape[0]
    w = np.full(n, 1.0 / n)
    plan, log = ot.emd(w, w, cost, numItermax=1_000_000, log=True)
    if log.get("result_code", 1) != 1:
        raise RuntimeError(f"ot.emd did not converge at n={n}")
    perm = plan.argmax(axis=1)
    return float(cost[np.arange(n), perm].sum())


def solve_scipy(cost: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].sum())


SOLVERS = {"emd": solve_emd, "scipy": solve_scipy}


def cost_matrix(x: torch.Tensor, z: torch.Tensor) -> np.ndarray:
    """Exactly as gclib.couplings.ot_permutation builds it."""
    n = x.shape[0]
    return torch.cdist(x.reshape(n, -1).double(), z.reshape(n, -1).double()).pow_(2).numpy()


def scaling(sizes=SIZES, dims=DIMS, budget_s: float = 75.0, seed: int = 0) -> dict:
    rows, skipped = [], []
    t_start = time.perf_counter()
    for d in dims:
        last = {s: None for s in SOLVERS}
        skipping = False
        for n in sizes:
            reps = repeats_for(n)
            remaining = budget_s - (time.perf_counter() - t_start)
            proj = {s: (last[s] * GROWTH if last[s] is not None else 0.0) for s in SOLVERS}
            if skipping or max(proj.values()) > MAX_SINGLE_SOLVE_S or sum(proj.values()) * reps > remaining:
                skipping = True  # larger sizes of this d are skipped too
                skipped.append({"n": n, "d": d, "projected_s_per_solve": proj, "remaining_budget_s": remaining,
                                "reason": "projected time over the budget"})
                continue
            g = torch.Generator().manual_seed(seed + n + d)
            x = torch.randn(n, d, generator=g) * 0.5
            z = torch.randn(n, d, generator=g)
            t0 = time.perf_counter()
            cost = cost_matrix(x, z)
            t_cost = time.perf_counter() - t0
            objective = {}

            def mk(s):
                def run():
                    objective[s] = SOLVERS[s](cost)
                return run
            rr = bu.round_robin({s: mk(s) for s in SOLVERS}, repeats=reps, warmup=1 if n <= 1024 else 0)
            for s in SOLVERS:
                last[s] = statistics.median(rr["times"][s])
            ref = objective["scipy"]
            exact = abs(objective["emd"] - ref) <= 1e-9 * max(1.0, abs(ref))
            if not exact:
                raise RuntimeError(f"solvers disagree at n={n}, d={d}: emd {objective['emd']} scipy {ref}")
            row = {"n": n, "d": d, "repeats": reps, "cost_matrix_s": t_cost, "objectives_agree": exact}
            for s in SOLVERS:
                row[s] = bu.summarize(rr["times"][s])
            row["faster"] = "emd" if row["emd"]["median"] < row["scipy"]["median"] else "scipy"
            row["emd_over_scipy"] = row["emd"]["median"] / row["scipy"]["median"]
            row["auto_picks"] = resolve_ot_solver("auto", n, d)
            row["auto_total_s"] = t_cost + row[row["auto_picks"]]["median"]
            rows.append(row)
            print(f"[ot_scaling] n={n} d={d}: cost {t_cost:.4f}s emd {row['emd']['median']:.4f}s "
                  f"scipy {row['scipy']['median']:.4f}s -> {row['faster']}", flush=True)
    return {"rows": rows, "skipped": skipped, "budget_s": budget_s, "wall_s": time.perf_counter() - t_start}


def ic_step_per_sample(step_time_json: Path | None, model: str = "cifar10") -> dict:
    """Per-sample IC step time of ``model`` (the CIFAR-10 U-Net): from step_time.json if it has it, else measured now."""
    if step_time_json is not None and Path(step_time_json).exists():
        st = json.loads(Path(step_time_json).read_text())
        for m in st.get("models", []):
            if m["model"] == model:
                med = m["variants"]["ic"]["median"]
                return {"source": str(Path(step_time_json).name), "batch": m["batch"], "step_s": med,
                        "per_sample_s": med / m["batch"]}
    import step_time
    r = step_time.bench_model(model, batch=4, repeats=3, variants=["ic"], budget_s=None)
    med = r["variants"]["ic"]["median"]
    return {"source": f"measured here ({model}, ic only, batch 4, 3 repeats)", "batch": 4, "step_s": med,
            "per_sample_s": med / 4}


def ot_share(step_per_sample: dict, batch: int = 512, d: int = 3072, repeats: int = 5, seed: int = 0) -> dict:
    """Time gclib's OT coupling (cost + solve) at batch x d for each solver and the share of a step it takes."""
    from gclib.couplings import ot_permutation
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, d, generator=g) * 2 - 1
    z = torch.randn(batch, d, generator=g)
    rr = bu.round_robin({s: (lambda s=s: ot_permutation(x, z, solver=s)) for s in ("emd", "scipy", "auto")},
                        repeats=repeats, warmup=1)
    ot_times = {s: bu.summarize(t) for s, t in rr["times"].items()}
    step_est = step_per_sample["per_sample_s"] * batch
    out = {"batch": batch, "d": d, "ot_permutation_s": ot_times, "auto_solver": resolve_ot_solver("auto", batch, d),
           "ic_step_at_batch_s_extrapolated": step_est, "ic_step_source": step_per_sample,
           "extrapolation": f"linear in batch from the measured IC step at batch {step_per_sample['batch']} "
                            f"(per-sample {step_per_sample['per_sample_s']:.4f} s x {batch})"}
    for s, t in ot_times.items():
        out[f"share_{s}"] = t["median"] / (step_est + t["median"])
    return out


def crossover(rows) -> dict:
    """For each d: the smallest n from which emd was faster at every larger measured n (None if never)."""
    out = {}
    for d in sorted({r["d"] for r in rows}):
        rs = sorted((r for r in rows if r["d"] == d), key=lambda r: r["n"])
        cx = None
        for i, r in enumerate(rs):
            if all(q["faster"] == "emd" for q in rs[i:]):
                cx = r["n"]
                break
        out[str(d)] = cx
    return out


def table(res: dict) -> str:
    lines = ["| d | n | cost matrix s | ot.emd median s (min-max) | scipy LSA median s (min-max) | emd/scipy | faster | auto |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["scaling"]["rows"]:
        e, s = r["emd"], r["scipy"]
        lines.append(f"| {r['d']} | {r['n']} | {bu.fmt(r['cost_matrix_s'], 3)} | {bu.fmt(e['median'], 3)} "
                     f"({bu.fmt(e['min'], 3)}-{bu.fmt(e['max'], 3)}) | {bu.fmt(s['median'], 3)} "
                     f"({bu.fmt(s['min'], 3)}-{bu.fmt(s['max'], 3)}) | {bu.fmt(r['emd_over_scipy'])} | {r['faster']} | {r['auto_picks']} |")
    if res["scaling"]["skipped"]:
        lines.append("")
        lines.append("Skipped (time budget): " + ", ".join(f"n={s['n']} d={s['d']}" for s in res["scaling"]["skipped"]))
    sh = res.get("share")
    if sh:
        lines.append("")
        lines.append(f"OT share of a training step at batch {sh['batch']}, d={sh['d']} (CIFAR-sized): "
                     f"ot_permutation (cost + solve) median emd {bu.fmt(sh['ot_permutation_s']['emd']['median'])} s, "
                     f"scipy {bu.fmt(sh['ot_permutation_s']['scipy']['median'])} s, auto ({sh['auto_solver']}) "
                     f"{bu.fmt(sh['ot_permutation_s']['auto']['median'])} s; IC step at batch {sh['batch']} "
                     f"extrapolated to {bu.fmt(sh['ic_step_at_batch_s_extrapolated'])} s ({sh['extrapolation']}); "
                     f"share with auto {100 * sh['share_auto']:.2f}%, with emd {100 * sh['share_emd']:.2f}%.")
    return "\n".join(lines)


def run(threads=None, out=None, sizes=SIZES, dims=DIMS, budget_s=75.0, share=True, share_batch=512,
        step_time_json: Path | None = None, share_model: str = "cifar10", share_d: int = 3072) -> dict:
    bu.pin_threads(threads)
    t0 = time.perf_counter()
    res = {"benchmark": "ot_scaling", "machine": bu.machine_info(), "auto_emd_min_n": OT_AUTO_EMD_MIN_N,
           "auto_emd_min_n_low_dim": OT_AUTO_EMD_MIN_N_LOW_DIM, "auto_low_dim": OT_AUTO_LOW_DIM,
           "note": "times per solve (cost matrix excluded unless stated); POT's ot.emd is single-threaded; "
                   "repeats: 5 for n<=512, 3 for n<=2048, 1 for 4096 (then min=median=max)"}
    res["scaling"] = scaling(sizes, dims, budget_s)
    res["crossover_emd_faster_from_n"] = crossover(res["scaling"]["rows"])
    if share:
        res["share"] = ot_share(ic_step_per_sample(step_time_json, share_model), batch=share_batch, d=share_d)
    return bu.finish(res, t0, out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--budget", type=float, default=75.0, help="seconds for the scaling sweep")
    p.add_argument("--quick", action="store_true", help="small sizes, share at batch 64 (for tests)")
    p.add_argument("--step-time-json", type=Path, default=bu.RESULTS_DIR / "step_time.json")
    p.add_argument("--out", type=Path, default=bu.RESULTS_DIR / "ot_scaling.json")
    a = p.parse_args(argv)
    if a.quick:
        res = run(a.threads, a.out, sizes=(16, 32), dims=(2, 8), budget_s=10.0, share=False)
    else:
        res = run(a.threads, a.out, budget_s=a.budget, step_time_json=a.step_time_json)
    print(table(res))


if __name__ == "__main__":
    main()
