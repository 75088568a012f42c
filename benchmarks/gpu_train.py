"""Train the runs of several fid_curves profiles in one pool of worker processes sharing one GPU, in the order given
(a profile's runs before the next profile's; a frozen-predictor run only after its predictor's run has finished),
then write each complete profile's final evaluation (its final_eval-*.json in every run directory and
final_eval.csv). A run shared by two profiles (the same configuration hash) is trained once.

With ``--stack K`` each worker trains up to K runs at once as one stack (``gclib.stack``: the K networks evaluated
as one, so a step of K runs makes a few times the calls of one run's step, not K times); runs join the earliest
stack they can share (the same settings but seed, flow, mu and frozen predictor), so the order is kept stack by
stack. ``--stack 1`` trains each run alone.

With ``--deadline S`` no stack is started once fewer than S seconds after the start remain for it (its expected
time is the median of the finished stacks' times per step); stacks already started go on. A profile whose runs did
not all finish is named, and gets no final evaluation: rerun to resume it (finished runs are cached; a started run
resumes from its last checkpoint). Called by benchmarks/gpu_digits.sh; on a CPU the same code trains with one-thread
workers.

    python benchmarks/gpu_train.py gpu_digits gpu_long_2x gpu_long_mu --workers 4 --stack 10 --deadline 420
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gclib import signals  # noqa: E402
from gclib.config import ConfigError, as_config, config_hash  # noqa: E402
from gclib.executors import WAKE_S, stop_pool, worker_init  # noqa: E402
from gclib.experiments.fid_curves import (_finished, _train_one, final_evaluation, run_config,  # noqa: E402
                                          sweep_from_params)
from gclib.stack import check_stackable, train_stack_job  # noqa: E402


def plan(profiles: list[str], device: str | None = None):
    """[(profile, sweep)], [(key, cfg, needs)] in training order; ``needs`` is the key of the run whose checkpoint a
    frozen-predictor run reads (None otherwise). ``device`` replaces the profiles' own (it is not hashed: the same
    runs, trained elsewhere; done.json records where)."""
    sweeps, tasks, seen = [], [], set()
    for name in profiles:
        path = Path(name) if name.endswith(".yaml") else ROOT / "params" / "fid_curves" / f"{name}.yaml"
        if not path.is_file():
            raise SystemExit(f"gpu_train.py: {path} does not exist (a profile is a params/fid_curves/<name>.yaml "
                             "or the path of such a file)")
        sw = sweep_from_params(path, root=ROOT)
        if device:
            sw.base["device"] = device
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


def stacks(tasks: list, k: int) -> list:
    """``tasks`` grouped into stacks of at most ``k`` runs, each task in the earliest stack it can share (runs that
    read a frozen predictor only with each other): [(keys, cfgs, needs)], ``needs`` the keys of the runs whose
    checkpoints the stack's runs read."""
    groups: list = []
    for key, cfg, needs in tasks:
        for keys, cfgs, need in groups:
            if len(keys) < k and (needs is None) == (not need):
                try:
                    check_stackable([as_config(cfgs[0]), as_config(cfg)])
                except ConfigError:
                    continue
                keys.append(key)
                cfgs.append(cfg)
                if needs:
                    need.add(needs)
                break
        else:
            groups.append(([key], [cfg], {needs} if needs else set()))
    return groups


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+", help="names of params/fid_curves/<name>.yaml, or paths of such files")
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--stack", type=int, default=1, help="runs per worker, trained as one stack (1: alone)")
    ap.add_argument("--deadline", type=float, default=float("inf"), help="seconds after the start")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="train on this device instead of the profiles' own (e.g. a GPU profile on the CPU)")
    a = ap.parse_args(argv)
    if a.workers < 1 or a.stack < 1:
        raise SystemExit(f"gpu_train.py: --workers={a.workers} and --stack={a.stack} must be >= 1")
    t0 = time.time()
    sweeps, tasks = plan(a.profiles, a.device)
    done = {key for key, cfg, _ in tasks if _finished(cfg)}
    todo = stacks([t for t in tasks if t[0] not in done], a.stack)
    print(f"[gpu_train] {len(tasks)} runs in {', '.join(a.profiles)}: {len(done)} finished, "
          f"{sum(len(keys) for keys, _, _ in todo)} to train in {len(todo)} stack(s) of at most {a.stack}, "
          f"{a.workers} workers", flush=True)
    per_step: list[float] = []
    running: dict = {}
    # a stop signal (SIGTERM, SIGUSR1, Ctrl-C) to this script: the stacks not started are dropped, each running
    # worker gets it and saves a checkpoint at its current step (worker_init), then the script stops in one line
    with signals.handle(), ProcessPoolExecutor(max_workers=a.workers, mp_context=mp.get_context("spawn"),
                                               initializer=worker_init) as pool:
        try:
            while todo or running:
                ready = [t for t in todo if t[2] <= done]
                while ready and len(running) < a.workers:
                    task = ready.pop(0)
                    keys, cfgs, _ = task
                    todo.remove(task)
                    names = cfgs[0]["name"] + (f" and {len(cfgs) - 1} more" if len(cfgs) > 1 else "")
                    expected = cfgs[0]["total_steps"] * (statistics.median(per_step) if per_step else 0.0)
                    if time.time() - t0 + expected > a.deadline:
                        for cfg in cfgs:
                            print(f"[gpu_train] deadline: {cfg['name']} not started (expected {expected:.0f} s)",
                                  flush=True)
                        continue
                    job = (pool.submit(_train_one, cfgs[0], 1) if a.stack == 1 else
                           pool.submit(train_stack_job, cfgs, 1))
                    running[job] = (keys, cfgs, names, time.time())
                if not running:
                    break   # what is left waits for a predictor run that was not started
                # bounded: a stop signal that the kernel hands to another thread is acted on within WAKE_S
                finished, _ = wait(running, timeout=WAKE_S, return_when=FIRST_COMPLETED)
                for fut in finished:
                    keys, cfgs, names, start = running.pop(fut)
                    fut.result()   # a failed run stops the whole script with its error
                    done.update(keys)
                    per_step.append((time.time() - start) / cfgs[0]["total_steps"])
                    print(f"[gpu_train] {time.time() - t0:6.0f} s  {names} finished in {time.time() - start:.0f} s "
                          f"({len(done)}/{len(tasks)})", flush=True)
                if time.time() - t0 > a.deadline and not running:
                    break
            if running:
                print(f"[gpu_train] deadline: waiting for {len(running)} started stack(s)", flush=True)
        except KeyboardInterrupt as e:   # signals.Terminated among them
            stop_pool(pool, getattr(e, "signum", signal.SIGTERM))
            raise

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
    try:
        sys.exit(main())
    except signals.Terminated as e:   # one line: where each run stopped is in its own log and checkpoint
        print(f"gpu_train.py: {e}", file=sys.stderr)
        sys.exit(e.exit_status)
