r"""Does a consistency model satisfy the paper's theory? ``judge`` answers for any model, on any registered data set.

``judge(model, data, quick=False, teacher=None)`` runs every theory row of the notebooks toy_flows (Fig. 1, the
comparison with minibatch OT, Eq. 16), ct_cd_gap (Theorem 1 (i) and (ii), the deterministic coupling, Fig. 2,
Theorem 2) and transport_cost (Corollary 1, Fig. 3, minibatch OT against its batch size) on ``model``, beside the
exact reference of the data (its exact flow map; for Corollary 1 and Theorem 1's limit the exact flow of a continuous
Gaussian mixture) and the negative controls each row must reject (docs/method.md section 7):

- ``model``: a consistency function ``model(y, t) -> x^`` (a torch module or any callable; y batch-first, t a
  (batch,) tensor of levels), acting row by row. Its ``sigma_min`` / ``sigma_max`` attributes are used when
  present (default 0.002 and 80; the levels above sigma_max are left out). Theorem 1 (ii) needs its parameters (an
  ``nn.Module``); a plain callable leaves that row inconclusive.
- ``data``: the name of a registered data set ("digits", "two_gaussians", ..., ``gclib.data.REGISTRY``) or a tensor
  of its finite point set (N, ...). The quality guard uses the data set's own metric (FD_digits for digits, FID
  for natural images, W2 for 2-D point sets); for a tensor that is not 2-D, pass ``metric=``.
- ``teacher``: an optional velocity ``teacher(y, t)`` that CD uses in the gap rows (default: the exact velocity of
  the data); Theorem 1's limit always uses the true velocity, so a wrong teacher fails the limit row.
- ``quick``: small sample sizes (about 2 minutes on digits on one CPU thread); the default sizes are the
  notebooks' cpu profiles (several minutes on 2 cores).

Every row is judged by ``gclib.experiments.verdicts``: bounds never refute the wrong way, and a control that is not
rejected caps the row at "inconclusive" and is named. ``judge`` returns a ``Judgement``: its ``rows`` (claim,
paper, verdict, measured, the subjects' and controls' verdicts, power), the measurement ``tables`` the notebooks
plot, and ``table()`` (a DataFrame of the rows). The notebooks build their tables with it (``label="trained"``,
``joint=True``: a row then holds only when the trained model and the exact reference both hold).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

GROUPS = ("toy_flows", "ct_cd_gap", "transport_cost")

# The notebooks' cpu profiles (params/<notebook>/cpu.yaml), the default sizes of ``judge``.
FULL = {
    "toy_flows": dict(seeds=list(range(10)), n_samples=4000, t_pred=2.0, t_max=3.0, n_levels=16,
                      ot_batches=[8, 32, 256], eq16_ts=[0.2, 1.0], eq16_n=1000, endpoint_tol=0.05, level=0.9,
                      ideal_steps=64),
    "ct_cd_gap": dict(T=1.0, Ns=[10, 40, 160, 640, 2560, 10240], n_gap=8192, n_limit=49152, huber_cs=[None],
                      rel_tol=0.1, ideal_Ns=[10240], ideal_n=2560, mixture_n=2048, ideal_steps=32, grad_Ns=[10240],
                      grad_n=2048, grad_tol=0.05, proxy_ts=[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 80.0], proxy_n=2048,
                      ot_batch=256, ratio_max=0.5, level=0.9, seed=0),
    "transport_cost": dict(ts=[0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0], n=2048, ot_n=1024,
                           ot_batch_sizes=[64, 256, 1024], n_near=2, ideal_steps=32, level=0.9, seed=0),
}
# quick=True: about 2 minutes on digits on one CPU thread (measured in benchmarks/judge_quick.py)
QUICK = {
    "toy_flows": dict(seeds=[0, 1, 2], n_samples=256, t_pred=2.0, t_max=3.0, n_levels=6, ot_batches=[8, 64],
                      eq16_ts=[0.2, 1.0], eq16_n=128, endpoint_tol=0.05, level=0.9, ideal_steps=16),
    "ct_cd_gap": dict(T=1.0, Ns=[10, 160, 2560], n_gap=512, n_limit=1024, huber_cs=[], rel_tol=0.1,
                      ideal_Ns=[2560], ideal_n=128, mixture_n=1024, ideal_steps=16, grad_Ns=[2560], grad_n=512,
                      grad_tol=0.05, proxy_ts=[0.5, 5.0, 80.0], proxy_n=512, ot_batch=128, ratio_max=0.5, level=0.9,
                      seed=0),
    "transport_cost": dict(ts=[0.02, 0.05, 1.0, 80.0], n=512, ot_n=256, ot_batch_sizes=[16, 64, 256], n_near=2,
                           ideal_steps=16, level=0.9, seed=0),
}


@dataclass
class Judgement:
    """What ``judge`` returns: ``rows`` (one dict per theory row: claim, paper, verdict, measured, subjects,
    controls, control, control_verdict, unrejected, power, group), ``tables`` (the measurements, by name:
    alignment, eq16, gap_table, limits, gradients, deterministic, proxy, costs, continuous, guards, ...),
    ``info`` (the data set, metric, sizes, seconds per group). Iterating gives the rows."""
    rows: list
    tables: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k):
        return self.rows[k]

    def table(self):
        """The rows as a DataFrame: group, claim, verdict, measured, controls, unrejected, power."""
        import pandas as pd
        cols = ["group", "claim", "verdict", "measured", "controls", "unrejected", "power"]
        return pd.DataFrame([{c: r.get(c) for c in cols} for r in self.rows], columns=cols)


class _Function(nn.Module):
    """A callable ``f(y, t)`` (a plain function, or a module without sigma_min / sigma_max) as a model with those
    attributes; a module's parameters stay its own (registered here as a submodule)."""

    def __init__(self, fn, sigma_min: float, sigma_max: float):
        super().__init__()
        self.fn, self.sigma_min, self.sigma_max = fn, float(sigma_min), float(sigma_max)

    def forward(self, y, t):
        return self.fn(y, t)


