r"""Fig. 1 and Eq. 16 (docs/method.md sections 3-4): on two Diracs, how well each coupling's straight paths follow
the PF-ODE velocity field, and how pure GC moves the intermediate marginals, each measured on a trained predictor,
on the exact generator (the ideal) and on broken predictors the rows must reject.

Data: two points (0, +0.5) and (0, -0.5); their ideal denoiser, velocity v_t and flow map are exact
(``gclib.exact``). A coupling pairs an endpoint x0 with a noise z and training moves along x0 + t z, whose velocity
is z. IC keeps independent pairs, OT re-matches them by exact minibatch OT (batch sizes ``ot_batches``), GC
(mu = 1) replaces x0 by x^ = f(x0 + t_pred z, t_pred) and keeps z, with f one of: the exact flow map of the two
points ("GC ideal"), the EMA network of an IC model trained on the two points ("GC trained", named by the params
file; ``references.trained``) and the controls ("GC collapsed": f = the data mean, "GC untrained":
f = c_skip(t) x_t, "GC identity": f = x_t). Alignment along the paths: the mean cosine between z and
v_t(x0 + t z), and the mean ||z - v_t(x0 + t z)||^2 over the levels. Each seed draws fresh (x0, z) shared by every
flow, so flows are compared by paired differences over seeds (``common.paired_verdict``).

Eq. 16 (``marginal_shift``): pure GC keeps the endpoint law (x^ is distributed as the data when f is the exact
flow) but not the intermediate ones: the law of x^_t + t z differs from IC's x + t z. Measured by exact W2 (POT)
against fresh IC draws, beside the W2 between two independent IC samples (the floor), per level and seed.

Every function takes the finite data set ``data`` (default: the two Diracs), so ``gclib.claims.judge`` runs the
same rows on any point set (digits included). The controls add the poor generators of
``references.generator_controls`` (the exact flow shrunk toward the mean by 0.5 and 0.7, the Gaussian fit), and
every GC row asks its endpoints to pass the quality guard (``references.guard``: W2 on 2-D data, FD_digits on
digits); ``verdicts.judged_row`` applies the controls (a control not rejected caps the row at inconclusive).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from .. import report
from ..exact import velocity
from ..coupling_paths import coupled_endpoints, exact_generator, path_alignment
from . import common, references
from .common import combine_verdicts, interval_verdict, paired_verdict
from .verdicts import judged_row
from .params import between, distinct_ints, int_at_least, levels, nonempty, positive_int
from .spec import Param, Spec, register_spec

DIRACS = ((0.0, 0.5), (0.0, -0.5))
PAPER = {
    "gc_ic": "Fig. 1 caption (two Diracs, closed-form generator): 'On this example, GC sample paths appear more "
             "aligned to the velocity field' than the PF-ODE (IC) sample paths.",
    "gc_ot": "Not in Fig. 1 (its caption compares GC with IC only). Abstract (arXiv v2): GC 'surpasses dedicated "
             "optimal transport-based consistency models in effectively reducing the noise-data transport cost'; "
             "the OT comparison of the gap itself is Fig. 2 (ct_cd_gap).",
    "eq16": "Eq. 16 / Section 4 (docs/method.md section 4): pure GC (mu = 1) keeps the endpoint marginal but shifts "
            "the intermediate marginals away from those of the data's diffusion, why mu = 1 can degrade.",
}
GC_LABELS = ("ideal", "trained", "collapsed", "untrained", "identity", "shrunk 0.5", "shrunk 0.7", "Gaussian fit")
CONTROLS = ("collapsed", "untrained", "identity", "shrunk 0.5", "shrunk 0.7", "Gaussian fit")


# notebooks/toy_flows.ipynb's parameters, each declared once (default: the parameters cell spells the same; doc;
# rule; ``config=True``: a Config field of the trained predictor); t_pred against the trained model's sigma_max
# is checked in ``setup``.
SPEC = register_spec(Spec("toy_flows", (
    Param("variant", "default", "results/toy_flows/<variant>/"),
    Param("seeds", [0, 1, 2, 3, 4], "each seed draws fresh (x0, z); the claims pair the flows seed by seed",
          rule=distinct_ints),
    Param("n_samples", 2000, "pairs per seed used for the alignment measurements", rule=int_at_least(2)),
    Param("n_paths", 30, "paths drawn per panel (first seed)", rule=positive_int),
    Param("t_pred", 2.0, "level at which the predictor makes GC endpoints", rule=between(0.0, float("inf"))),
    Param("t_max", 3.0, "largest level shown and measured", rule=between(0.02, float("inf"))),
    Param("n_levels", 12, "levels in the alignment curves (log-spaced in [0.02, t_max])", rule=int_at_least(2)),
    Param("ot_batches", [8, 32, 256], "minibatch sizes of the OT coupling", rule=nonempty(int_at_least(2))),
    Param("eq16_ts", [0.2, 1.0], "Eq. 16: levels of the intermediate marginals", rule=levels(lo=0.002, hi=5.0)),
    Param("eq16_n", 300, "draws per seed for the W2 of Eq. 16", rule=int_at_least(2)),
    Param("endpoint_tol", 0.05, "Eq. 16: the endpoints match when W2(x^, data) exceeds its floor by less than this",
          rule=between(0.0, float("inf"))),
    Param("train_steps", 300, "the trained predictor: IC on the two Diracs (params/train/toy.yaml + overrides)",
          rule=positive_int),
    Param("train_overrides", common.TRAIN_OVERRIDES,
          "Config fields of the trained predictor"),
    Param("level", 0.9, "level of the paired intervals over seeds", rule=between(0.0, 1.0)),
)))
RULES = SPEC.rules()


def setup(params, spec: Spec = SPEC):
    """Check the parameters of notebooks/toy_flows.ipynb (the mapping ``check_params`` returns; ``spec``'s defaults
    fill what it lacks; every rule, one line per bad value, then t_pred against the model's sigma_max: one clear
    ValueError naming the parameter) -> (cfg, out): the training configuration of the trained predictor (an IC model
    of the two Diracs) and the results folder."""
    v = spec.values(params)
    p = SimpleNamespace(**v)
    cfg = common.train_config("two_diracs", "ic", steps=p.train_steps, seed=0,
                              **spec.with_config(v, p.train_overrides, "train_overrides"))
    if not p.t_pred <= cfg.sigma_max:
        raise ValueError(f"toy_flows: t_pred={p.t_pred!r} is not valid; it must be at most sigma_max={cfg.sigma_max}")
    return cfg, report.results_dir("toy_flows", p.variant)


def dirac_data() -> torch.Tensor:
    """The two Diracs, (2, 2) float64."""
    return torch.tensor(DIRACS, dtype=torch.float64)


def draws(seed: int, n_samples: int, data: torch.Tensor | None = None):
    """(data, x0, z) for one seed: x0 uniform on the rows of ``data`` (default: the two Diracs), z ~ N(0, I),
    float64, x0's shape."""
    data = dirac_data() if data is None else torch.as_tensor(data).to(torch.float64)
    g = torch.Generator().manual_seed(int(seed))
    x0 = data[torch.randint(0, len(data), (n_samples,), generator=g)]
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    return data, x0, z


