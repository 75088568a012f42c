r"""Fig. 1 (docs/method.md sections 3-4): on two Diracs, how well each coupling's straight paths follow the
PF-ODE velocity field.

Data: two points (0, +0.5) and (0, -0.5); their ideal denoiser, velocity v_t and flow map are exact
(``gclib.exact``). A coupling pairs an endpoint x0 with a noise z and training moves along x0 + t z, whose
velocity is z. IC keeps independent pairs, OT re-matches them by exact minibatch OT, GC (the *exact* generator,
mu = 1) replaces x0 by x^ = Phi(x0 + t_pred z, t_pred) and keeps z (``gclib.paths``). Alignment along the paths:
the mean cosine between z and v_t(x0 + t z), and the mean ||z - v_t(x0 + t z)||^2, averaged over the levels.
Each seed draws fresh (x0, z); the flows share them within a seed, so the claims compare flows by paired
differences over seeds (``common.paired_verdict``).

- ``setup(...)``: validate the notebook's parameters; ``measure(...)``: the alignment table for every seed;
- ``plot_paths``, ``plot_alignment``: the figures; ``per_seed``, ``alignment_claims``, ``metrics``, ``summary``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import report
from ..checks import check_flow
from ..exact import velocity
from ..paths import coupled_endpoints, path_alignment
from .common import claim, combine_verdicts, paired_verdict

DIRACS = ((0.0, 0.5), (0.0, -0.5))
NAMES = {"ic": "IC", "ot": "OT", "gc": "GC"}
PAPER = {
    "gc_ic": "Fig. 1 (two Diracs, exact generator): GC's paths follow the PF-ODE velocity field better than IC's.",
    "gc_ot": "Fig. 1 and its discussion: GC's paths are better aligned with the velocity field than those of "
             "OT-based (minibatch OT) couplings.",
}


def setup(variant: str, seeds, n_samples: int, n_paths: int, t_pred: float, t_max: float, n_levels: int,
          ot_batch: int, flows, level: float = 0.9):
    """Validate every parameter of notebooks/toy_flows.ipynb (one clear ValueError naming it) -> results folder."""
    for f in flows:
        check_flow(f)
    try:
        seeds = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise ValueError(f"seeds={seeds!r} is not valid; it must be a list of integers") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={seeds!r} is not valid; it must be a non-empty list of distinct integers")
    values = dict(t_pred=t_pred, t_max=t_max, n_samples=n_samples, n_paths=n_paths, n_levels=n_levels,
                  ot_batch=ot_batch, level=level)
    ok = dict(t_pred=t_pred > 0, t_max=t_max > 0.02, n_samples=n_samples >= 2, n_paths=n_paths >= 1,
              n_levels=n_levels >= 2, ot_batch=ot_batch >= 2, level=0 < level < 1)
    for k, good in ok.items():
        if not good:
            raise ValueError(f"{k}={values[k]!r} is not valid; need t_pred > 0, t_max > 0.02, n_samples >= 2, "
                             "n_paths >= 1, n_levels >= 2, ot_batch >= 2, 0 < level < 1")
    return report.results_dir("toy_flows", variant)


def dirac_data() -> torch.Tensor:
    """The two Diracs, (2, 2) float64."""
    return torch.tensor(DIRACS, dtype=torch.float64)


def draws(seed: int, n_samples: int):
    """(data, x0, z) for one seed: x0 uniform on the two Diracs, z ~ N(0, I), float64."""
    data = dirac_data()
    g = torch.Generator().manual_seed(int(seed))
    x0 = data[torch.randint(0, 2, (n_samples,), generator=g)]
    z = torch.randn(n_samples, 2, generator=g, dtype=torch.float64)
    return data, x0, z


def endpoints(seed: int, n_samples: int, t_pred: float, ot_batch: int, flows) -> tuple:
    """(data, z, {flow: endpoints (n, 2)}) for one seed: row k of each flow's endpoints is paired with z_k."""
    data, x0, z = draws(seed, n_samples)
    return data, z, {f: coupled_endpoints(f, x0, z, data, t_pred=t_pred, ot_batch=ot_batch) for f in flows}


