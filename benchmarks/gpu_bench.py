"""GPU benchmark: the CIFAR-10 paper network (unet_cifar10, ~35M parameters) at batch 512.

Training throughput (samples/s = batch / median step time) and peak memory (torch.cuda.max_memory_allocated,
reset before each timed block) for IC and GC, in three modes:
  fp32             PyTorch defaults (the TF32 flags in effect are recorded in the JSON)
  bf16_cl          torch.autocast(bfloat16) + channels_last model and data
  bf16_cl_compile  the same + torch.compile (online model static; the GC predictor (EMA) compiled with
                   dynamic=True because the number of GC rows changes every step)
Variants per mode: ic, gc0.5_rows (gclib default: predictor on the GC rows only), gc0.5_all (the authors'
whole-batch predictor); in fp32 also ot (exact minibatch OT on the CPU, solver "auto": its real share of a
step at batch 512) and one-step sampling throughput of the EMA model in every mode.
The GC predictor is first warmed at every row count a Binomial(512, 0.5) draw takes (+-5 sd: 199..313 rows),
so the rows-only variant is timed in its steady state (the first-call cost is recorded under "prewarm").
Variants of a mode are interleaved round-robin; warm-up steps (which include compilation) are excluded;
median, min and max of the repeats. Results are written after every mode, so a run cut short keeps what
it measured. A deadline (--deadline seconds from start) skips modes that would not fit.

Usage on a CUDA machine: bash benchmarks/gpu.sh   (writes results/bench/gpu-<card>.json)
CPU dry run (tests):     python benchmarks/gpu_bench.py --dry-run --out-dir /tmp/x
"""
from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import benchutil as bu  # noqa: E402
from gclib.ema import EMA  # noqa: E402
from gclib.nets import UNet, count_parameters, unet_cifar10  # noqa: E402
from gclib.precond import ConsistencyModel  # noqa: E402
from gclib.sampling import one_step  # noqa: E402
from gclib.schedules import SIGMA_MAX, karras_sigmas  # noqa: E402
from gclib.step import train_step  # noqa: E402

VARIANTS = bu.VARIANTS  # one table of step variants for every benchmark (benchutil.py)
MODES = [
    # name, autocast bf16, channels_last, compile, variants, minimum seconds left to start it
    ("fp32", False, False, False, ["ic", "ot", "gc0.5_rows", "gc0.5_all"], 30.0),
    ("bf16_cl", True, True, False, ["ic", "gc0.5_rows", "gc0.5_all"], 30.0),
    ("bf16_cl_compile", True, True, True, ["ic", "gc0.5_rows"], 200.0),
]