class _Memo:
    """A predictor that remembers its last call (the shrunk controls reuse the exact flow's outputs)."""

    def __init__(self, f):
        self.f, self.last = f, None

    def __call__(self, x, sigma):
        s = torch.as_tensor(sigma)
        if self.last is not None and self.last[0].shape == x.shape and torch.equal(self.last[0], x) \
                and torch.equal(self.last[1], s):
            return self.last[2]
        out = self.f(x, sigma)
        self.last = (x.clone(), s.clone(), out)
        return out


def predictors(trained_model=None, data: torch.Tensor | None = None, label: str = "trained", ideal=None) -> dict:
    """{label: f(x, sigma)} for GC: "ideal" (the exact generator of ``data``, default the two Diracs; or ``ideal``),
    the model under ``label`` (if given) and the controls (``CONTROLS``: collapsed, untrained, identity, the exact
    flow shrunk by 0.5 and 0.7, the Gaussian fit); every one returns float64 of its input's shape."""
    data = dirac_data() if data is None else torch.as_tensor(data).to(torch.float64)
    exact = _Memo(ideal if ideal is not None else exact_generator(data))
    out = {"ideal": exact}
    if trained_model is not None:
        def f(x, sigma, m=trained_model):
            from ..metrics._util import eval_mode, model_device_dtype
            dev, dt = model_device_dtype(m, x)
            with eval_mode(m), torch.no_grad():
                return m(x.to(dev, dt), torch.as_tensor(sigma).to(dev, dt)).to("cpu", torch.float64)
        out[label] = f
    ctl = {**references.controls(data), **references.generator_controls(data, exact)}
    for k, m in ctl.items():
        out[k] = lambda x, sigma, m=m: m(x, sigma)
    return out


