"""Theorem 1's limit row on its ideal, the exact flow of a continuous mixture (issue 30): the pilot that fixed
mixture_n. For each mixture std and seed: the plain limit, N gap at N = 10240, their paired relative difference with
its per-sample spread rel_sd (-> the draws for 80% power of the 10% equivalence test, ct_cd_claims.limit_n_for_power),
Kish's effective draws of the limit (ct_cd_claims.limit_ess; the row needs LIMIT_ESS_MIN), the wrong teacher v = 0,
and the seconds. Run: PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mixture_limit_pilot.py
[--stds 0.01 0.25] [--seeds 1] [--n 4096] [--N 10240] [--out pilot.json]"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gclib.experiments import ct_cd_gap as gap
from gclib.experiments import references as R
from gclib.experiments.ct_cd_claims import limit_ess, limit_n_for_power, limit_power


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--stds", type=float, nargs="+", default=[0.01, 0.25])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--N", type=int, nargs="+", default=[10240])
    ap.add_argument("--huber_d", type=int, default=64, help="the pseudo-Huber c of this dimension (digits: 64)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    a = ap.parse_args(argv)
    out = []
    torch.set_num_threads(1)
    settings = gap.gap_settings(a.huber_d, [None])
    for std in a.stds:
        flow = R.GaussianMixtureFlow(R.SMOOTH_MIXTURE[0], std, n_steps=64)
        kw = dict(velocity=flow.velocity, sampler=flow.sample)
        for seed in a.seeds:
            t0 = time.perf_counter()
            rs = gap._gaps(flow, flow.means, settings, 1.0, a.N, a.n, seed, **kw)
            t1 = time.perf_counter()
            ws = gap._gaps(flow, flow.means, settings, 1.0, a.N[-1:], a.n, seed, teacher=R.zero_velocity,
                           limit=False, **kw)
            t2 = time.perf_counter()
            for st, r in rs.items():
                row = gap.summarise_gap(r, st, "mixture")
                w = gap.summarise_gap(gap._with_limit(ws[st], r), st, "wrong teacher")
                ess = limit_ess(row["n"], row["limit"], row["limit_stderr"])
                out.append(dict(std=std, seed=seed, setting=st, N=row["N_max"], n=row["n"],
                                scaled_gap=row["scaled_gap"], limit=row["limit"], limit_stderr=row["limit_stderr"], rel=row["rel"],
                                rel_lo=row["rel_lo"], rel_hi=row["rel_hi"], rel_sd=row["rel_sd"], limit_ess=ess,
                                n_for_80=limit_n_for_power(row["rel_sd"], 0.1), wrong_rel=w["rel"],
                                wrong_rel_lo=w["rel_lo"], wrong_rel_hi=w["rel_hi"], seconds=t2 - t0))
                print(f"std {std:g} seed {seed} n {a.n} {st}: N gap {row['scaled_gap']:.4g} (N = {row['N_max']}), "
                      f"limit {row['limit']:.4g} +- {row['limit_stderr']:.2g}, rel {row['rel']:+.3%} "
                      f"[{row['rel_lo']:+.3%}, {row['rel_hi']:+.3%}], rel_sd {row['rel_sd']:.3g} (n for 80%: "
                      f"{limit_n_for_power(row['rel_sd'], 0.1)}; power {limit_power(row['rel_sd'], a.n, 0.1):.0%}), "
                      f"Kish {ess:.4g}; v = 0: rel {w['rel']:+.2%} [{w['rel_lo']:+.2%}, {w['rel_hi']:+.2%}]; "
                      f"{t1 - t0:.1f} s + {t2 - t1:.1f} s (v = 0)", flush=True)
    res = dict(benchmark="mixture_limit_pilot", rows=out)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