def _resolve_data(data, metric):
    """(tensor of the finite point set, metric, name) for a registered name or a tensor; one clear error else."""
    from .data import get_dataset, load_dataset, to_float
    if isinstance(data, str):
        ds = get_dataset(data)  # ConfigError naming the registered sets
        x = to_float(load_dataset(data, n=8192, seed=0))
        return x, metric or ds.metric, data
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"judge: data must be a registered data set's name or a tensor, not {type(data).__name__}")
    if data.ndim < 2 or len(data) < 2:
        raise ValueError(f"judge: data must be a tensor (N, ...) of at least 2 points; got shape {tuple(data.shape)}")
    if metric is None:
        if data.ndim != 2:
            raise ValueError(f"judge: data is a tensor of shape {tuple(data.shape)}; pass metric= (e.g. 'fd_digits' "
                             f"or 'fid'): the quality metric is never guessed from an image shape")
        metric = "w2"
    return to_float(data) if not data.is_floating_point() else data.to(torch.float32), metric, None


def _check_model(model, data: torch.Tensor):
    """The model as an nn.Module with sigma_min / sigma_max, after one call on two data rows (a clear error when
    the call fails or returns another shape)."""
    if not callable(model):
        raise TypeError(f"judge: model must be a consistency function model(y, t) -> x^, not {type(model).__name__}")
    smin, smax = float(getattr(model, "sigma_min", 0.002)), float(getattr(model, "sigma_max", 80.0))
    has = isinstance(model, nn.Module) and hasattr(model, "sigma_min") and hasattr(model, "sigma_max")
    m = model if has else _Function(model, smin, smax)
    from .metrics._util import eval_mode, model_device_dtype
    dev, dt = model_device_dtype(m, data)
    y = data[:2].to(dev, dt)
    try:
        with eval_mode(m), torch.no_grad():
            out = m(y, torch.full((2,), min(1.0, smax), device=dev, dtype=dt))
    except Exception as err:  # noqa: BLE001 - the user's model: say what failed, in one line
        raise ValueError(f"judge: model(y, t) failed on two rows of the data (y {tuple(y.shape)}, t (2,)): "
                         f"{type(err).__name__}: {err}") from err
    if tuple(out.shape) != tuple(y.shape):
        raise ValueError(f"judge: model(y, t) returned shape {tuple(out.shape)} for y of shape {tuple(y.shape)}; a "
                         f"consistency function returns x^ of y's shape")
    return m


def settings_of(group: str, params) -> dict:
    """``settings`` for ``judge`` from a notebook's checked parameters (the namespace ``check_params`` returns, or a
    dict): {group: the parameters whose names ``judge`` knows for that group}."""
    if group not in GROUPS:
        raise ValueError(f"group={group!r} is not valid; allowed values: {', '.join(map(repr, GROUPS))}")
    p = params if isinstance(params, dict) else vars(params)
    return {group: {k: p[k] for k in FULL[group] if k in p}}