def endpoints(seed: int, n_samples: int, t_pred: float, ot_batches, preds: dict, data=None) -> tuple:
    """(data, z, {flow label: endpoints}) for one seed: "IC", "OT B=b" per batch size, "GC <label>" per
    predictor; row k of each flow's endpoints is paired with z_k."""
    data, x0, z = draws(seed, n_samples, data)
    ends = {"IC": x0}
    for b in ot_batches:
        ends[f"OT B={int(b)}"] = coupled_endpoints("ot", x0, z, data, ot_batch=int(b))
    for k, p in preds.items():
        ends[f"GC {k}"] = coupled_endpoints("gc", x0, z, data, t_pred=t_pred, predictor=p)
    return data, z, ends


def levels(t_max: float, n_levels: int) -> np.ndarray:
    """The levels of the alignment curves: log-spaced in [0.02, t_max]."""
    return np.geomspace(0.02, t_max, n_levels)


def measure(seeds, n_samples: int, t_pred: float, t_max: float, n_levels: int, ot_batches, preds: dict,
            out=None, data=None, keep: dict | None = None) -> pd.DataFrame:
    """The alignment of each flow's paths per level and seed: columns seed, flow, t, cos, cos_se, dev, dev_se
    (``gclib.coupling_paths.path_alignment``; rows flattened). Writes alignment.csv to ``out`` if given. ``keep`` (a dict)
    collects the endpoints of every seed: keep["IC"] (the real draws x0) and keep["GC <label>"] (the guard's
    input)."""
    lv = levels(t_max, n_levels)
    frames = []
    for s in seeds:
        data_, z, ends = endpoints(s, n_samples, t_pred, ot_batches, preds, data)
        flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
        for f, e in ends.items():
            frames.append(path_alignment(flat(e), flat(z), flat(data_), lv).assign(flow=f, seed=int(s)))
            if keep is not None and (f == "IC" or f.startswith("GC ")):
                keep.setdefault(f, []).append(e)
    align = pd.concat(frames, ignore_index=True)[["seed", "flow", "t", "cos", "cos_se", "dev", "dev_se"]]
    if out is not None:
        report.save_table(align, Path(out) / "alignment.csv")
    return align


def per_seed(align: pd.DataFrame) -> pd.DataFrame:
    """Mean over levels of cos and dev, one row per (seed, flow)."""
    return align.groupby(["seed", "flow"], as_index=False)[["cos", "dev"]].mean()


def marginal_shift(seeds, n: int, ts, preds: dict, out=None, data=None) -> pd.DataFrame:
    """Eq. 16 per seed, predictor and level t: w2_gc = W2(x^_t + t z, fresh IC draws x' + t z'), with
    x^_t = f(x + t z, t) (pure GC at level t); w2_floor = W2(x + t z, the same fresh IC draws); and at the endpoint
    end_gc = W2(x^_t, fresh data draws) against end_floor = W2(x, the same fresh data draws). Exact OT (POT)."""
    from ..metrics import exact_ot_cost
    from ..metrics._util import as_rows64 as r
    rows = []
    for s in seeds:
        _, x, z = draws(10_000 + int(s), n, data)
        _, x2, z2 = draws(20_000 + int(s), n, data)
        end_floor = float(exact_ot_cost(r(x), r(x2)).cost) ** 0.5
        for t in ts:
            t = float(t)
            ic2 = r(x2 + t * z2)
            w2_floor = float(exact_ot_cost(r(x + t * z), ic2).cost) ** 0.5
            for label, p in preds.items():
                xh = r(p(x + t * z, torch.full((n,), t, dtype=torch.float64)).to(torch.float64))
                xh, x2r, zr = torch.as_tensor(xh), r(x2), r(z)
                rows.append(dict(seed=int(s), predictor=label, t=t,
                                 w2_gc=float(exact_ot_cost(xh.numpy() + t * zr, ic2).cost) ** 0.5, w2_floor=w2_floor,
                                 end_gc=float(exact_ot_cost(xh.numpy(), x2r).cost) ** 0.5, end_floor=end_floor))
    df = pd.DataFrame(rows)
    if out is not None:
        report.save_table(df, Path(out) / "eq16.csv")
    return df


