"""Median time of a full training step (loss, backward, optimiser, EMA) for each flow, runs interleaved.

Variants, on the same model, optimiser, EMA and data batch:
  ic, ot (exact minibatch OT, solver "auto"), gc mu=0.5 and mu=1.0, each with the GC-rows-only predictor
  ("rows", gclib's default) and the authors' whole-batch predictor ("all", predict_all=True).
Component timings in the same round-robin explain the ratios: the no-grad EMA forward on the whole batch and
on half of it (what the predictor costs), so the expected GC/IC is 1 + E[fwd(#GC rows)] / step_ic.

Theory (a step ~ 1 forward with grad + backward (~3 forward units) + 1 no-grad target forward = 4 units):
GC rows-only adds mu units on mu*B rows -> 1 + mu/4 (1.125 at mu 0.5, 1.25 at mu 1); whole batch -> 1.25.

Steady state: with the rows-only predictor the predictor's batch (the number of GC rows, Binomial(B, mu)) changes
every step, and the first call at a new size costs extra (oneDNN creates its kernels for that shape; cuDNN
autotunes it when cudnn.benchmark is on). Training pays that once per size, over a run of thousands of steps;
a benchmark of a few dozen steps would pay it at nearly every step. So the predictor is first called at every
size 1..B (twice: the median extra cost of a first call is reported as ``first_call_extra_s``), and then timed.

Precision: each timing is one step (variants interleaved, order rotated every round). Phase 1 times every
variant; phase 2 then times only IC, GC(0.5, rows) and the predictor's forward on B/2 rows, for many more rounds.
The headline ratio is paired: the median over rounds of GC/IC timed next to each other, with a 90% bootstrap
interval over rounds. On a shared 2-core machine single steps vary by 20-30%; pairing cancels slow drifts.

Data: digits = sklearn's 8x8 digits scaled to [-1, 1]; cifar10 = random values in [-1, 1] of CIFAR's shape
(the cost of a step does not depend on the pixel values; OT's solve time does a little).
Optimiser: torch.optim.Adam (the paper uses Lion; the optimiser's cost is the same for every flow).

Usage: python benchmarks/step_time.py [--models digits cifar10] [--quick] [--out results/bench/step_time.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import benchutil as bu  # noqa: E402
from gclib.ema import EMA  # noqa: E402
from gclib.nets import UNet, count_parameters, unet_cifar10, unet_digits  # noqa: E402
from gclib.precond import ConsistencyModel  # noqa: E402
from gclib.schedules import karras_sigmas  # noqa: E402
from gclib import io  # noqa: E402
from gclib.step import train_step  # noqa: E402

class Size(NamedTuple):
    """How one model is benchmarked. Phase 1 times every variant (``repeats`` rounds at most, ``budget_s`` of
    timed rounds); phase 2 times only the target pair (IC, GC(0.5, rows)) and the predictor's forward, for
    ``target_budget_s``, so the headline ratio rests on many more rounds. Budgets keep `make bench` to minutes."""
    factory: Callable[[], torch.nn.Module]
    shape: tuple
    batch: int
    repeats: int
    per_block: int
    warmup: int
    budget_s: Optional[float]
    target_budget_s: Optional[float]


MODELS = {
    "digits": Size(unet_digits, (1, 8, 8), 128, 400, 1, 2, 30.0, 60.0),
    "cifar10": Size(unet_cifar10, (3, 32, 32), 8, 40, 1, 1, 45.0, 120.0),
    # for tests: a very small U-Net
    "tiny": Size(lambda: UNet(in_channels=1, resolution=8, channels=8, channel_mult=(1, 2), num_blocks=1,
                              attn_resolutions=(4,)), (1, 8, 8), 8, 2, 1, 1, None, None),
}

# variant -> train_step keywords
VARIANTS = bu.VARIANTS  # one table of step variants for every benchmark (benchutil.py)
# default variants per model: on the 35M CIFAR-10 U-Net gc1_all is left out (same work as gc1_rows: at mu = 1
# every row is a GC row, so both run the predictor on the whole batch) to save CPU time
DEFAULT_VARIANTS = {"cifar10": ["ic", "ot", "gc0.5_rows", "gc0.5_all", "gc1_rows"]}
THEORY = {"ic": 1.0, "ot": None, "gc0.5_rows": 1.125, "gc0.5_all": 1.25, "gc1_rows": 1.25, "gc1_all": 1.25}
TARGET = ("gc0.5_rows", 1.15)  # issue 6: GC(mu = 0.5, rows-only predictor) / IC at most 1.15


def verdict(ci: dict | None, target: float) -> str:
    """'met' when the whole interval is at or below the target, 'not met' when it is wholly above, else
    'within noise of the target' (the point estimate is reported beside it either way)."""
    if ci is None:
        return "not measured"
    if ci["hi"] <= target:
        return "met"
    if ci["lo"] > target:
        return "not met"
    return "within noise of the target"


def make_data(name: str, shape, batch: int, seed: int = 0) -> torch.Tensor:
    if name == "digits":
        from sklearn.datasets import load_digits
        d = torch.as_tensor(load_digits().data, dtype=torch.float32) / 8.0 - 1.0  # [0, 16] -> [-1, 1]
        idx = torch.randperm(d.shape[0], generator=torch.Generator().manual_seed(seed))[:batch]
        return d[idx].reshape(batch, *shape)
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *shape), generator=g) * 2 - 1


def bench_model(name: str, batch: int | None = None, repeats: int | None = None, variants=None,
                budget_s: float | None = -1.0, target_budget_s: float | None = -1.0, seed: int = 0) -> dict:
    """Phase 1 (every variant) and phase 2 (the target pair) on one model; budgets of -1 take the model's
    ``Size``, None means no time limit (``repeats`` rounds in phase 1, 10 x ``repeats`` in phase 2)."""
    size = MODELS[name]
    factory, shape, per_block, warmup = size.factory, size.shape, size.per_block, size.warmup
    batch = batch or size.batch
    repeats = repeats or size.repeats
    budget_s = size.budget_s if budget_s == -1.0 else budget_s
    variants = list(variants or DEFAULT_VARIANTS.get(name, VARIANTS))
    torch.manual_seed(seed)
    model = ConsistencyModel(factory())
    ema = EMA(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = make_data(name, shape, batch, seed)
    sigmas = karras_sigmas(11)
    gen = torch.Generator().manual_seed(seed)
    counter = {"step": 0}
    gc_rows = {v: [] for v in variants}

    def make_step(v):
        kw = VARIANTS[v]

        def run():
            res = train_step(model, opt, x, sigmas, step=counter["step"], ema=ema, generator=gen, **kw)
            counter["step"] += 1
            gc_rows[v].append(int(res.gc_mask.sum()))
        return run

    fns = {v: make_step(v) for v in variants}
    # components: the predictor's cost, the no-grad EMA forward on the whole batch and on its first half
    half = max(1, batch // 2)
    s_lo = torch.full((batch,), float(sigmas[3]))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))
    t_warm = time.perf_counter()
    warm = bu.prewarm_sizes(ema.model, x + s_lo[:, None, None, None] * z, s_lo)
    warm["wall_s"] = time.perf_counter() - t_warm

    def fwd(rows):
        def run():
            with torch.no_grad():
                ema.model(x[:rows] + s_lo[:rows, None, None, None] * z[:rows], s_lo[:rows])
        return run
    fns["fwd_nograd_B"] = fwd(batch)
    fns["fwd_nograd_B/2"] = fwd(half)

    t0 = time.perf_counter()
    rr = bu.round_robin(fns, repeats=repeats, warmup=warmup, per_block=per_block, budget_s=budget_s)
    wall = time.perf_counter() - t0
    times = rr["times"]
    ic = times["ic"]
    ic_med = bu.summarize(ic)["median"]
    out_variants = {}
    for v in variants:
        s = bu.summarize(times[v])
        s["ratio_to_ic"] = s["median"] / ic_med
        s["paired_ratio_to_ic"] = bu.paired_ratio(times[v], ic)
        s["paired_ratio_ci"] = bu.ratio_ci(times[v], ic) if v != "ic" else None
        s["theory_ratio"] = THEORY.get(v)
        s["mean_gc_rows"] = sum(gc_rows[v]) / max(1, len(gc_rows[v]))
        s["samples_per_s"] = batch / s["median"]
        s["kwargs"] = {k: val for k, val in VARIANTS[v].items()}
        out_variants[v] = s
    comps = {k: bu.summarize(times[k]) for k in ("fwd_nograd_B", "fwd_nograd_B/2")}
    fB, fH = comps["fwd_nograd_B"]["median"], comps["fwd_nograd_B/2"]["median"]
    comps["fwd_B_over_step_ic"] = fB / ic_med
    comps["fwd_halfB_over_step_ic"] = fH / ic_med
    comps["predicted_gc0.5_rows_ratio"] = 1 + fH / ic_med  # E[#GC rows] = B/2
    comps["predicted_all_ratio"] = 1 + fB / ic_med
    comps["paired_fwd_halfB_over_step_ic"] = bu.ratio_ci(times["fwd_nograd_B/2"], ic)
    # phase 2: the target pair alone, timed next to each other for many rounds
    tv, tt = TARGET
    target = None
    if tv in out_variants:
        t_budget = size.target_budget_s if target_budget_s == -1.0 else target_budget_s
        rr2 = bu.round_robin({"ic": fns["ic"], tv: fns[tv], "fwd_nograd_B/2": fns["fwd_nograd_B/2"]},
                             repeats=10 * repeats, warmup=0, per_block=per_block, budget_s=t_budget)
        t2 = rr2["times"]
        ci = bu.ratio_ci(t2[tv], t2["ic"])
        fwd_ci = bu.ratio_ci(t2["fwd_nograd_B/2"], t2["ic"])
        target = {"variant": tv, "at_most": tt, "rounds": rr2["rounds"], "budget_s": t_budget,
                  "paired_ratio": ci, "ratio_of_medians": bu.summarize(t2[tv])["median"] / bu.summarize(t2["ic"])["median"],
                  "ic_median_s": bu.summarize(t2["ic"])["median"], "gc_median_s": bu.summarize(t2[tv])["median"],
                  "fwd_halfB_over_step_ic": fwd_ci, "predicted_from_components": 1 + fwd_ci["median"],
                  "verdict": verdict(ci, tt)}
        wall = time.perf_counter() - t0
    return {
        "model": name, "params": count_parameters(model.net), "batch": batch, "sample_shape": list(shape),
        "sigma_grid_points": len(sigmas), "optimizer": "Adam(lr=1e-4)", "ema_every": ema.every,
        "repeats": rr["rounds"], "steps_per_timing": per_block, "warmup_calls_per_variant": warmup,
        "stopped_early_by_budget": rr["stopped_early"], "budget_s": budget_s, "wall_s": wall,
        "prewarm": warm, "variants": out_variants, "components": comps, "target": target,
    }


def _ci(c: dict | None) -> str:
    return "-" if c is None else f"{bu.fmt(c['median'])} [{bu.fmt(c['lo'])}, {bu.fmt(c['hi'])}]"


def table(result: dict) -> str:
    lines = ["| model | batch | variant | median s/step | min | max | ratio of medians to IC | paired ratio [90% CI] | theory | mean GC rows |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["models"]:
        for v, s in m["variants"].items():
            lines.append(f"| {m['model']} ({m['params'] / 1e6:.1f}M) | {m['batch']} | {v} | {bu.fmt(s['median'], 4)} | "
                         f"{bu.fmt(s['min'], 4)} | {bu.fmt(s['max'], 4)} | {bu.fmt(s['ratio_to_ic'])} | "
                         f"{_ci(s.get('paired_ratio_ci'))} | {bu.fmt(s['theory_ratio'])} | {bu.fmt(s['mean_gc_rows'], 3)} |")
    lines.append("")
    lines.append("Components (same round-robin): the no-grad EMA forward as a fraction of the IC step; the predicted "
                 "GC(0.5, rows)/IC is 1 + fwd(B/2)/step_ic (paired). First-call cost: the predictor is warmed at "
                 "every batch size 1..B before timing (steady state); the extra cost of a first call at a new size is "
                 "what training pays once per size.")
    lines.append("")
    lines.append("| model | timed rounds | fwd(B)/step_ic | fwd(B/2)/step_ic paired [90% CI] | predicted GC0.5 rows | "
                 "predicted whole-batch | first call at a new size: extra ms (median) |")
    lines.append("|---|---|---|---|---|---|---|")
    for m in result["models"]:
        c = m["components"]
        w = m.get("prewarm") or {}
        extra = w.get("first_call_extra_s")
        lines.append(f"| {m['model']} | {m['repeats']} | {bu.fmt(c['fwd_B_over_step_ic'])} | "
                     f"{_ci(c.get('paired_fwd_halfB_over_step_ic'))} | {bu.fmt(c['predicted_gc0.5_rows_ratio'])} | "
                     f"{bu.fmt(c['predicted_all_ratio'])} | {bu.fmt(extra * 1e3 if extra is not None else None, 3)} |")
    targets = [m for m in result["models"] if m.get("target")]
    if targets:
        lines.append("")
        tv, tt = TARGET
        lines.append(f"Target (issue 6): {tv} / IC at most {tt}, paired ratio with its 90% interval:")
        lines.append("")
        for m in targets:
            t = m["target"]
            lines.append(f"- {m['model']} at batch {m['batch']}: {_ci(t['paired_ratio'])} over {t['rounds']} rounds "
                         f"-> **{t['verdict']}** (IC {bu.fmt(t['ic_median_s'], 4)} s, GC {bu.fmt(t['gc_median_s'], 4)} s "
                         f"per step; ratio of medians {bu.fmt(t['ratio_of_medians'])}; the predictor's forward on B/2 "
                         f"rows is {_ci(t['fwd_halfB_over_step_ic'])} of an IC step, so the method's floor here is "
                         f"{bu.fmt(t['predicted_from_components'])})")
    return "\n".join(lines)



def run(models=("digits", "cifar10"), threads: int | None = None, out: Path | None = None, batch: int | None = None,
        repeats: int | None = None, variants=None, budget_s: float | None = -1.0,
        target_budget_s: float | None = -1.0) -> dict:
    threads = bu.pin_threads(threads)
    t0 = time.perf_counter()
    info = bu.machine_info()
    res = {"benchmark": "step_time", "machine": info, "models": []}
    for name in models:
        r = bench_model(name, batch=batch, repeats=repeats, variants=variants, budget_s=budget_s,
                        target_budget_s=target_budget_s)
        res["models"].append(r)
        print(f"[step_time] {name}: " + ", ".join(f"{v} {s['median']:.4f}s x{s['ratio_to_ic']:.3f}"
                                                  for v, s in r["variants"].items()), flush=True)
        if r["target"]:
            t = r["target"]
            print(f"[step_time] {name} target {t['variant']}/IC: {t['paired_ratio']['median']:.3f} "
                  f"[{t['paired_ratio']['lo']:.3f}, {t['paired_ratio']['hi']:.3f}] over {t['rounds']} rounds: "
                  f"{t['verdict']}", flush=True)
    return bu.finish(res, t0, out)


# ------------------------------------------------------------------------------------------ OT prefetch
def bench_ot_prefetch(name: str, batch: int | None = None, repeats: int = 60, budget_s: float | None = 60.0,
                      seed: int = 0) -> dict:
    """OT's step with its pairing solved inside the step ("ot", as without prefetching) and solved ahead on a
    worker thread ("ot_prefetch", ``gclib.prefetch.OTPrefetcher`` as the training loop uses it), each against IC,
    interleaved round-robin on one model. One "ot_prefetch" timing = take this step's pre-solved (x, z, perm), start
    the next step's solve, run the step, then wait until the next solve is done: that is the steady-state cost of a
    step in the loop (the step and the next solve overlap; whatever of the solve the step does not hide is paid).
    The solve alone ("ot_solve": cost matrix + exact assignment on the host) is timed in the same rounds."""
    from gclib.couplings import ot_permutation
    from gclib.data import BatchIterator
    from gclib.prefetch import OTPrefetcher
    size = MODELS[name]
    batch = batch or size.batch
    torch.manual_seed(seed)
    model = ConsistencyModel(size.factory())
    ema = EMA(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = make_data(name, size.shape, batch, seed)
    sigmas = karras_sigmas(11)
    gen = torch.Generator().manual_seed(seed)
    counter = {"step": 0}

    def step(**kw):
        train_step(model, opt, kw.pop("x", x), sigmas, step=counter["step"], ema=ema, generator=gen, **kw)
        counter["step"] += 1

    pre = OTPrefetcher(BatchIterator(x, batch, seed=seed), torch.Generator().manual_seed(seed + 1), "auto")
    zs = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 2))

    def ot_prefetch():
        xb, zb, perm = pre.take()
        step(x=xb, flow="ot", z=zb, ot_perm=perm)
        pre.wait()

    fns = {"ic": lambda: step(flow="ic"), "ot": lambda: step(flow="ot", ot_solver="auto"),
           "ot_prefetch": ot_prefetch, "ot_solve": lambda: ot_permutation(x, zs, "auto")}
    t0 = time.perf_counter()
    try:
        rr = bu.round_robin(fns, repeats=repeats, warmup=2, per_block=1, budget_s=budget_s)
    finally:
        pre.close()
    times = rr["times"]
    out = {v: bu.summarize(times[v]) for v in fns}
    for v in ("ot", "ot_prefetch", "ot_solve"):
        out[v]["paired_ratio_to_ic"] = bu.ratio_ci(times[v], times["ic"])
    out["ot_prefetch"]["paired_ratio_to_ot"] = bu.ratio_ci(times["ot_prefetch"], times["ot"])
    return {"model": name, "params": count_parameters(model.net), "batch": batch, "sample_shape": list(size.shape),
            "torch_threads": torch.get_num_threads(), "rounds": rr["rounds"], "stopped_early_by_budget": rr["stopped_early"],
            "budget_s": budget_s, "wall_s": time.perf_counter() - t0, "variants": out,
            "prefetch_hits": pre.hits, "prefetch_misses": pre.misses}


def ot_prefetch_table(result: dict) -> str:
    lines = ["| model | batch | torch threads | rounds | IC s/step | OT s/step | OT prefetch s/step | OT solve alone s | "
             "OT / IC paired [90% CI] | OT prefetch / IC paired [90% CI] | prefetch / OT paired [90% CI] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["models"]:
        v = m["variants"]
        lines.append(f"| {m['model']} ({m['params'] / 1e6:.2f}M) | {m['batch']} | {m['torch_threads']} | {m['rounds']} | "
                     f"{bu.fmt(v['ic']['median'], 4)} | {bu.fmt(v['ot']['median'], 4)} | "
                     f"{bu.fmt(v['ot_prefetch']['median'], 4)} | {bu.fmt(v['ot_solve']['median'], 4)} | "
                     f"{_ci(v['ot']['paired_ratio_to_ic'])} | {_ci(v['ot_prefetch']['paired_ratio_to_ic'])} | "
                     f"{_ci(v['ot_prefetch']['paired_ratio_to_ot'])} |")
    return "\n".join(lines)


def ot_prefetch_report(res: dict) -> str:
    """results/bench/ot_prefetch.md: machine, method and the table of a run_ot_prefetch result."""
    m = res["machine"]
    return "\n".join([
        "# OT pairing solved ahead (gclib.prefetch) against OT solved inside the step, each paired with IC (CPU)",
        "",
        "Written by `python benchmarks/step_time.py --ot-prefetch` (JSON with every setting next to this file).",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable); torch {m['torch']}, "
        f"scipy {m['scipy']}, POT {m['pot']}. Load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_1_5_15'])}, "
        f"at the end {', '.join(f'{x:.2f}' for x in m.get('loadavg_end', []))} (other processes share the cores); "
        f"run at {m['timestamp_utc']}, wall time {res.get('wall_s', 0):.0f} s.",
        "",
        "Method: IC, OT (pairing solved inside the step, as without prefetching), OT with the pairing solved ahead on a "
        "worker thread (one timing = take the pre-solved pairs, start the next solve, run the step, wait for the next "
        "solve: the steady-state cost of a step in the loop) and the solve alone, interleaved round-robin on one model, "
        "optimiser, EMA and batch; ratios are paired (median over rounds of the per-round ratio) with a 90% bootstrap "
        "interval. No timing is asserted in tests.",
        "",
        "On a CPU the step and the solve compete for the same cores, so solving ahead can hide the solve only in the "
        "time the step leaves cores idle (none on a busy machine); on a GPU the host is idle while the device runs the "
        "step, which is where the overlap pays (the scipy and POT solvers release the GIL).",
        "",
        ot_prefetch_table(res),
        "",
    ])


def run_ot_prefetch(models=("digits",), batches=(128, 512), threads=None, out: Path | None = None,
                    repeats: int = 60, budget_s: float | None = 60.0) -> dict:
    """Every model x batch x torch thread count (``threads``: one count, a list, or None for all usable cores)."""
    counts = threads if isinstance(threads, (list, tuple)) else [threads]
    t0 = time.perf_counter()
    res = {"benchmark": "ot_prefetch", "machine": bu.machine_info(), "models": []}
    for n in counts:
        bu.pin_threads(n)
        for name in models:
            for b in batches:
                r = bench_ot_prefetch(name, batch=b, repeats=repeats, budget_s=budget_s)
                res["models"].append(r)
                v = r["variants"]
                print(f"[ot_prefetch] {name} batch {b}, {r['torch_threads']} threads: OT/IC "
                      f"{v['ot']['paired_ratio_to_ic']['median']:.3f}, OT prefetch/IC "
                      f"{v['ot_prefetch']['paired_ratio_to_ic']['median']:.3f} over {r['rounds']} rounds", flush=True)
    return bu.finish(res, t0, out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["digits", "cifar10"], choices=list(MODELS))
    p.add_argument("--batch", type=int, default=None, help="override every model's batch")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="tiny model, 2 repeats (for tests)")
    p.add_argument("--out", type=Path, default=None, help="default: results/bench/step_time.json, or "
                   "results/bench/ot_prefetch.json with --ot-prefetch")
    p.add_argument("--ot-prefetch", action="store_true", help="OT with its pairing solved inside the step and "
                   "solved ahead on a thread (gclib.prefetch), each against IC; --batch may be given several times")
    p.add_argument("--batches", type=int, nargs="+", default=[128, 512], help="with --ot-prefetch")
    p.add_argument("--thread-counts", type=int, nargs="+", default=None,
                   help="with --ot-prefetch: torch thread counts to run (default: --threads, or all usable cores)")
    p.add_argument("--budget-s", type=float, default=60.0, help="with --ot-prefetch: timed seconds per setting")
    a = p.parse_args(argv)
    if a.ot_prefetch:
        models = ["tiny"] if a.quick else [m for m in a.models if m != "cifar10"] or ["digits"]
        res = run_ot_prefetch(models, [8] if a.quick else a.batches, a.thread_counts or a.threads,
                              a.out or bu.RESULTS_DIR / "ot_prefetch.json", repeats=2 if a.quick else 400,
                              budget_s=None if a.quick else a.budget_s)
        print(ot_prefetch_table(res))
        if not a.quick:
            io.write_text(Path(a.out or bu.RESULTS_DIR / "ot_prefetch.json").with_suffix(".md"), ot_prefetch_report(res))
        return
    a.out = a.out or bu.RESULTS_DIR / "step_time.json"
    if a.quick:
        a.models, a.repeats = ["tiny"], 2
    res = run(a.models, a.threads, a.out, a.batch, a.repeats)
    print(table(res))


if __name__ == "__main__":
    main()
