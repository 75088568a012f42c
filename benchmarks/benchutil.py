"""Shared helpers for the benchmarks: thread pinning, machine info, round-robin timing, summaries, JSON.

Every benchmark pins ``torch.set_num_threads``, excludes warm-up iterations, interleaves the variants it
compares (round-robin, with the order rotated every round so no variant always runs first) and reports
the median with min and max of the repeats. Ratios are always taken between variants of the same run.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, Optional

from gclib import io

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "results" / "bench"
# The training-step variants every step-time benchmark (CPU and GPU) measures: name -> train_step keywords.
VARIANTS = {
    "ic": dict(flow="ic"),
    "ot": dict(flow="ot", ot_solver="auto"),
    "gc0.5_rows": dict(flow="gc", mu=0.5, predict_all=False),
    "gc0.5_all": dict(flow="gc", mu=0.5, predict_all=True),
    "gc1_rows": dict(flow="gc", mu=1.0, predict_all=False),
    "gc1_all": dict(flow="gc", mu=1.0, predict_all=True),
}


def pin_threads(n: Optional[int] = None) -> int:
    """Pin torch's intra-op threads to ``n`` (default: all CPUs this process may use); returns the value."""
    import torch
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(int(n))
    return torch.get_num_threads()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(mod: str) -> Optional[str]:
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "unknown")
    except Exception:  # noqa: BLE001 - a missing optional package is reported as None
        return None


def machine_info() -> dict:
    """CPU model, cores, library versions, torch threads, load average (a busy machine shows up here)."""
    import torch
    info = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "scipy": _version("scipy"),
        "pot": _version("ot"),
        "cuda_available": bool(torch.cuda.is_available()),
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def summarize(times) -> dict:
    """Median, min, max (seconds) and the count of a list of timings."""
    times = [float(t) for t in times]
    if not times:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def round_robin(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1, per_block: int = 1,
                budget_s: Optional[float] = None, min_repeats: int = 3,
                sync: Optional[Callable[[], None]] = None) -> dict:
    """Time each callable ``repeats`` times, interleaved round-robin; each timing is the mean of ``per_block``
    consecutive calls. ``warmup`` calls of each (also interleaved) are run first and not timed.

    If ``budget_s`` is given, stops after the round in which the budget is exceeded (but not before
    ``min_repeats`` rounds). Returns {"times": {name: [s per call, ...]}, "rounds": int, "stopped_early": bool,
    "orders": first round's order}.
    """
    sync = sync or (lambda: None)
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync()
    times = {name: [] for name in names}
    t_start = time.perf_counter()
    rounds, stopped = 0, False
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn = fns[name]
            sync()
            t0 = time.perf_counter()
            for _ in range(per_block):
                fn()
            sync()
            times[name].append((time.perf_counter() - t0) / per_block)
        rounds += 1
        if budget_s is not None and rounds >= min_repeats and time.perf_counter() - t_start > budget_s and r < repeats - 1:
            stopped = True
            break
    return {"times": times, "rounds": rounds, "stopped_early": stopped}


def prewarm_sizes(predictor, x, sigma, sizes=None, sync: Optional[Callable[[], None]] = None) -> dict:
    """Call the no-grad ``predictor(x[:n], sigma[:n])`` twice at every batch size n in ``sizes`` (default
    1..B: every size the rows-only GC predictor can meet). The first call at a new size builds its kernels
    (oneDNN primitives; cuDNN plans; autotuning under cudnn.benchmark), which training pays once per size.
    Returns the median time of the first and second calls and the median extra cost of a first call."""
    import torch
    sync = sync or (lambda: None)
    sizes = list(sizes) if sizes is not None else list(range(1, x.shape[0] + 1))
    first, second = [], []
    for n in sizes:
        for bucket in (first, second):
            sync()
            t0 = time.perf_counter()
            with torch.no_grad():
                predictor(x[:n], sigma[:n])
            sync()
            bucket.append(time.perf_counter() - t0)
    return {"sizes": len(sizes), "size_range": [min(sizes), max(sizes)] if sizes else None,
            "first_call_median_s": summarize(first)["median"], "second_call_median_s": summarize(second)["median"],
            "first_call_extra_s": statistics.median(a - b for a, b in zip(first, second)) if sizes else None}


def likely_sizes(batch: int, mu: float, sds: float = 5.0) -> range:
    """The GC row counts a Binomial(batch, mu) draw takes with all but negligible probability: mean +- ``sds``
    standard deviations, clipped to 1..batch."""
    mean, sd = batch * mu, (batch * mu * (1 - mu)) ** 0.5
    return range(max(1, int(mean - sds * sd)), min(batch, int(mean + sds * sd) + 1) + 1)


def _round_ratios(num: list, den: list) -> list:
    """num[r] / den[r] for every round r (the two timed in the same round, next to each other)."""
    return [a / b for a, b in zip(num, den) if b > 0]


def paired_ratio(num: list, den: list) -> Optional[float]:
    """Median over rounds of num[r] / den[r]."""
    pairs = _round_ratios(num, den)
    return statistics.median(pairs) if pairs else None


def ratio_ci(num: list, den: list, level: float = 0.9, n_boot: int = 2000, seed: int = 0) -> Optional[dict]:
    """Paired ratio with a bootstrap confidence interval: the per-round ratios num[r] / den[r], their median,
    and the ``level`` percentile interval of that median over ``n_boot`` resamples of the rounds (fixed seed,
    so a result file can be recomputed). Returns {"median", "lo", "hi", "level", "rounds"} or None."""
    import random
    pairs = _round_ratios(num, den)
    if not pairs:
        return None
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(pairs, k=len(pairs))) for _ in range(n_boot))
    tail = (1.0 - level) / 2.0
    lo = meds[int(tail * (n_boot - 1))]
    hi = meds[int(round((1.0 - tail) * (n_boot - 1)))]
    return {"median": statistics.median(pairs), "lo": lo, "hi": hi, "level": level, "rounds": len(pairs)}


def maxrss_mb() -> float:
    """Peak resident set size of this process (MB): VmHWM from /proc/self/status where it exists (it is what
    ``reset_peak_rss`` resets), else ru_maxrss. ru_maxrss is not used on Linux: it also keeps the peak of the
    process image before exec (a child spawned by a large parent inherits the parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2 ** 20


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs; this
    resets VmHWM, which ``maxrss_mb`` reads). Returns False where that is unavailable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    """Current resident set size (MB), from /proc/self/statm; falls back to the peak where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError):
        return maxrss_mb()


def finish(res: dict, t0: float, out: Path | None) -> dict:
    """Record the end load average and wall time of a benchmark's result, and write it when ``out`` is given."""
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    res["wall_s"] = time.perf_counter() - t0
    if out is not None:
        write_json(out, res)
    return res


def write_json(path: Path, obj: dict) -> Path:
    """JSON in the benchmark's own key order, written atomically (``gclib.io``)."""
    return io.write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=float) + "\n")


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.{digits}f}"
    return str(x)


def ct_cd_gap_model():
    """The ct_cd_gap cpu profile (params/ct_cd_gap/cpu.yaml) and its trained IC digits model, from the run cache
    (trained once if missing): (params, model, data, info) as ``gclib.experiments.references.trained`` gives them."""
    import yaml
    from gclib.experiments import common, references
    p = yaml.safe_load((REPO / "params" / "ct_cd_gap" / "cpu.yaml").read_text())
    cfg = common.train_config(p["dataset"], "ic", steps=p["train_steps"], seed=p["seed"], **p["train_overrides"])
    return (p, *references.trained(cfg))