def plot_paths(seed: int, n_samples: int, n_paths: int, t_pred: float, t_max: float, ot_batches, preds: dict,
               out) -> None:
    """IC, the largest-batch OT and GC (ideal, trained) paths over the probability path in the (t, y) plane: the
    density of y_t (shading, normalised per level), the velocity field (1, v_t(y)) (arrows) and the paths
    y0 + t z_y of the first ``n_paths`` pairs of seed ``seed``. Saved as paths.png/pdf and shown."""
    from matplotlib.figure import Figure
    data, z, ends = endpoints(seed, n_samples, t_pred, ot_batches[-1:], {k: preds[k] for k in ("ideal", "trained")
                                                                          if k in preds})
    ts = np.linspace(0.02, t_max, 200)
    ys = np.linspace(-2.5, 2.5, 200)
    T, Y = np.meshgrid(ts, ys)
    dens = sum(np.exp(-(Y - c) ** 2 / (2 * T ** 2)) / T for c in (0.5, -0.5))
    dens /= dens.max(axis=0, keepdims=True)
    tq, yq = np.meshgrid(np.linspace(0.1, t_max, 16), np.linspace(-2.3, 2.3, 15))
    vq = velocity(torch.tensor(yq.reshape(-1, 1)), data[:, 1:], torch.tensor(tq.reshape(-1))).numpy().reshape(yq.shape)
    norm = np.sqrt(1 + vq ** 2)
    fig = Figure(figsize=(4.0 * len(ends), 3.8))
    axes = fig.subplots(1, len(ends), sharey=True, squeeze=False)[0]
    for ax, (f, e) in zip(axes, ends.items()):
        ax.pcolormesh(T, Y, dens, cmap="Blues", shading="auto", alpha=0.8)
        ax.quiver(tq, yq, 1 / norm, vq / norm, color="0.35", width=0.003, scale=28)
        ee, zz = e[:n_paths, 1].numpy(), z[:n_paths, 1].numpy()
        for k in range(min(n_paths, len(ee))):
            ax.plot(ts, ee[k] + ts * zz[k], color="C3", lw=0.9, alpha=0.8)
        ax.set(title=f, xlabel="t", xlim=(0, t_max), ylim=(-2.5, 2.5))
    axes[0].set_ylabel("y")
    fig.tight_layout()
    report.show_figure(fig, Path(out) / "paths.png")