def levels(t_max: float, n_levels: int) -> np.ndarray:
    """The levels of the alignment curves: log-spaced in [0.02, t_max]."""
    return np.geomspace(0.02, t_max, n_levels)


def measure(seeds, n_samples: int, t_pred: float, t_max: float, n_levels: int, ot_batch: int, flows,
            out=None) -> pd.DataFrame:
    """The alignment of each flow's paths per level and seed: columns seed, flow, t, cos, cos_se, dev, dev_se
    (``gclib.paths.path_alignment``). Writes alignment.csv to ``out`` if given."""
    lv = levels(t_max, n_levels)
    frames = []
    for s in seeds:
        data, z, ends = endpoints(s, n_samples, t_pred, ot_batch, flows)
        for f in flows:
            frames.append(path_alignment(ends[f], z, data, lv).assign(flow=f, seed=int(s)))
    align = pd.concat(frames, ignore_index=True)[["seed", "flow", "t", "cos", "cos_se", "dev", "dev_se"]]
    if out is not None:
        report.save_table(align, Path(out) / "alignment.csv")
    return align


def per_seed(align: pd.DataFrame) -> pd.DataFrame:
    """Mean over levels of cos and dev, one row per (seed, flow)."""
    return align.groupby(["seed", "flow"], as_index=False)[["cos", "dev"]].mean()


def plot_paths(seed: int, n_samples: int, n_paths: int, t_pred: float, t_max: float, ot_batch: int, flows,
               out) -> None:
    """Each flow's paths over the probability path in the (t, y) plane (the problem separates: y carries
    everything): the density of y_t (shading, normalised per level), the velocity field (1, v_t(y)) (arrows) and
    the paths y0 + t z_y of the first ``n_paths`` pairs of seed ``seed``. Saved as paths.png/pdf and shown."""
    from matplotlib.figure import Figure
    data, z, ends = endpoints(seed, n_samples, t_pred, ot_batch, flows)
    ts = np.linspace(0.02, t_max, 200)
    ys = np.linspace(-2.5, 2.5, 200)
    T, Y = np.meshgrid(ts, ys)
    dens = sum(np.exp(-(Y - c) ** 2 / (2 * T ** 2)) / T for c in (0.5, -0.5))
    dens /= dens.max(axis=0, keepdims=True)
    tq, yq = np.meshgrid(np.linspace(0.1, t_max, 16), np.linspace(-2.3, 2.3, 15))
    vq = velocity(torch.tensor(yq.reshape(-1, 1)), data[:, 1:], torch.tensor(tq.reshape(-1))).numpy().reshape(yq.shape)
    norm = np.sqrt(1 + vq ** 2)
    fig = Figure(figsize=(4.2 * len(flows), 3.8))
    axes = fig.subplots(1, len(flows), sharey=True, squeeze=False)[0]
    names = {"ic": "IC (independent)", "ot": f"OT (minibatch {ot_batch})",
             "gc": f"GC (exact generator, t_pred={t_pred:g})"}
    for ax, f in zip(axes, flows):
        ax.pcolormesh(T, Y, dens, cmap="Blues", shading="auto", alpha=0.8)
        ax.quiver(tq, yq, 1 / norm, vq / norm, color="0.35", width=0.003, scale=28)
        e, zz = ends[f][:n_paths, 1].numpy(), z[:n_paths, 1].numpy()
        for k in range(min(n_paths, len(e))):
            ax.plot(ts, e[k] + ts * zz[k], color="C3", lw=0.9, alpha=0.8)
        ax.set(title=names[f], xlabel="t", xlim=(0, t_max), ylim=(-2.5, 2.5))
    axes[0].set_ylabel("y")
    fig.tight_layout()
    report.show_figure(fig, Path(out) / "paths.png")


