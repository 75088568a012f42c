"""Theorem 1's limit row on the exact flow of the digits (the ideal of params/ct_cd_gap/cpu.yaml) at several seeds:
why sampling cannot decide it (issue 30).

For each seed, n draws (x, z, u) as ``ct_cd_gap`` makes them, the exact flow map (``references.IdealFlow``, the
profile's Heun steps) and at each N: the scaled gap N (L_CT - L_CD), the plain limit, the relative difference on the
same draws, the largest per-sample scaled gap, and the draws whose scaled gap exceeds 1e6 x the limit (a CT step
across a boundary between two points' basins, where the flow map jumps); once per seed: the limit's largest draw's
share of its sum and Kish's effective sample size (``ct_cd_claims.limit_ess``), the row's verdict on those draws,
and the CPU seconds per draw of the limit (two Jacobian-vector products through the solver) and of one N's gap
(three flow maps). Then the jump itself: the exact flow of the two points -1 and 1 (1-D) at t = 1 on either side of
the boundary 0, at several solver resolutions, with the difference quotient across it. Not a speed benchmark: a
record of the measurement behind the row's effective-draws rule, kept here because it takes minutes.

Usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/ideal_gap_tail.py [--seeds 0 1 2 3 4] [--n 1024]
       [--Ns 10240 40960 163840] [--out results/bench/ideal_gap_tail.json]
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


def jump_at_the_boundary(steps=(8, 32, 128), eps=(1e-3, 1e-9, 1e-15)) -> list[dict]:
    """The exact flow of the points -1 and 1 from t = 1 at +-eps (the boundary between their basins is 0): f(eps)
    and the difference quotient (f(eps) - f(-eps)) / (2 eps) at each solver resolution."""
    import torch
    from gclib.exact import flow_map
    pts = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    rows = []
    for n in steps:
        for e in eps:
            f = flow_map(torch.tensor([[e], [-e]], dtype=torch.float64), pts, 1.0, n_steps=n).flatten()
            rows.append(dict(steps=n, eps=e, f_eps=float(f[0]), quotient=float((f[0] - f[1]) / (2 * e))))
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--n", type=int, default=1024, help="draws per seed")
    ap.add_argument("--Ns", type=int, nargs="+", default=[10240, 40960, 163840])
    ap.add_argument("--out", default=str(bu.RESULTS_DIR / "ideal_gap_tail.json"))
    a = ap.parse_args(argv)
    bu.pin_threads(1)
    import yaml
    from gclib.data import load_dataset
    from gclib.experiments import ct_cd_gap as gap
    from gclib.experiments import references
    from gclib.experiments.ct_cd_claims import _limit, limit_ess

    p = yaml.safe_load((bu.REPO / "params" / "ct_cd_gap" / "cpu.yaml").read_text())
    data = load_dataset(p["dataset"])
    ideal = references.IdealFlow(data, int(p["ideal_steps"]))
    st = gap.gap_settings(int(data[0].numel()), [])
    rows = []
    for seed in a.seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.process_time()
            first = gap._gaps(ideal, data, st, p["T"], a.Ns[:1], a.n, seed)["squared L2"]
            t_first = time.process_time() - t0
            res = {a.Ns[0]: first}
            t0 = time.process_time()
            for N in a.Ns[1:]:
                res[N] = gap._with_limit(gap._gaps(ideal, data, st, p["T"], [N], a.n, seed, limit=False)["squared L2"],
                                         first)
            t_gap = (time.process_time() - t0) / max(1, len(a.Ns) - 1) / a.n
        plain = first.per_sample["plain"]
        lim = float(plain.mean())
        row = dict(seed=seed, n=a.n, limit=lim, limit_top_share=float(plain.max() / plain.sum()),
                   limit_ess=limit_ess(a.n, lim, float(first.limit_stderr)), seconds_per_draw_gap=t_gap,
                   seconds_per_draw_limit=t_first / a.n - t_gap, per_N=[])
        for N, r in res.items():
            s = gap.summarise_gap(r, "squared L2", "ideal")
            g = r.per_sample["scaled_gap_N_max"]
            row["per_N"].append(dict(N=N, scaled_gap=s["scaled_gap"], rel=s["rel"], rel_lo=s["rel_lo"],
                                     rel_hi=s["rel_hi"], gap_max=s["gap_max"], crossings=int((g > 1e6 * lim).sum()),
                                     verdict=_limit(pd_row(s), float(p["rel_tol"]))))
        rows.append(row)
        print(f"seed {seed}: limit {lim:.3g} (largest draw {row['limit_top_share']:.0%}, Kish {row['limit_ess']:.3g} "
              f"of {a.n}); " + "; ".join(f"N={q['N']}: N gap {q['scaled_gap']:.3g} rel {q['rel']:+.1%} "
                                         f"[{q['rel_lo']:+.1%}, {q['rel_hi']:+.1%}], crossings {q['crossings']}, "
                                         f"{q['verdict']}" for q in row["per_N"]), flush=True)
    jump = jump_at_the_boundary()
    for j in jump:
        print(f"two points, {j['steps']} steps: f({j['eps']:g}) = {j['f_eps']:.4f}, quotient {j['quotient']:.3g}")
    out = dict(benchmark="ideal_gap_tail", ideal=ideal.name, Ns=a.Ns, machine=bu.machine_info(), rows=rows,
               jump=jump)
    bu.write_json(Path(a.out), out)
    return out


def pd_row(summary: dict):
    """A ``summarise_gap`` dict as the row object the claim functions read (attribute access)."""
    from types import SimpleNamespace
    return SimpleNamespace(**summary)


if __name__ == "__main__":
    main()
