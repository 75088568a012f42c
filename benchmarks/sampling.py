"""One-step sampling throughput (samples/s) and peak memory: x = f_ema(sigma_max z, sigma_max).

Throughput: every configuration (model x batch) in one process, timed round-robin, median of repeats.
Peak memory (CPU): each configuration runs once more in its own subprocess; after the model and the noise
are built and one warm-up sample at batch 1, the process's peak RSS is reset to its current RSS (Linux:
/proc/self/clear_refs), then one sample runs at the full batch and ru_maxrss (resource.getrusage) is read.
peak_delta_mb = peak - RSS before = the extra memory the sampling needs (activations; no autograd, sampling
runs under no_grad). Where the reset is unavailable and the sample did not raise the earlier peak, the
figure is only an upper bound; it is flagged then.

Usage: python benchmarks/sampling.py [--quick] [--out results/bench/sampling.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import benchutil as bu  # noqa: E402
from gclib import nets  # noqa: E402
from gclib.data import get_dataset  # noqa: E402
from gclib.nets import UNet, count_parameters  # noqa: E402
from gclib.precond import ConsistencyModel  # noqa: E402
from gclib.sampling import one_step  # noqa: E402

# each data set's default model preset and item shape, from gclib.data's registry
NETS = {name: (getattr(nets, get_dataset(name).model), get_dataset(name).shape) for name in ("digits", "cifar10")}
NETS["tiny"] = (lambda: UNet(in_channels=1, resolution=8, channels=8, channel_mult=(1, 2), num_blocks=1,
                             attn_resolutions=(4,)), (1, 8, 8))
CONFIGS = [("digits", 128), ("digits", 1024), ("cifar10", 8), ("cifar10", 32)]
QUICK_CONFIGS = [("tiny", 4), ("tiny", 16)]


def build(name: str, batch: int, seed: int = 0):
    factory, shape = NETS[name]
    torch.manual_seed(seed)
    model = ConsistencyModel(factory()).eval().requires_grad_(False)
    noise = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))
    return model, noise


def memory_child(name: str, batch: int) -> dict:
    """Run in a fresh process: RSS before, one sample, peak RSS after."""
    model, noise = build(name, batch)
    one_step(model, noise[:1])  # warm-up at batch 1 (lazy init, kernels) before the reading
    reset = bu.reset_peak_rss()
    before, peak_before = bu.current_rss_mb(), bu.maxrss_mb()
    one_step(model, noise)
    peak = bu.maxrss_mb()
    return {"rss_before_mb": before, "maxrss_before_mb": peak_before, "maxrss_after_mb": peak, "peak_reset": reset,
            "peak_delta_mb": peak - before, "upper_bound_only": (not reset) and peak <= peak_before}


def measure_memory(name: str, batch: int, threads: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", name, str(batch), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(configs=CONFIGS, threads=None, repeats: int = 5, out: Path | None = None, budget_s: float = 60.0) -> dict:
    threads = bu.pin_threads(threads)
    t0 = time.perf_counter()
    built = {f"{n}@{b}": (n, b, *build(n, b)) for n, b in configs}
    fns = {k: (lambda m=m, z=z: one_step(m, z)) for k, (_, _, m, z) in built.items()}
    rr = bu.round_robin(fns, repeats=repeats, warmup=1, budget_s=budget_s)
    rows = []
    for k, (name, batch, model, _) in built.items():
        s = bu.summarize(rr["times"][k])
        row = {"model": name, "params": count_parameters(model.net), "batch": batch, "s_per_batch": s,
               "samples_per_s": batch / s["median"], "samples_per_s_min": batch / s["max"],
               "samples_per_s_max": batch / s["min"]}
        row["memory"] = measure_memory(name, batch, threads)
        rows.append(row)
        print(f"[sampling] {k}: {row['samples_per_s']:.1f} samples/s, peak +{row['memory'].get('peak_delta_mb', float('nan')):.1f} MB",
              flush=True)
    res = {"benchmark": "sampling", "machine": bu.machine_info(), "repeats": rr["rounds"],
           "memory_method": "CPU: fresh subprocess per configuration; peak RSS reset (/proc/self/clear_refs) after "
                            "a batch-1 warm-up, then resource.getrusage ru_maxrss after one sample minus the RSS "
                            "before it",
           "rows": rows, "wall_s": time.perf_counter() - t0}
    if out is not None:
        bu.write_json(out, res)
    return res


def table(res: dict) -> str:
    lines = ["| model | batch | samples/s (median) | min-max samples/s | s per batch | peak extra memory MB (RSS) |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        mem = r["memory"].get("peak_delta_mb")
        flag = " (upper bound)" if r["memory"].get("upper_bound_only") else ""
        lines.append(f"| {r['model']} ({r['params'] / 1e6:.1f}M) | {r['batch']} | {bu.fmt(r['samples_per_s'], 4)} | "
                     f"{bu.fmt(r['samples_per_s_min'], 4)}-{bu.fmt(r['samples_per_s_max'], 4)} | "
                     f"{bu.fmt(r['s_per_batch']['median'], 4)} | {bu.fmt(mem, 4)}{flag} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="tiny model (for tests)")
    p.add_argument("--memory-child", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=bu.RESULTS_DIR / "sampling.json")
    a = p.parse_args(argv)
    if a.memory_child:
        bu.pin_threads(a.threads)
        print(json.dumps(memory_child(a.memory_child[0], int(a.memory_child[1]))))
        return
    if a.quick:
        res = run(QUICK_CONFIGS, a.threads, repeats=2, out=a.out)
    else:
        res = run(CONFIGS, a.threads, repeats=a.repeats, out=a.out)
    print(table(res))


if __name__ == "__main__":
    main()
