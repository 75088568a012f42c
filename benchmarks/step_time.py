"""Median time of a full training step (loss, backward, optimiser, EMA) for each flow, runs interleaved.

Variants, on the same model, optimiser, EMA and data batch:
  ic, ot (exact minibatch OT, solver "auto"), gc mu=0.5 and mu=1.0, each with the GC-rows-only predictor
  ("rows", gclib's default) and the authors' whole-batch predictor ("all", predict_all=True).
Component timings in the same round-robin explain the ratios: the no-grad EMA forward on the whole batch and
on half of it (what the predictor costs), so the expected GC/IC is 1 + E[fwd(#GC rows)] / step_ic.

Theory (a step ~ 1 forward with grad + backward (~3 forward units) + 1 no-grad target forward = 4 units):
GC rows-only adds mu units on mu*B rows -> 1 + mu/4 (1.125 at mu 0.5, 1.25 at mu 1); whole batch -> 1.25.

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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import benchutil as bu  # noqa: E402
from gclib.ema import EMA  # noqa: E402
from gclib.nets import UNet, count_parameters, unet_cifar10, unet_digits  # noqa: E402
from gclib.precond import ConsistencyModel  # noqa: E402
from gclib.schedules import karras_sigmas  # noqa: E402
from gclib.step import train_step  # noqa: E402

# name -> (network factory, sample shape, default batch, repeats, steps per timing, warm-up, budget seconds)
# The budget (timed rounds only, at least 3 rounds) keeps `make bench` within a few minutes on 2 busy cores.
MODELS = {
    "digits": (unet_digits, (1, 8, 8), 128, 11, 3, 2, 40.0),
    "cifar10": (unet_cifar10, (3, 32, 32), 8, 5, 1, 1, 75.0),
    # for tests: a very small U-Net
    "tiny": (lambda: UNet(in_channels=1, resolution=8, channels=8, channel_mult=(1, 2), num_blocks=1,
                          attn_resolutions=(4,)), (1, 8, 8), 8, 2, 1, 1, None),
}

# variant -> train_step keywords
VARIANTS = {
    "ic": dict(flow="ic"),
    "ot": dict(flow="ot", ot_solver="auto"),
    "gc0.5_rows": dict(flow="gc", mu=0.5, predict_all=False),
    "gc0.5_all": dict(flow="gc", mu=0.5, predict_all=True),
    "gc1_rows": dict(flow="gc", mu=1.0, predict_all=False),
    "gc1_all": dict(flow="gc", mu=1.0, predict_all=True),
}
# default variants per model: on the 35M CIFAR-10 U-Net gc1_all is left out (same work as gc1_rows: at mu = 1
# every row is a GC row, so both run the predictor on the whole batch) to save CPU time
DEFAULT_VARIANTS = {"cifar10": ["ic", "ot", "gc0.5_rows", "gc0.5_all", "gc1_rows"]}
THEORY = {"ic": 1.0, "ot": None, "gc0.5_rows": 1.125, "gc0.5_all": 1.25, "gc1_rows": 1.25, "gc1_all": 1.25}


def make_data(name: str, shape, batch: int, seed: int = 0) -> torch.Tensor:
    if name == "digits":
        from sklearn.datasets import load_digits
        d = torch.as_tensor(load_digits().data, dtype=torch.float32) / 8.0 - 1.0  # [0, 16] -> [-1, 1]
        idx = torch.randperm(d.shape[0], generator=torch.Generator().manual_seed(seed))[:batch]
        return d[idx].reshape(batch, *shape)
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *shape), generator=g) * 2 - 1


def bench_model(name: str, batch: int | None = None, repeats: int | None = None, variants=None,
                budget_s: float | None = -1.0, seed: int = 0) -> dict:
    factory, shape, b0, reps0, per_block, warmup, budget0 = MODELS[name]
    batch = batch or b0
    repeats = repeats or reps0
    budget_s = budget0 if budget_s == -1.0 else budget_s
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

    def fwd(rows):
        def run():
            with torch.no_grad():
                ema.model(x[:rows] + s_lo[:rows, None, None, None] * z[:rows], s_lo[:rows])
        return run
    fns["fwd_nograd_B"] = fwd(batch)
    fns[f"fwd_nograd_B/2"] = fwd(half)

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
    return {
        "model": name, "params": count_parameters(model.net), "batch": batch, "sample_shape": list(shape),
        "sigma_grid_points": len(sigmas), "optimizer": "Adam(lr=1e-4)", "ema_every": ema.every,
        "repeats": rr["rounds"], "steps_per_timing": per_block, "warmup_calls_per_variant": warmup,
        "stopped_early_by_budget": rr["stopped_early"], "budget_s": budget_s, "wall_s": wall,
        "variants": out_variants, "components": comps,
    }


def table(result: dict) -> str:
    lines = ["| model | batch | variant | median s/step | min | max | GC/IC or OT/IC (ratio of medians) | paired ratio | theory | mean GC rows |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["models"]:
        for v, s in m["variants"].items():
            lines.append(f"| {m['model']} ({m['params'] / 1e6:.1f}M) | {m['batch']} | {v} | {bu.fmt(s['median'], 4)} | "
                         f"{bu.fmt(s['min'], 4)} | {bu.fmt(s['max'], 4)} | {bu.fmt(s['ratio_to_ic'])} | "
                         f"{bu.fmt(s['paired_ratio_to_ic'])} | {bu.fmt(s['theory_ratio'])} | {bu.fmt(s['mean_gc_rows'], 3)} |")
    lines.append("")
    lines.append("Components (same round-robin): no-grad EMA forward as a fraction of the IC step; "
                 "predicted GC(0.5, rows)/IC = 1 + fwd(B/2)/step_ic.")
    lines.append("")
    lines.append("| model | fwd(B)/step_ic | fwd(B/2)/step_ic | predicted GC0.5 rows | predicted whole-batch |")
    lines.append("|---|---|---|---|---|")
    for m in result["models"]:
        c = m["components"]
        lines.append(f"| {m['model']} | {bu.fmt(c['fwd_B_over_step_ic'])} | {bu.fmt(c['fwd_halfB_over_step_ic'])} | "
                     f"{bu.fmt(c['predicted_gc0.5_rows_ratio'])} | {bu.fmt(c['predicted_all_ratio'])} |")
    return "\n".join(lines)


def run(models=("digits", "cifar10"), threads: int | None = None, out: Path | None = None, batch: int | None = None,
        repeats: int | None = None, variants=None, budget_s: float | None = -1.0) -> dict:
    threads = bu.pin_threads(threads)
    t0 = time.perf_counter()
    info = bu.machine_info()
    res = {"benchmark": "step_time", "machine": info, "models": []}
    for name in models:
        r = bench_model(name, batch=batch, repeats=repeats, variants=variants, budget_s=budget_s)
        res["models"].append(r)
        print(f"[step_time] {name}: " + ", ".join(f"{v} {s['median']:.4f}s x{s['ratio_to_ic']:.3f}"
                                                  for v, s in r["variants"].items()), flush=True)
    return bu.finish(res, t0, out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["digits", "cifar10"], choices=list(MODELS))
    p.add_argument("--batch", type=int, default=None, help="override every model's batch")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="tiny model, 2 repeats (for tests)")
    p.add_argument("--out", type=Path, default=bu.RESULTS_DIR / "step_time.json")
    a = p.parse_args(argv)
    if a.quick:
        a.models, a.repeats = ["tiny"], 2
    res = run(a.models, a.threads, a.out, a.batch, a.repeats)
    print(table(res))


if __name__ == "__main__":
    main()