def _settings(quick: bool, settings: dict | None, groups) -> dict:
    base = QUICK if quick else FULL
    out = {g: dict(base[g]) for g in groups}
    for g, over in (settings or {}).items():
        if g not in GROUPS:
            raise ValueError(f"judge: settings has an unknown group {g!r}; allowed: {', '.join(map(repr, GROUPS))}")
        unknown = set(over) - set(FULL[g])
        if unknown:
            raise ValueError(f"judge: settings[{g!r}] has unknown names {sorted(unknown)}; allowed: {sorted(FULL[g])}")
        if g in out:
            out[g].update(over)
    return out


def judge(model, data, quick: bool = False, teacher=None, *, rows=None, settings: dict | None = None,
          label: str = "model", joint: bool = False, metric: str | None = None, mixture: str | None = None, out=None,
          cache=True) -> Judgement:
    """Judge every theory row for ``model`` on ``data`` (module docstring). ``rows``: None (every group) or the
    names of groups in ``GROUPS``; ``settings``: {group: {name: value}} over the defaults (``FULL``, or ``QUICK``
    with ``quick=True``; the names are the notebooks' parameters); ``label``: the model's name in the rows;
    ``joint``: a row holds only when the model AND the exact reference hold (the notebooks' tables; default: the
    model alone, the reference reported); ``metric``: the quality metric of a tensor data set; ``mixture``: the
    continuous density of Corollary 1's reference (a name of ``references.MIXTURES``; default the data set's own
    when it is one of them, else the paper's toy, two_gaussians; Theorem 1's limit row always uses
    ``references.SMOOTH_MIXTURE``, whose flow is differentiable at that row's scale); ``out``: a folder for the CSV
    tables; ``cache``: the run cache of the exact flow's outputs (``references.ideal_outputs``)."""
    groups = list(GROUPS) if rows is None else ([rows] if isinstance(rows, str) else list(rows))
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise ValueError(f"judge: rows={bad!r} is not valid; allowed values: {', '.join(map(repr, GROUPS))}")
    from .experiments.references import MIXTURES
    reserved = ("ideal", "wrong teacher", "collapsed", "untrained", "identity", "shrunk 0.5", "shrunk 0.7",
                "Gaussian fit", "minibatch OT")
    if label in reserved or label.startswith("GC "):
        raise ValueError(f"judge: label={label!r} is reserved (a reference or a control); name the model otherwise")
    if mixture is not None and mixture not in MIXTURES:
        raise ValueError(f"judge: mixture={mixture!r} is not valid; allowed values: {', '.join(map(repr, MIXTURES))}")
    pts, metric, name = _resolve_data(data, metric)
    model = _check_model(model, pts)
    cfg = _settings(quick, settings, groups)
    require = (label, "ideal") if joint else (label,)
    result = Judgement([], {}, dict(dataset=name or f"tensor {tuple(pts.shape)}", metric=metric, quick=bool(quick),
                                    label=label, joint=bool(joint), settings=cfg, seconds={}))
    for g in groups:
        t0 = time.perf_counter()
        rows_, tables = _RUNNERS[g](model, pts, metric, mixture or name, teacher, cfg[g], label, require, out, cache)
        for r in rows_:
            r["group"] = g
        result.rows += rows_
        result.tables.update(tables)
        result.info["seconds"][g] = time.perf_counter() - t0
    return result


def _levels(ts, model) -> list:
    return [float(t) for t in ts if float(t) <= model.sigma_max]


def _toy(model, data, metric, name, teacher, s, label, require, out, cache):
    from .experiments import references
    from .experiments import toy_flows as tf
    preds = tf.predictors(model, data, label=label, ideal=references.IdealFlow(data, s["ideal_steps"], model.sigma_min,
                                                                               model.sigma_max))
    keep = {}
    align = tf.measure(s["seeds"], s["n_samples"], s["t_pred"], s["t_max"], s["n_levels"], s["ot_batches"], preds,
                       out=out, data=data, keep=keep)
    eq16 = tf.marginal_shift(s["seeds"], s["eq16_n"], _levels(s["eq16_ts"], model), preds, out=out, data=data)
    guard = references.guard({k[3:]: torch.cat(v) for k, v in keep.items() if k.startswith("GC ")},
                             torch.cat(keep["IC"]), data, metric)
    rows = tf.alignment_claims(align, eq16, s["endpoint_tol"], s["level"], guard=guard, labels=(label, "ideal"),
                               require=require)
    return rows, dict(alignment=align, eq16=eq16, toy_guard=guard, toy_predictors=preds)


