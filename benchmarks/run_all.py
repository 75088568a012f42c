"""Run the CPU benchmarks (step time, OT scaling, sampling) and write results/bench/*.json and README.md.

`make bench` calls this. It takes about 7 minutes on 2 CPU cores (416 s measured). GPU results
(benchmarks/gpu.sh, written to results/bench/gpu-<card>.json on a CUDA machine) are added to the README table
when present.

Usage: python benchmarks/run_all.py [--quick] [--out-dir results/bench] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchutil as bu  # noqa: E402
from gclib.io import relative_to_cwd  # noqa: E402
import ot_scaling  # noqa: E402
import sampling  # noqa: E402
import step_time  # noqa: E402
import thread_share  # noqa: E402


def _json_files(out_dir: Path, pattern: str):
    """(path, content) of each readable JSON file matching ``pattern`` in ``out_dir``, by name."""
    for p in sorted(out_dir.glob(pattern)):
        try:
            yield p, json.loads(p.read_text())
        except (OSError, ValueError):
            continue


def gpu_tables(out_dir: Path) -> str:
    parts = []
    for p, g in _json_files(out_dir, "gpu-*.json"):
        if g.get("dry_run"):
            continue
        parts.append(f"### {p.name} ({g.get('machine', {}).get('gpu', '?')}, torch {g.get('machine', {}).get('torch', '?')}, "
                     f"batch {g.get('batch')})\n")
        parts.append("| mode | variant | median s/step | min | max | samples/s | peak memory GB (max_memory_allocated) | ratio to IC |")
        parts.append("|---|---|---|---|---|---|---|---|")
        for mode in g.get("modes", []):
            for v, s in mode.get("variants", {}).items():
                parts.append(f"| {mode['mode']} | {v} | {bu.fmt(s.get('median'), 4)} | {bu.fmt(s.get('min'), 4)} | "
                             f"{bu.fmt(s.get('max'), 4)} | {bu.fmt(s.get('samples_per_s'), 4)} | "
                             f"{bu.fmt(s.get('peak_mem_gb'), 3)} | {bu.fmt(s.get('ratio_to_ic'))} |")
            if mode.get("skipped"):
                parts.append(f"| {mode['mode']} | skipped: {mode['skipped']} | | | | | | |")
        parts.append("")
    return "\n".join(parts)


def gpu_digits_tables(out_dir: Path) -> str:
    """The digits step on a GPU (benchmarks/gpu_digits_step.py's gpu_digits_step-<card>.json)."""
    parts = []
    for p, g in _json_files(out_dir, "gpu_digits_step-*.json"):
        m = g.get("machine", {})
        if m.get("device") != "cuda":
            continue
        parts.append(f"### {p.name} ({m.get('gpu', '?')}, torch {m.get('torch', '?')}, {m.get('cpus', '?')} CPUs, "
                     f"{g.get('steps')} steps a run, batch 64)\n")
        if m.get("code"):
            parts.append(f"Code: {m['code']}.\n")
        parts.append("| measurement | processes | MPS | ms per step (median) | steps/s together | notes |")
        parts.append("|---|---|---|---|---|---|")
        for r in g.get("rows", []):
            if r["what"] in ("single", "compile"):
                parts.append(f"| {r['what']} {r['flow']} | 1 | no | {r['step_ms']:.1f} | "
                             f"{1e3 / r['step_ms']:.1f} | {'torch.compile' if r.get('compile') else 'eager'} |")
            elif r["what"] == "share" and "processes" in r:
                parts.append(f"| share ic | {r['processes']} | {'yes' if r.get('mps') else 'no'} | "
                             f"{r['step_ms_median']:.1f} | {r['steps_per_s_together']:.1f} | |")
            elif r["what"] == "share":
                parts.append(f"| share ic | | {r.get('mps')} | | | |")
            elif r["what"] in ("profile", "stack_profile"):
                k = r.get("runs", 1)
                parts.append(f"| {'profile ' + r['flow'] if k == 1 else f'profile stack of {k}'} | 1 | no | | | "
                             f"{r['cuda_kernels_per_step']} CUDA kernels and {r.get('aten_ops_per_step', '?')} aten "
                             f"calls a step{'' if k == 1 else f' of all {k}'} |")
            elif r["what"] in ("stack", "stack_share"):
                n = r.get("processes", 1)
                k = r["runs"] // n
                parts.append(f"| {n} stack(s) of {k} ic | {n} | no | {r.get('step_ms', r.get('step_ms_median')):.1f} "
                             f"(all {k}) | {r.get('run_steps_per_s', r.get('run_steps_per_s_together')):.1f} | "
                             f"gclib.stack |")
        parts.append("")
    return "\n".join(parts)


def readme(st: dict, ot: dict, sa: dict, wall: float, out_dir: Path) -> str:
    m = st["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `benchmarks/run_all.py` (`make bench`); do not edit by hand. JSON with every repeat's "
        "summary sits next to this file.",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), "
        f"torch.set_num_threads({m['torch_threads']}); {m['platform']}; Python {m['python']}; torch {m['torch']}, "
        f"numpy {m['numpy']}, scipy {m['scipy']}, POT {m['pot']}. Load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_1_5_15'])} (other processes on the machine show up here). "
        f"Run at {m['timestamp_utc']}; run_all wall time {wall:.0f} s.",
        "",
        "Method: every variant on the same model, optimiser, EMA and data batch; runs interleaved round-robin "
        "(order rotated each round); warm-up calls excluded; medians of the repeats with min and max; ratios "
        "are from the same run: the ratio of medians, and the paired ratio (the median over rounds of the "
        "per-round ratio, both timed next to each other) with a 90% bootstrap interval over rounds. No timing "
        "is asserted in tests.",
        "",
        "## 1. Training step time per flow (CPU)",
        "",
        "A full step: loss (target forward under no_grad + student forward), backward, Adam step, EMA update "
        "(every 5 steps). `rows` = GC predictor on the GC rows only (gclib's default); `all` = the authors' "
        "whole-batch predictor (`predict_all=True`). Theory: 1 + mu/4 rows-only, 1.25 whole batch "
        "(a step ~ 4 forward units). The GC predictor is warmed at every batch size first (steady state; see "
        "the first-call column), and the target pair is then timed again on its own for many rounds.",
        "",
        step_time.table(st),
        "",
        "## 2. Exact minibatch OT: ot.emd vs scipy linear_sum_assignment",
        "",
        f"gclib's `ot_solver=\"auto\"` uses scipy below n = {ot['auto_emd_min_n']} (below "
        f"{ot.get('auto_emd_min_n_low_dim', ot['auto_emd_min_n'])} for d <= {ot.get('auto_low_dim', 0)}) and ot.emd from there on. "
        f"Measured crossover (smallest n from which emd wins at every larger measured n), per d: "
        f"{ot['crossover_emd_faster_from_n']}.",
        "",
        ot_scaling.table(ot),
        "",
        "## 3. One-step sampling throughput and peak memory (CPU)",
        "",
        sa["memory_method"] + ".",
        "",
        sampling.table(sa),
        "",
    ]
    g = gpu_tables(out_dir)
    lines += ["## 4. GPU (benchmarks/gpu.sh)", ""]
    lines.append(g if g else "No `gpu-*.json` yet: run `bash benchmarks/gpu.sh` on a CUDA machine "
                             "(CIFAR-10 U-Net, batch 512, fp32 / bf16+channels_last / +torch.compile).")
    lines.append("")
    if (out_dir / "ot_prefetch.md").is_file():
        lines += ["## 5. OT pairing solved ahead (benchmarks/step_time.py --ot-prefetch)", "",
                  "OT/IC with the exact minibatch OT pairing solved inside the step and solved on a worker thread "
                  "while the previous step runs, paired over rounds: [ot_prefetch.md](ot_prefetch.md) (its own "
                  "command and machine load; a GPU measurement needs a CUDA machine).", ""]
    gd = gpu_digits_tables(out_dir)
    if gd:
        lines += ["## 6. The digits step on a GPU (benchmarks/gpu_digits_step.py)", "",
                  "The 0.6M-parameter digits U-Net at batch 64 (the long digits profiles' run), one process per run: "
                  "how long a step takes alone and how many steps several processes make together on one card.", "",
                  gd]
    ts = thread_share_section(out_dir)
    if ts:
        lines += ["## 7. Threads that share a busy machine (benchmarks/thread_share.py)", "", ts, ""]
    return "\n".join(lines)