def card_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def gpu_info() -> dict:
    info = {}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gb=p.total_memory / 2 ** 30, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), capability=f"{p.major}.{p.minor}",
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32, cudnn_benchmark=torch.backends.cudnn.benchmark)
        try:
            info["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,power.limit,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def build(dry_run: bool, device, channels_last: bool, seed: int = 0):
    torch.manual_seed(seed)
    if dry_run:
        net = UNet(in_channels=3, resolution=32, channels=8, channel_mult=(1, 2, 2), num_blocks=1)
    else:
        net = unet_cifar10()
    model = ConsistencyModel(net).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def run_mode(mode, args, device, result: dict, t_start: float) -> dict:
    name, bf16, cl, compile_, variants, min_left = mode
    left = args.deadline - (time.perf_counter() - t_start)
    out = {"mode": name, "bf16_autocast": bf16, "channels_last": cl, "compile": compile_, "variants": {}}
    if compile_ and args.no_compile:
        out["skipped"] = "--no-compile"
        return out
    if left < min_left:
        out["skipped"] = f"deadline: {left:.0f} s left < {min_left:.0f} s needed"
        return out
    is_cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if is_cuda else (lambda: None)
    model = build(args.dry_run, device, cl)
    ema = EMA(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand((args.batch, 3, 32, 32), generator=g) * 2 - 1).to(device)
    noise = torch.randn((args.batch, 3, 32, 32), generator=g).to(device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
        noise = noise.contiguous(memory_format=torch.channels_last)
    sigmas = karras_sigmas(11)
    step_model, predictor = model, ema.model
    if compile_:
        step_model = torch.compile(model)
        predictor = torch.compile(ema.model, dynamic=True)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    counter = {"step": 0}
    peaks = {}

    def make_step(v):
        kw = dict(VARIANTS[v])

        def run():
            with autocast():
                # generator=None: noise and GC draws on the device from the global seed (no host round trip)
                train_step(step_model, opt, x, sigmas, step=counter["step"], ema=ema, predictor=predictor, **kw)
            counter["step"] += 1
        return run

    def sample_fn():
        with autocast():
            one_step(predictor, noise, SIGMA_MAX)

    fns = {v: make_step(v) for v in variants}
    fns["sample_one_step"] = sample_fn

    def tracked(k, fn):
        def run():
            if is_cuda:
                torch.cuda.reset_peak_memory_stats()
            fn()
            if is_cuda:
                sync()
                peaks[k] = max(peaks.get(k, 0), torch.cuda.max_memory_allocated())
        return run

    t0 = time.perf_counter()
    # steady state for the rows-only predictor: warm it at every GC row count a Binomial(B, 0.5) draw takes
    # (+-5 sd), so kernel set-up at a new size (and, with cudnn.benchmark, autotuning) stays out of the timing
    s_lo = torch.full((args.batch,), float(sigmas[3]), device=device)

    def warm_predictor(xx, ss):
        with autocast():
            return predictor(xx, ss)
    sizes = bu.likely_sizes(args.batch, 0.5)
    out["prewarm"] = bu.prewarm_sizes(warm_predictor, x + s_lo[:, None, None, None] * noise, s_lo, sizes=sizes,
                                      sync=sync)
    warm = {k: tracked(k, f) for k, f in fns.items()}
    for _ in range(args.warmup):  # warm-up (cudnn autotune, compilation), not timed
        for k in fns:
            warm[k]()
    sync()
    out["warmup_s"] = time.perf_counter() - t0
    peaks.clear()
    left = args.deadline - (time.perf_counter() - t_start)
    budget = max(5.0, min(args.mode_budget, left - 20.0))
    rr = bu.round_robin({k: tracked(k, f) for k, f in fns.items()}, repeats=args.repeats, warmup=0,
                        per_block=args.steps_per_timing, budget_s=budget, min_repeats=2, sync=sync)
    ic_med = bu.summarize(rr["times"]["ic"])["median"]
    for k, t in rr["times"].items():
        s = bu.summarize(t)
        s["samples_per_s"] = args.batch / s["median"]
        s["peak_mem_gb"] = peaks.get(k, 0) / 2 ** 30 if is_cuda else None
        s["ratio_to_ic"] = s["median"] / ic_med if k != "sample_one_step" else None
        s["paired_ratio_to_ic"] = bu.paired_ratio(t, rr["times"]["ic"]) if k != "sample_one_step" else None
        out["variants"][k] = s
    out.update(repeats=rr["rounds"], steps_per_timing=args.steps_per_timing, stopped_early=rr["stopped_early"],
               timed_s=time.perf_counter() - t0 - out["warmup_s"])
    del model, ema, opt, step_model, predictor
    if is_cuda:
        torch.cuda.empty_cache()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--steps-per-timing", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3, help="warm-up calls per variant (include compilation)")
    p.add_argument("--deadline", type=float, default=430.0, help="seconds from start; modes that would not fit are skipped")
    p.add_argument("--mode-budget", type=float, default=90.0, help="max seconds of timed rounds per mode")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    p.add_argument("--modes", nargs="+", default=[m[0] for m in MODES], choices=[m[0] for m in MODES])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny U-Net, batch 4, 1 warm-up, 2 repeats, no compile")
    p.add_argument("--out-dir", type=Path, default=bu.RESULTS_DIR)
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    if args.dry_run:
        device = torch.device("cpu")
        args.batch, args.repeats, args.steps_per_timing, args.warmup = 4, 2, 1, 1
        args.no_compile = True
        bu.pin_threads(None)
        card = "dryrun-cpu"
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu_bench.py: no CUDA device (use --dry-run for the CPU path)")
        device = torch.device("cuda")
        # Off by default: with the rows-only GC predictor the batch of the predictor pass changes every step,
        # and cudnn.benchmark would autotune each new size inside the timed steps (a start-up cost, not the
        # steady state). --cudnn-benchmark turns it on for every variant.
        torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
        card = card_slug(torch.cuda.get_device_name(0))
    out_path = args.out_dir / f"gpu-{card}.json"
    result = {"benchmark": "gpu", "machine": {**bu.machine_info(), **gpu_info()}, "batch": args.batch,
              "dry_run": args.dry_run, "model": "tiny UNet (dry run)" if args.dry_run else "unet_cifar10",
              "memory_method": "torch.cuda.max_memory_allocated, reset before each call" if device.type == "cuda"
              else "not measured on CPU", "optimizer": "Adam(lr=1e-4)", "modes": []}
    probe = build(args.dry_run, torch.device("cpu"), False)
    result["params"] = count_parameters(probe.net)
    del probe
    for mode in MODES:
        if mode[0] not in args.modes:
            continue
        print(f"[gpu_bench] mode {mode[0]} ({time.perf_counter() - t_start:.0f} s elapsed)", flush=True)
        try:
            r = run_mode(mode, args, device, result, t_start)
        except Exception as e:  # noqa: BLE001 - record (OOM, compile failure) and go on to the next mode
            r = {"mode": mode[0], "variants": {}, "error": f"{type(e).__name__}: {e}"[:2000],
                 "traceback": traceback.format_exc()[-4000:]}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        result["modes"].append(r)
        result["wall_s"] = time.perf_counter() - t_start
        bu.write_json(out_path, result)  # after every mode: a run cut short keeps what it measured
        for v, s in r.get("variants", {}).items():
            print(f"  {v}: {s['median']:.4f} s, {s['samples_per_s']:.1f} samples/s, peak "
                  f"{s['peak_mem_gb'] if s['peak_mem_gb'] is not None else '-'} GB, ratio {s['ratio_to_ic']}", flush=True)
        if r.get("skipped") or r.get("error"):
            print(f"  {r.get('skipped') or r.get('error')}", flush=True)
    print(f"[gpu_bench] wrote {out_path} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