def plot_alignment(align: pd.DataFrame, out) -> None:
    """Mean cos(z, v_t) and mean ||z - v_t||^2 per level for each flow (mean over seeds, band: min-max over
    seeds). Saved as alignment.png/pdf and shown."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 3.8))
    axes = fig.subplots(1, 2)
    for k, f in enumerate(dict.fromkeys(align.flow)):
        g = align[align.flow == f].groupby("t")
        ls = "--" if any(f.endswith(c) for c in CONTROLS) else "-"
        for ax, col in zip(axes, ("cos", "dev")):
            m, lo, hi = g[col].mean(), g[col].min(), g[col].max()
            ax.plot(m.index, m.to_numpy(), ls, marker="o", ms=2, color=f"C{k % 10}", label=f)
            ax.fill_between(m.index, lo.to_numpy(), hi.to_numpy(), color=f"C{k % 10}", alpha=0.15)
    axes[0].set(xscale="log", xlabel="t", ylabel=r"mean cos(z, $v_t$)", title="path direction vs PF-ODE velocity")
    axes[1].set(xscale="log", yscale="log", xlabel="t", ylabel=r"$E\|z - v_t(x_t)\|^2$",
                title="deviation from the velocity field")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    report.show_figure(fig, Path(out) / "alignment.png")


def _compare(ps: pd.DataFrame, a: str, b: str, level: float):
    """Paired verdicts over seeds that flow a aligns better than flow b: larger mean cos and smaller mean dev."""
    w = ps.pivot(index="seed", columns="flow", values=["cos", "dev"])
    v_cos = paired_verdict(w[("cos", a)].to_numpy(), w[("cos", b)].to_numpy(), "greater", level)
    v_dev = paired_verdict(w[("dev", a)].to_numpy(), w[("dev", b)].to_numpy(), "less", level)
    measured = (f"cos {w[('cos', a)].mean():.3f} vs {w[('cos', b)].mean():.3f}, dev {w[('dev', a)].mean():.3g} vs "
                f"{w[('dev', b)].mean():.3g}; dev diff {v_dev.mean:.3g} [{v_dev.lo:.3g}, {v_dev.hi:.3g}]")
    return combine_verdicts([v_cos.verdict, v_dev.verdict]), measured


def _eq16(m: pd.DataFrame, label: str, tol: float, level: float):
    """Eq. 16 for one predictor: at every level the intermediate W2 above its floor (paired over seeds) AND the
    endpoint excess W2(x^, data) - floor below ``tol`` (its upper bound)."""
    d = m[m.predictor == label]
    vs, txt = [], []
    for t, g in d.groupby("t"):
        v = paired_verdict(g.w2_gc.to_numpy(), g.w2_floor.to_numpy(), "greater", level)
        e = paired_verdict(g.end_gc.to_numpy(), g.end_floor.to_numpy(), "less", level)
        ev = interval_verdict(e.lo, e.hi, "less", tol)
        vs += [v.verdict, ev]
        txt.append(f"t={t:g}: W2 {g.w2_gc.mean():.3g} vs floor {g.w2_floor.mean():.3g}, endpoint excess "
                   f"{e.mean:.3g} [{e.lo:.3g}, {e.hi:.3g}]")
    return combine_verdicts(vs), "; ".join(txt)


def _with_guard(v: tuple, guard, label: str) -> tuple:
    """A subject's (verdict, text) with the quality guard of its endpoints added (both must hold)."""
    if guard is None:
        return v
    gv, gt = guard.verdict(label)
    return combine_verdicts([v[0], gv]), f"{v[1]}; guard {gv}: {gt}"


def _row(text, paper, fn, labels=("trained", "ideal"), controls=CONTROLS, guard=None, require=None, power=""):
    subjects = {k: _with_guard(fn(k), guard, k) for k in labels}
    cv = {k: _with_guard(fn(k), guard, k) for k in controls}
    return judged_row(text, paper, subjects, cv, require=tuple(require or labels), power=power,
                      note=guard.text() if guard is not None else "")


def _seed_power(ps: pd.DataFrame, a: str, b: str, level: float) -> str:
    """What the paired test over seeds resolves: the smallest true difference of the mean ||z - v||^2 it declares
    with 80% probability at the measured spread of the per-seed differences."""
    from .common import detectable_effect
    w = ps.pivot(index="seed", columns="flow", values="dev")
    d = (w[a] - w[b]).to_numpy()
    if len(d) < 2 or not np.std(d, ddof=1) > 0:
        return f"{len(d)} seeds"
    return (f"{len(d)} seeds; 80% power for a dev difference of {detectable_effect(np.std(d, ddof=1), len(d), 0.8, level):.2g} "
            f"({a} vs {b})")


