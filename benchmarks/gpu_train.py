"""Train the runs of several fid_curves profiles in one pool of worker processes sharing one GPU, in the order given
(a profile's runs before the next profile's; a frozen-predictor run only after its predictor's run has finished),
then write each complete profile's final evaluation (its final_eval-*.json in every run directory and
final_eval.csv). A run shared by two profiles (the same configuration hash) is trained once.

With ``--deadline S`` no run is started once fewer than S seconds after the start remain for it (its expected time
is the median of the finished runs' times per step); runs already started go on. A profile whose runs did not all
finish is named, and gets no final evaluation: rerun to resume it (finished runs are cached; a started run resumes
from its last checkpoint). Called by benchmarks/gpu_digits.sh; on a CPU the same code trains with one-thread workers.

    python benchmarks/gpu_train.py gpu_digits gpu_long_2x gpu_long_mu --workers 12 --deadline 420
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gclib.config import as_config, config_hash  # noqa: E402
from gclib.experiments.fid_curves import (_finished, _train_one, final_evaluation, run_config,  # noqa: E402
                                          sweep_from_params)


def plan(profiles: list[str]):
    """[(profile, sweep)], [(key, cfg, needs)] in training order; ``needs`` is the key of the run whose checkpoint a
    frozen-predictor run reads (None otherwise)."""
    sweeps, tasks, seen = [], [], set()
    for name in profiles:
        path = Path(name) if name.endswith(".yaml") else ROOT / "params" / "fid_curves" / f"{name}.yaml"
        if not path.is_file():
            raise SystemExit(f"gpu_train.py: {path} does not exist (a profile is a params/fid_curves/<name>.yaml "
                             "or the path of such a file)")
        sw = sweep_from_params(path, root=ROOT)
        sweeps.append((sw.out.name, sw))
        runs = sw.runs()
        for r in [r for r in runs if r.family != "frozen"] + [r for r in runs if r.family == "frozen"]:
            cfg = run_config(sw.base, r)
            key = config_hash(as_config(cfg))
            if key in seen:
                continue
            seen.add(key)
            needs = None
            if r.family == "frozen":
                ic = next(x for x in runs if x.label == "IC" and x.seed == sw.frozen_seed)
                needs = config_hash(as_config(run_config(sw.base, ic)))
            tasks.append((key, cfg, needs))
    return sweeps, tasks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+", help="names of params/fid_curves/<name>.yaml, or paths of such files")
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--deadline", type=float, default=float("inf"), help="seconds after the start")
    a = ap.parse_args(argv)
    if a.workers < 1:
        raise SystemExit(f"gpu_train.py: --workers={a.workers} must be >= 1")
    t0 = time.time()
    sweeps, tasks = plan(a.profiles)
    done = {key for key, cfg, _ in tasks if _finished(cfg)}
    todo = [t for t in tasks if t[0] not in done]
    print(f"[gpu_train] {len(tasks)} runs in {', '.join(a.profiles)}: {len(done)} finished, {len(todo)} to train, "
          f"{a.workers} workers", flush=True)
    per_step: list[float] = []
    running: dict = {}
    with ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn")) as pool:
        while todo or running:
            ready = [t for t in todo if t[2] is None or t[2] in done]
            while ready and len(running) < a.workers:
                key, cfg, needs = ready.pop(0)
                expected = cfg["total_steps"] * (statistics.median(per_step) if per_step else 0.0)
                if time.time() - t0 + expected > a.deadline:
                    print(f"[gpu_train] deadline: {cfg['name']} not started (expected {expected:.0f} s)", flush=True)
                    todo = [t for t in todo if t[0] != key]
                    continue
                todo.remove((key, cfg, needs))
                running[pool.submit(_train_one, cfg, 1)] = (key, cfg, time.time())
            if not running:
                break   # what is left waits for a predictor run that was not started
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                key, cfg, start = running.pop(fut)
                fut.result()   # a failed run stops the whole script with its error
                done.add(key)
                per_step.append((time.time() - start) / cfg["total_steps"])
                print(f"[gpu_train] {time.time() - t0:6.0f} s  {cfg['name']} finished in {time.time() - start:.0f} s "
                      f"({len(done)}/{len(tasks)})", flush=True)
            if time.time() - t0 > a.deadline and not running:
                break
        if running:
            print(f"[gpu_train] deadline: waiting for {len(running)} started run(s)", flush=True)
    status = 0
    for name, sw in sweeps:
        missing = [r for r in sw.runs() if not _finished(run_config(sw.base, r))]
        if missing:
            status = 3
            print(f"[gpu_train] {name}: {len(missing)} of {len(sw.runs())} runs unfinished; no final evaluation",
                  flush=True)
            continue
        t1 = time.time()
        final_evaluation(sw)
        print(f"[gpu_train] {name}: complete; final evaluation in {time.time() - t1:.0f} s", flush=True)
    print(f"[gpu_train] {time.time() - t0:.0f} s in all", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
