r"""Fig. 3 (METHOD.md section 6, Lemma 1): the transport cost of the GC coupling against the other couplings.

c(t) = E||f(x + t z, t) - z||^2, (x, z) independent, f a trained consistency model (its EMA): the cost of the
GC coupling whose predictor acts at level t; c(0) = E||x - z||^2 is the independent coupling's cost.
Baselines on the same draws: minibatch OT at several batch sizes (the mean matched cost in batches of B;
``gclib.metrics.transport.minibatch_ot_cost``) and the exact OT cost of all n draws (``exact_ot_cost``, POT's
network simplex). The exact cost of two samples of size n is the OT cost of one batch of n; it decreases towards
the population W_2^2 as n grows (closely in 2-D, slowly in high dimension). It bounds every coupling between the
data and the noise; GC's endpoints x^ = f(x + t z, t) are not distributed as the data for intermediate t, so
c(t) may go below it there.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..metrics._util import draw_data
from ..metrics.transport import exact_ot_cost, minibatch_ot_cost, transport_cost_curve
from .common import claim


def transport_costs(model, data, ts, n: int = 2048, batch_sizes=(64, 256, 1024), seed: int = 0):
    """(curve, baselines), every cost on the SAME n independent draws (x, z) (common random numbers).

    curve = DataFrame(t, cost, stderr) of c(t) on ``ts`` (0 is added: IC's cost c(0) = E||x - z||^2).
    baselines = DataFrame(coupling, batch_size, cost, stderr): "IC" (c(0)); "minibatch OT" for each batch size
    (the draws shuffled and cut into batches of B, each matched exactly); "exact OT" (all n draws matched
    exactly: W_2^2 of the two samples). On shared draws exact OT <= minibatch OT <= IC holds for every sample,
    since a partition into batches is one admissible plan of the whole sample.
    """
    ts = sorted({0.0, *[float(t) for t in ts]})
    bad = [b for b in batch_sizes if int(b) != b or b < 2 or b > n]
    if bad:
        raise ValueError(f"ot_batch_sizes={list(batch_sizes)!r} is not valid; each must be an integer in [2, n={n}]")
    curve = transport_cost_curve(model, data, ts, n=n, seed=seed)
    g = torch.Generator().manual_seed(seed)  # the draws transport_cost_curve made
    x = draw_data(data, n, g)
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    x = x.to(torch.float64).cpu()
    c0 = curve[curve.t == 0.0].iloc[0]
    rows = [dict(coupling="IC", batch_size=np.nan, cost=float(c0.cost), stderr=float(c0.stderr))]
    for b in batch_sizes:
        r = minibatch_ot_cost(x, z, int(b), solver="emd", generator=torch.Generator().manual_seed(seed + 1))
        rows.append(dict(coupling="minibatch OT", batch_size=int(b), cost=r["cost"], stderr=r["stderr"]))
    ex = exact_ot_cost(x, z)
    rows.append(dict(coupling="exact OT", batch_size=int(n), cost=float(ex.cost), stderr=np.nan))
    return curve, pd.DataFrame(rows)


def transport_claims(curve: pd.DataFrame, baselines: pd.DataFrame, flow: str = "ic", n_near: int = 2) -> list[dict]:
    """Fig. 3's claims from the measured costs (the verdicts for metrics.json).

    1. c decreases in t near 0: c(0) > c(t_1) > ... > c(t_{n_near}) over the first ``n_near`` positive levels.
    2. GC's cost (min over t > 0 of c(t)) is below minibatch OT's at every batch size tried.
    3. Every coupling's cost (IC, each minibatch OT, min c) is above the exact OT cost.
    4. Minibatch OT's cost is below IC's at every batch size tried.
    """
    cur = curve.sort_values("t").reset_index(drop=True)
    c0 = float(cur.cost.iloc[0])
    near = cur.iloc[:n_near + 1]
    dec = bool(np.all(np.diff(near.cost.to_numpy()) < 0))
    pos = cur[cur.t > 0]
    i_min = pos.cost.idxmin()
    t_min, c_min = float(pos.t[i_min]), float(pos.cost[i_min])
    ot = baselines[baselines.coupling == "minibatch OT"]
    ex = float(baselines[baselines.coupling == "exact OT"].cost.iloc[0])
    n_ex = int(baselines[baselines.coupling == "exact OT"].batch_size.iloc[0])
    ot_txt = ", ".join(f"B={int(r.batch_size)}: {r.cost:.3g}" for r in ot.itertuples())
    who = {"ic": "an IC-trained", "ot": "an OT-trained", "gc": "a GC-trained"}[flow]
    return [
        claim("The GC transport cost c(t) decreases in t near 0 (the Jacobian of f is I there)", dec,
              "c(t): " + ", ".join(f"t={r.t:g}: {r.cost:.4g}" for r in near.itertuples())),
        claim(f"GC's transport cost ends below minibatch OT's (predictor: {who} model)",
              bool((c_min < ot.cost).all()),
              f"min_t c(t) = {c_min:.3g} at t = {t_min:g}; minibatch OT {ot_txt}"),
        claim("Every coupling's cost is above the exact OT cost (the lower bound)",
              bool(min(c0, c_min, float(ot.cost.min())) >= ex),
              f"exact OT (n = {n_ex}) = {ex:.3g}; IC {c0:.3g}, min GC {c_min:.3g}, minibatch OT min {ot.cost.min():.3g}"),
        claim("Minibatch OT's cost is below IC's", bool((ot.cost < c0).all()), f"IC {c0:.3g}; minibatch OT {ot_txt}"),
    ]
