"""Theorem 1 (ii)'s row on the digits model at several seeds: the true CD teacher and one 10% too large (1.1 v).

The model is the trained digits model of params/ct_cd_gap/cpu.yaml (from the run cache; trained first when missing).
For each seed, the whole scaled gradients of L_CT and L_CD (``gclib.metrics.gap.ct_cd_gradient_vectors``) at the
profile's N and draws, with each teacher, and the row's verdict (``ct_cd_gap._grad_verdict`` at the profile's
grad_tol): the row should hold (or at least not be refuted) with the true teacher and be refuted with 1.1 v at every
seed. Not a speed benchmark: a check of the row's power, kept here because it takes minutes.

Usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/grad_teacher_seeds.py [--seeds 0 1 2 3 4] [--n 4096]
       [--out results/bench/grad_teacher_seeds.json]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchutil as bu  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--n", type=int, default=None, help="draws (default: the profile's grad_n)")
    ap.add_argument("--out", default=str(bu.RESULTS_DIR / "grad_teacher_seeds.json"))
    a = ap.parse_args(argv)
    bu.pin_threads(1)
    import pandas as pd

    from gclib.experiments import references
    from gclib.experiments import ct_cd_gap as gap
    from gclib.metrics.gap import ct_cd_gradient_vectors

    p, model, data, info = bu.ct_cd_gap_model()
    n, N, tol = int(a.n or p["grad_n"]), int(max(p["grad_Ns"])), float(p["grad_tol"])
    rows = []
    for seed in a.seeds:
        for name, teacher in (("true", None), ("1.1 v", references.scaled_velocity(data, 1.1))):
            t0 = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = ct_cd_gradient_vectors(model, data, T=p["T"], N=N, n=n, batch=64, seed=seed, teacher=teacher)
            g = pd.DataFrame([dict(case="alpha=2", **r.as_dict())])
            v = gap._grad_verdict(g, "alpha=2", True, tol)[0]
            rows.append(dict(seed=seed, teacher=name, verdict=v, proj=r.proj, proj_se=r.proj_se, r=r.r, r_lo=r.r_lo,
                             r_hi=r.r_hi, n=r.n, cpu_seconds=time.process_time() - t0))
            print(f"seed {seed} teacher {name}: {v} (along the gradient {r.proj:+.2%} +- {r.proj_se:.2%}; whole "
                  f"{r.r:.3f} [{r.r_lo:.3f}, {r.r_hi:.3f}])", flush=True)
    out = dict(benchmark="grad_teacher_seeds", model=info["name"], N=N, n=n, grad_tol=tol,
               whole_tol=gap.WHOLE_TOL, machine=bu.machine_info(), rows=rows)
    bu.write_json(Path(a.out), out)
    return out


if __name__ == "__main__":
    main()
