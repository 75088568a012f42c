"""How long ``gclib.claims.judge(model, "digits", quick=True)`` takes on one CPU thread (the target: 2 minutes).

The model is the trained digits model of params/ct_cd_gap/cpu.yaml (the IC unet_digits run of 800 steps, from the run
cache; trained first when missing, which is not timed). Each repeat runs every row group with a cold exact-flow cache
(``cache=False``), the same work a first call does. Reported per repeat: the wall time and the process CPU time
(``time.process_time``: on a machine shared with other jobs the wall time stretches while the CPU time stays close to
what one idle core takes), the seconds of each group, and the machine's load average; the median over repeats.

Usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/judge_quick.py [--repeats 2] [--out results/bench/judge_quick.json]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchutil as bu  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(bu.RESULTS_DIR / "judge_quick.json"))
    a = ap.parse_args(argv)
    bu.pin_threads(1)

    from gclib import claims

    p, model, _, info = bu.ct_cd_gap_model()
    runs = []
    for _ in range(a.repeats):
        load = os.getloadavg()[0]
        w0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            j = claims.judge(model, "digits", quick=True, cache=False)
        runs.append(dict(wall=time.perf_counter() - w0, cpu=time.process_time() - c0, load_before=load,
                         load_after=os.getloadavg()[0], groups=j.info["seconds"],
                         verdicts=[r["verdict"] for r in j.rows]))
        print(f"judge quick on digits: wall {runs[-1]['wall']:.0f} s, cpu {runs[-1]['cpu']:.0f} s, load "
              f"{load:.1f} -> {runs[-1]['load_after']:.1f}", flush=True)
    out = dict(benchmark="judge_quick", model=info["name"], machine=bu.machine_info(), runs=runs,
               wall=bu.summarize([r["wall"] for r in runs]), cpu=bu.summarize([r["cpu"] for r in runs]))
    bu.write_json(Path(a.out), out)
    return out


if __name__ == "__main__":
    main()