def thread_share_section(out_dir: Path) -> str:
    """The loaded / idle table of thread_share.json (its own command: not run by run_all, it starts busy
    processes and takes long), or '' when there is none."""
    for p, res in _json_files(out_dir, "thread_share.json"):
        return "\n".join([
            "How much slower a training run gets beside busy processes, per thread setting. gclib trains on "
            "the CPU on half the usable CPUs, at least one (`gclib.machine.gclib_threads`; `GCLIB_THREADS`, "
            "`OMP_NUM_THREADS` and `torch.set_num_threads` win) and sets OpenMP's waiting to passive "
            "(`OMP_WAIT_POLICY=PASSIVE` at `import gclib`, unless the user set it, `GOMP_SPINCOUNT` or `KMP_BLOCKTIME`): "
            "threads that work in lock-step wait at every parallel region for the one the other work has descheduled. "
            "Run: `python benchmarks/thread_share.py` (`--steps`, `--repeats`, `--busy`).", "",
            thread_share.table(res), "", thread_share.summary(res), "", *res.get("notes", [])])
    return ""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="tiny sizes only (for tests)")
    p.add_argument("--out-dir", type=Path, default=bu.RESULTS_DIR)
    p.add_argument("--readme-only", action="store_true", help="rewrite README.md from the JSON files (after gpu.sh)")
    a = p.parse_args(argv)
    out = a.out_dir
    out.mkdir(parents=True, exist_ok=True)
    if a.readme_only:
        st, ot, sa = (json.loads((out / f).read_text()) for f in ("step_time.json", "ot_scaling.json", "sampling.json"))
        wall = json.loads((out / "run_all.json").read_text())["wall_s"] if (out / "run_all.json").exists() else float("nan")
        (out / "README.md").write_text(readme(st, ot, sa, wall, out))
        print(f"[run_all] rewrote {relative_to_cwd(out)}/README.md")
        return
    t0 = time.perf_counter()
    if a.quick:
        st = step_time.run(("tiny",), a.threads, out / "step_time.json", repeats=2)
        ot = ot_scaling.run(a.threads, out / "ot_scaling.json", sizes=(16, 32), dims=(2, 8), budget_s=10.0,
                            share=True, share_batch=16, step_time_json=out / "step_time.json",
                            share_model="tiny", share_d=64)
        sa = sampling.run(sampling.QUICK_CONFIGS, a.threads, repeats=2, out=out / "sampling.json")
    else:
        st = step_time.run(("digits", "cifar10"), a.threads, out / "step_time.json")
        ot = ot_scaling.run(a.threads, out / "ot_scaling.json", step_time_json=out / "step_time.json")
        sa = sampling.run(sampling.CONFIGS, a.threads, out=out / "sampling.json")
    wall = time.perf_counter() - t0
    bu.write_json(out / "run_all.json", {"wall_s": wall, "quick": a.quick, "machine": st["machine"]})
    (out / "README.md").write_text(readme(st, ot, sa, wall, out))
    print(f"[run_all] wrote {relative_to_cwd(out)}/step_time.json, ot_scaling.json, sampling.json, README.md "
          f"in {wall:.0f} s")


if __name__ == "__main__":
    main()