def plot_alignment(align: pd.DataFrame, out) -> None:
    """Mean cos(z, v_t) and mean ||z - v_t||^2 per level for each flow (mean over seeds, band: min-max over
    seeds). Saved as alignment.png/pdf and shown."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    flows = list(dict.fromkeys(align.flow))
    for k, f in enumerate(flows):
        g = align[align.flow == f].groupby("t")
        for ax, col in zip(axes, ("cos", "dev")):
            m, lo, hi = g[col].mean(), g[col].min(), g[col].max()
            ax.plot(m.index, m.to_numpy(), "o-", ms=3, color=f"C{k}", label=NAMES.get(f, f))
            ax.fill_between(m.index, lo.to_numpy(), hi.to_numpy(), color=f"C{k}", alpha=0.2)
    axes[0].set(xscale="log", xlabel="t", ylabel=r"mean cos(z, $v_t$)", title="path direction vs PF-ODE velocity")
    axes[1].set(xscale="log", xlabel="t", ylabel=r"$E\|z - v_t(x_t)\|^2$", title="deviation from the velocity field")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    report.show_figure(fig, Path(out) / "alignment.png")


def _compare(ps: pd.DataFrame, a: str, b: str, level: float):
    """Paired verdicts over seeds that flow a aligns better than flow b: larger mean cos and smaller mean dev."""
    w = ps.pivot(index="seed", columns="flow", values=["cos", "dev"])
    v_cos = paired_verdict(w[("cos", a)].to_numpy(), w[("cos", b)].to_numpy(), "greater", level)
    v_dev = paired_verdict(w[("dev", a)].to_numpy(), w[("dev", b)].to_numpy(), "less", level)
    A, B = NAMES[a], NAMES[b]
    measured = (f"mean cos {A} {w[('cos', a)].mean():.3f} vs {B} {w[('cos', b)].mean():.3f}: "
                f"{v_cos.text(A, B)}; mean ||z - v||^2 {A} {w[('dev', a)].mean():.3g} vs {B} "
                f"{w[('dev', b)].mean():.3g}: {v_dev.text(A, B)}")
    return combine_verdicts([v_cos.verdict, v_dev.verdict]), measured


def alignment_claims(align: pd.DataFrame, level: float = 0.9) -> list[dict]:
    """Fig. 1's claims, each judged by paired differences over seeds (``common.paired_verdict``), and how each can
    fail. A flow aligns better than another when its mean cos(z, v_t) is larger (interval of the per-seed
    difference above 0) AND its mean ||z - v_t||^2 is smaller (interval below 0): "holds"; "refuted" when either
    is reversed beyond its interval; otherwise "inconclusive" (also with a single seed).

    1. GC aligns better than IC; 2. GC aligns better than OT (the paper's "better than OT-based methods").
    Rows are made only for the flows present."""
    ps = per_seed(align)
    flows = set(ps.flow)
    out = []
    for other, text in (("ic", "GC paths follow the PF-ODE velocity field better than IC paths (Fig. 1)"),
                        ("ot", "GC paths follow the PF-ODE velocity field better than minibatch-OT paths (Fig. 1)")):
        if {"gc", other} <= flows:
            verdict, measured = _compare(ps, "gc", other, level)
            out.append(claim(text, verdict, measured, PAPER[f"gc_{other}"]))
    return out


def metrics(align: pd.DataFrame, claims: list[dict], **params) -> dict:
    """metrics.json: the mean cos and dev per flow (mean over seeds), per seed, the parameters and the claims."""
    ps = per_seed(align)
    m = ps.groupby("flow")[["cos", "dev"]].mean()
    return {"mean_cos": {f: float(m.loc[f, "cos"]) for f in m.index},
            "mean_dev": {f: float(m.loc[f, "dev"]) for f in m.index},
            "per_seed": ps.to_dict(orient="records"), "params": params, "claims": claims}


def summary(m: dict) -> str:
    """The short deterministic text nbval compares (3 significant digits) with the verdicts."""
    return report.summary({"mean_cos": m["mean_cos"], "mean_dev": m["mean_dev"],
                           "verdicts": [c["verdict"] for c in m["claims"]]}, digits=3)