def _eq16_power(m: pd.DataFrame, label: str, level: float) -> str:
    """Eq. 16's shift part: the chance, at the weakest level, that the paired interval over seeds shows the
    measured shift (normal approximation)."""
    from .verdicts import interval_power
    d = m[m.predictor == label]
    pws = []
    for _, g in d.groupby("t"):
        diff = (g.w2_gc - g.w2_floor).to_numpy()
        if len(diff) > 1:
            pws.append(interval_power(float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff))), level))
    return (f"{d.seed.nunique()} seeds x {d.t.nunique()} levels; {label}'s shift shown with {min(pws):.0%} at the "
            f"weakest level" if pws else f"{d.seed.nunique()} seeds")


def alignment_claims(align: pd.DataFrame, eq16: pd.DataFrame | None = None, endpoint_tol: float = 0.05,
                     level: float = 0.9, controls=CONTROLS, guard=None, labels=("trained", "ideal"),
                     require=None) -> list[dict]:
    """Fig. 1's and Eq. 16's rows, each on the GC predictors ``labels`` (those in ``require``, default all, must
    hold) and on the controls (each must be refuted, else the row is at most inconclusive):

    1. GC aligns better than IC (larger mean cos AND smaller mean ||z - v||^2, paired over seeds).
    2. GC aligns better than minibatch OT, one verdict per OT batch size (the row holds only if it holds at every
       batch size).
    3. Eq. 16: pure GC shifts the intermediate marginals (W2 above its floor at every level) while its endpoints
       match the data (endpoint excess below ``endpoint_tol``).
    ``guard`` (a ``references.Guard`` of the GC endpoints): each subject must also pass it."""
    ps = per_seed(align)
    flows = list(dict.fromkeys(ps.flow))
    ots = [f for f in flows if f.startswith("OT")]
    present = [c for c in controls if f"GC {c}" in flows]
    labels = [k for k in labels if f"GC {k}" in flows]
    req = require or labels
    pw = _seed_power(ps, f"GC {labels[0]}", "IC", level) if labels else ""
    out = [_row("GC paths follow the PF-ODE velocity field better than IC paths (Fig. 1)", PAPER["gc_ic"],
                lambda k: _compare(ps, f"GC {k}", "IC", level), labels, present, guard, req, pw)]

    def vs_ot(k):
        parts = [(_compare(ps, f"GC {k}", o, level), o) for o in ots]
        return combine_verdicts(v[0] for v, _ in parts), ", ".join(f"{o}: {v[0]}" for v, o in parts)
    out.append(_row("GC paths follow the PF-ODE velocity field better than minibatch-OT paths, at every OT batch "
                    "size tried", PAPER["gc_ot"], vs_ot, labels, present, guard, req, pw))
    if eq16 is not None and len(eq16):
        out.append(_row(f"Pure GC (mu = 1) shifts the intermediate marginals away from IC's (W2 above the "
                        f"IC-vs-IC floor at every level) while its endpoints match the data (W2 excess below "
                        f"{endpoint_tol:g}) (Eq. 16)", PAPER["eq16"],
                        lambda k: _eq16(eq16, k, endpoint_tol, level), [k for k in labels if k in set(eq16.predictor)],
                        [c for c in present if c in set(eq16.predictor)], guard, req,
                        _eq16_power(eq16, labels[0] if labels else "ideal", level)))
    return out


def metrics(align: pd.DataFrame, claims: list[dict], eq16=None, **params) -> dict:
    """metrics.json: the mean cos and dev per flow (mean over seeds), per seed, Eq. 16's table, the parameters and
    the claims."""
    ps = per_seed(align)
    m = ps.groupby("flow")[["cos", "dev"]].mean()
    return {"mean_cos": {f: float(m.loc[f, "cos"]) for f in m.index},
            "mean_dev": {f: float(m.loc[f, "dev"]) for f in m.index},
            "per_seed": ps.to_dict(orient="records"),
            "eq16": [] if eq16 is None else eq16.to_dict(orient="records"), "params": params, "claims": claims}


def summary(m: dict) -> str:
    """The short deterministic text nbval compares (3 significant digits) with the verdicts."""
    return report.summary({"mean_cos": m["mean_cos"], "mean_dev": m["mean_dev"],
                           "verdicts": [c["verdict"] for c in m["claims"]],
                           "control_verdicts": [c.get("control_verdict") for c in m["claims"]]}, digits=3)