def _gap(model, data, metric, name, teacher, s, label, require, out, cache):
    from .experiments import ct_cd_gap as gap
    from .experiments import references
    from .experiments import transport_cost as tc
    smin, smax = model.sigma_min, model.sigma_max
    ideal = references.IdealFlow(data, s["ideal_steps"], smin, smax)
    settings = gap.gap_settings(int(data[0].numel()), s["huber_cs"])
    table, limits, gaps = gap.gap_curves({label: model, "ideal": ideal}, data, settings, T=s["T"], Ns=s["Ns"],
                                         n=s["n_gap"], n_limit=s["n_limit"], ideal_Ns=s["ideal_Ns"],
                                         ideal_n=s["ideal_n"], seed=s["seed"], level=s["level"], out=out,
                                         label=label, teacher=teacher, mixture_n=s["mixture_n"],
                                         mixture=references.GaussianMixtureFlow.smooth(sigma_min=smin, sigma_max=smax))
    has_params = any(True for _ in model.parameters())
    grads = gap.gradient_rows(model, data, T=s["T"], Ns=s["grad_Ns"], n=s["grad_n"], seed=s["seed"], out=out,
                              teacher=teacher, level=s["level"]) if has_params else None
    det = gap.deterministic({label: model, "ideal": ideal}, data, T=s["T"], N=s["Ns"][-1], n=s["n_gap"],
                            seed=s["seed"], data_set={label: gaps[(label, "squared L2")]})
    ts = _levels(s["proxy_ts"], model)
    x, z = tc.draws(data, s["proxy_n"], s["seed"])
    ideal_out = references.ideal_outputs(data, x, z, ts, s["ideal_steps"], cache=cache)
    pre = references.Precomputed(ideal_out, x, z, ideal.name, sigma_min=smin, sigma_max=smax)
    ends = {label: model, "ideal": ideal_out, **references.controls(data, smin, smax),
            **references.generator_controls(data, pre, smin, smax)}
    plugins = {"ideal": lambda xh, zz, t: references.ideal_outputs(data, xh, zz, [t], s["ideal_steps"], cache)[t]}
    proxy = gap.plugin_proxies(data, ts, ends, n=s["proxy_n"], ot_batch=s["ot_batch"], seed=s["seed"], out=out,
                               plugins=plugins, no_plugin=("shrunk 0.5", "shrunk 0.7"), metric=metric)
    guard = gap.proxy_guard(proxy, metric)
    rows = gap.gap_claims(limits, grads, det, s["rel_tol"], s["grad_tol"], label, require, s["level"])
    if grads is None:
        rows.append(_no_params_row())
    rows += gap.proxy_claims(proxy, guard, s["ratio_max"], s["level"], label, require)
    return rows, dict(gap_table=table, limits=limits, gap_results=gaps, gradients=grads, deterministic=det,
                      proxy=proxy, proxy_guard=guard, ideal=ideal)


def _no_params_row() -> dict:
    from .experiments.verdicts import judged_row
    return judged_row("Theorem 1 (ii): the scaled gradients of L_CT and L_CD (alpha = 2: the same limit)",
                      "Theorem 1 (ii)", {"model": ("inconclusive", "the model has no parameters")}, {})


def _transport(model, data, metric, name, teacher, s, label, require, out, cache):
    from .experiments import references
    from .experiments import transport_cost as tc
    smin, smax = model.sigma_min, model.sigma_max
    ts = _levels(s["ts"], model)
    x, z = tc.draws(data, s["n"], s["seed"])
    ideal_ends = references.ideal_outputs(data, x, z, [smin, *ts], s["ideal_steps"], cache=cache)
    ideal = references.Precomputed(ideal_ends, x, z, references.IdealFlow(data, s["ideal_steps"]).name,
                                   sigma_min=smin, sigma_max=smax)
    models = {label: model, "ideal": ideal, **references.controls(data, smin, smax),
              **references.generator_controls(data, ideal, smin, smax)}
    costs = tc.transport_costs(models, data, ts, n=s["n"], batch_sizes=s["ot_batch_sizes"], ot_n=s["ot_n"],
                               seed=s["seed"], out=out, every_level=(label, "ideal"), metric=metric, own_bound=label)
    flow = references.GaussianMixtureFlow.of(name or "", sigma_min=smin, sigma_max=smax)
    near = sorted(t for t in ts if t > smin)[:s["n_near"]]
    cont = tc.continuous_costs(flow, near, n=s["n"], seed=s["seed"])
    rows = tc.transport_claims(costs, cont, s["n_near"], s["level"], label, require)
    return rows, dict(costs=costs, continuous=cont, continuous_flow=flow, transport_ideal=ideal)


_RUNNERS = {"toy_flows": _toy, "ct_cd_gap": _gap, "transport_cost": _transport}
