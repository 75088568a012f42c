"""Where a digits training step spends its time on one GPU: the 0.6M-parameter U-Net at batch 64 (cpu_long's
settings), one process per run. Measures, in one call:

- ``single``: the step time of one process alone, per flow (ic, ot, gc), eager;
- ``compile``: the same for ic with ``compile: true`` (torch.compile of the network), after its warm-up;
- ``share``: n processes at once (ic, distinct seeds): each one's step time and the steps per second they make
  together, for n in ``--share``; ``mps``: the same under CUDA's multi-process service, where the processes'
  kernels run side by side instead of taking turns on the GPU;
- ``profile``: the CUDA kernels launched and the CPU time per eager step (torch.profiler over 20 steps, or
  ``--steps`` if fewer);
- ``stack``: one process training a stack of K runs (``gclib.stack``: the K networks evaluated as one), for K in
  ``--stack``: the time of a step of all K and the run-steps per second it makes; ``stack_profile``: the kernels
  of one such step (the largest K); ``stack_share``: n processes, each a stack of 10, for n in ``--stack-share``.

Step times are the median of the training loop's own per-step times (metrics.csv, setup and the first 20% of
steps left out). Prints one JSON line per measurement and writes them all to ``--out``.

    python benchmarks/gpu_digits_step.py --out gpu_digits_step.json            # on a CUDA machine
    python benchmarks/gpu_digits_step.py --device cpu --steps 20 --share 2 --modes single,share   # CPU dry-run

Every measurement runs in fresh spawned processes, so this one never initialises CUDA and MPS can start between
them. Measured on an H200 (2026-11-30, without MPS): one process 50 ms per step (about 2000 kernels and 6800
aten calls a step: launch-bound); 4 processes 78 steps/s together, 12 processes 139 steps/s (86 ms each, the GPU
busy 100% of the time: without MPS the processes' kernels take turns); compile: true 51 ms.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _config(flow: str, seed: int, steps: int, device: str, runs_dir: str, compile_: bool = False):
    from gclib.config import load_config
    return load_config(ROOT / "params" / "train" / "digits.yaml", {
        "total_steps": steps, "batch_size": 64, "lr": 5.0e-4, "s1": 160, "seed": seed, "device": device,
        "checkpoint_every": steps, "keep_checkpoints": 1, "sample_every": 0, "eval_every": 0, "eval_metrics": [],
        "runs_dir": runs_dir, "compile": compile_, "name": f"step-{flow}-s{seed}" + ("-compile" if compile_ else "")},
        flow=flow)


def _step_times(run_dir: Path, skip: float = 0.2) -> list[float]:
    import csv
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    el = [float(r["seconds"]) for r in rows]   # cumulative step time
    dts = [b - a for a, b in zip(el, el[1:])]
    return dts[int(len(dts) * skip):]


def run_one(flow: str, seed: int, steps: int, device: str, runs_dir: str, compile_: bool = False) -> dict:
    import torch
    torch.set_num_threads(1)
    from gclib.train import train
    t = time.perf_counter()
    res = train(_config(flow, seed, steps, device, runs_dir, compile_))
    wall = time.perf_counter() - t
    dts = _step_times(Path(res.run_dir))
    return {"flow": flow, "seed": seed, "steps": steps, "compile": compile_, "wall_s": round(wall, 2),
            "step_ms": round(1e3 * statistics.median(dts), 3)}


def run_stack(k: int, steps: int, device: str, runs_dir: str, seed0: int = 500) -> dict:
    """One process training a stack of ``k`` IC runs (distinct seeds): the time of one step of all ``k``."""
    import torch
    torch.set_num_threads(1)
    from gclib.stack import train_stack
    t = time.perf_counter()
    res = train_stack([_config("ic", seed0 + i, steps, device, runs_dir) for i in range(k)])
    wall = time.perf_counter() - t
    step_ms = 1e3 * statistics.median(_step_times(Path(res[0].run_dir)))  # every run of a stack logs the same step
    return {"what": "stack", "runs": k, "steps": steps, "wall_s": round(wall, 2), "step_ms": round(step_ms, 3),
            "run_steps_per_s": round(k * 1e3 / step_ms, 1)}


def _train_k(k: int, seed0: int, steps: int, device: str, runs_dir: str, flow: str = "ic"):
    from gclib.stack import train_stack
    from gclib.train import train
    cfgs = [_config(flow, seed0 + i, steps, device, runs_dir) for i in range(k)]
    return train(cfgs[0]) if k == 1 else train_stack(cfgs)


def profile(flow: str, device: str, runs_dir: str, steps: int = 20, k: int = 1) -> dict:
    """Kernels and CPU time per eager step (of one run, or of a stack of ``k``), from torch.profiler around
    ``steps`` steps (after 30 warm-up steps on a GPU, 2 on a CPU)."""
    import torch
    from torch.profiler import ProfilerActivity, profile as tprofile
    torch.set_num_threads(1)
    _train_k(k, 99 * 100, 30 if device == "cuda" else 2, device, runs_dir, flow)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with tprofile(activities=acts) as prof:
        t = time.perf_counter()
        _train_k(k, 98 * 100, steps, device, runs_dir, flow)
        wall = time.perf_counter() - t
    ev = prof.key_averages()
    kernels = sum(e.count for e in ev if getattr(e, "device_type", None) is not None
                  and str(e.device_type).endswith("CUDA"))
    top = sorted(ev, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {"what": "profile" if k == 1 else "stack_profile", "flow": flow, "runs": k, "steps": steps,
            "wall_s": round(wall, 2), "cuda_kernels_per_step": round(kernels / steps, 1),
            "aten_ops_per_step": round(sum(e.count for e in ev if e.key.startswith("aten::")) / steps, 1),
            "top_self_cpu_ms_per_step": {e.key: round(e.self_cpu_time_total / 1e3 / steps, 3) for e in top}}


class MPS:
    """The CUDA multi-process service for the measurements inside the block (kernels of different processes run
    side by side instead of taking turns); ``ok`` is False where it could not be started (then nothing changes)."""

    def __enter__(self):
        import os
        import shutil
        import subprocess
        self.dir = tempfile.mkdtemp(prefix="mps-")
        self.env = {"CUDA_MPS_PIPE_DIRECTORY": f"{self.dir}/pipe", "CUDA_MPS_LOG_DIRECTORY": f"{self.dir}/log"}
        for d in self.env.values():
            os.makedirs(d)
        exe = shutil.which("nvidia-cuda-mps-control")
        self.ok = bool(exe) and subprocess.run([exe, "-d"], env={**os.environ, **self.env}).returncode == 0
        if self.ok:
            os.environ.update(self.env)
        return self

    def __exit__(self, *exc):
        import os
        import subprocess
        if self.ok:
            subprocess.run(["nvidia-cuda-mps-control"], input=b"quit\n", env={**os.environ, **self.env})
            for k in self.env:
                os.environ.pop(k, None)
            time.sleep(1)


def _in_children(fn, calls: list) -> list:
    """``fn(*call)`` for each call, all at once, each in its own spawned process (this one never touches CUDA)."""
    with mp.get_context("spawn").Pool(len(calls)) as pool:
        return pool.starmap(fn, calls)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--share", type=int, nargs="*", default=[4, 12])
    ap.add_argument("--stack", type=int, nargs="*", default=[5, 10, 15], help="stack sizes (mode stack)")
    ap.add_argument("--stack-share", type=int, nargs="*", default=[3], help="processes (mode stack_share)")
    ap.add_argument("--modes", default="single,profile,share,mps,compile,stack,stack_profile,stack_share",
                    help="comma-separated: single, profile, share, mps (share under MPS), compile, stack, "
                         "stack_profile, stack_share")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    modes = set(a.modes.split(","))
    unknown = modes - {"single", "profile", "share", "mps", "compile", "stack", "stack_profile", "stack_share"}
    if unknown:
        raise SystemExit(f"gpu_digits_step.py: unknown mode(s) {sorted(unknown)}")
    if a.device == "cuda" and not _in_children(_cuda_available, [()])[0]:
        raise SystemExit("gpu_digits_step.py: no CUDA device here (use --device cpu for the dry-run)")
    rows = []
    machine = _in_children(_machine, [(a.device,)])[0]

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.out:
            Path(a.out).write_text(json.dumps({"machine": machine, "steps": a.steps, "rows": rows}, indent=1) + "\n")

    def share(n, mps):
        t = time.perf_counter()
        out = _in_children(run_one, [("ic", (300 if mps else 100) + 10 * n + i, a.steps, a.device, tmp)  # fresh runs
                                      for i in range(n)])
        ms = [o["step_ms"] for o in out]
        emit({"what": "share", "mps": mps, "processes": n, "step_ms_median": statistics.median(ms),
              "steps_per_s_together": round(sum(1e3 / m for m in ms), 1), "wall_s": round(time.perf_counter() - t, 2)})

    with tempfile.TemporaryDirectory() as tmp:
        if "single" in modes:
            for flow in ("ic", "ot", "gc"):
                emit({"what": "single", **_in_children(run_one, [(flow, 0, a.steps, a.device, tmp)])[0]})
        if "profile" in modes:
            emit(_in_children(profile, [("ic", a.device, tmp, min(20, a.steps))])[0])
        if "share" in modes:
            for n in a.share:
                share(n, False)
        if "mps" in modes and a.device == "cuda":
            with MPS() as m:
                if not m.ok:
                    emit({"what": "share", "mps": "could not be started"})
                else:
                    for n in a.share:
                        share(n, True)
        if "compile" in modes:
            emit({"what": "compile", **_in_children(run_one, [("ic", 1, a.steps, a.device, tmp, True)])[0]})
        if "stack" in modes:
            for k in a.stack:
                emit(_in_children(run_stack, [(k, a.steps, a.device, tmp, 1000 * k)])[0])
        if "stack_profile" in modes:
            emit(_in_children(profile, [("ic", a.device, tmp, min(20, a.steps), max(a.stack))])[0])
        if "stack_share" in modes:
            for n in a.stack_share:
                t = time.perf_counter()
                out = _in_children(run_stack, [(10, a.steps, a.device, tmp, 50_000 + 100 * i) for i in range(n)])
                emit({"what": "stack_share", "processes": n, "runs": 10 * n,
                      "step_ms_median": statistics.median(o["step_ms"] for o in out),
                      "run_steps_per_s_together": round(sum(o["run_steps_per_s"] for o in out), 1),
                      "wall_s": round(time.perf_counter() - t, 2)})
    return 0


def _machine(device: str) -> dict:
    import platform
    import torch
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    return {"device": device, "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
            "cpus": mp.cpu_count(), "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
