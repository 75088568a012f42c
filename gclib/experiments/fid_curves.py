"""Training sweeps behind the FID-curve figures (Figs. 4 and 5, Table 1): training, figures and the final
evaluation. ``run_sweep`` trains each run of a ``Sweep`` (``fid_sweep``: the runs and the validated notebook
parameters; cached by config hash through ``gclib.train.train``, optionally in parallel worker processes) and
returns every run's evaluation curve in one long DataFrame; ``final_evaluation`` scores each run's final model;
``fid_claims`` judges the paper's statements on them. The names of both modules are re-exported here, so the
notebook and user code need one import.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .fid_claims import (PAPER, _final_summary, _pair, budget_claims, endpoint, final_table,  # noqa: F401
                         per_seed, preregistered_claims, steps_to_reach, summary, sweep_claims, write_claims)
from .fid_sweep import (DIGITS_CLASSIFIER_METRICS, ENDPOINTS, METRIC_LABELS, METRICS, RULES, SPEC,  # noqa: F401
                        SWEEP_KEYS, Run, Sweep, _read_committed, curve_flows, flow_label, make_sweep, mu_label,
                        run_config, setup, sweep_from_params, sweep_runs, tex_label, uses_digits_classifier)

def _train_one(cfg: dict, threads: int | None = None, eval_fns: Sequence[Callable] = ()):
    """Worker and job entry point (module level, so a spawned process or a submitit job can import it); it imports
    the user's plugins first (``gclib.plugins``), so a registered coupling, metric or data set is known here too."""
    from ..plugins import load_plugins
    load_plugins()
    if threads:
        import torch
        torch.set_num_threads(threads)
    from ..config import run_dir_for
    from ..rundir import wait_for_run
    from ..train import train
    # a run another notebook or worker is training: wait for it (message, timeout) and reuse it
    res = wait_for_run(lambda: train(cfg, eval_fns=eval_fns), run_dir_for(cfg))
    return str(res.eval_csv), int(res.step)


def _finished(cfg: dict) -> bool:
    """Whether this configuration's run has finished (its done.json matches): such a run is never submitted."""
    from ..config import as_config, config_hash, run_dir_for
    from ..rundir import RunPaths
    from ..train import _finished as finished
    c = as_config(cfg)
    return finished(c, config_hash(c), RunPaths(run_dir_for(c))) is not None


def train_sweep(base: dict, runs: Sequence[Run], eval_fns: Sequence[Callable] = (), progress: Callable | None = None,
                workers: int = 1, executor=None) -> pd.DataFrame:
    """Train every run (config = ``run_config(base, run)``; cached by config hash) and return the evaluation
    curves: one row per (run, evaluated step) with columns label, family, seed, step and the metrics that the
    config's ``eval_metrics`` / ``eval_fns`` produce. ``workers`` > 1 trains that many runs at a time in spawned
    processes of one thread each (only without ``eval_fns``, which need not be picklable); results are identical
    to ``workers=1`` because every run is seeded by its configuration. ``executor`` (``gclib.executors``): None or
    'local' is this behaviour; {'kind': 'submitit', ...} submits every unfinished run as a job (with ``eval_fns``,
    pickled by cloudpickle) and waits for them; finished runs are read from their run directories at once."""
    from itertools import chain
    from ..executors import InProcess, executor_spec, make_executor
    spec = executor_spec(executor)
    if not spec.wait:
        raise ValueError("executor wait=false: a sweep needs its runs' curves (submit single runs with "
                         "gclib train --submit wait=false)")
    configs = [run_config(base, r) for r in runs]
    outcomes: list = [None] * len(runs)
    n_workers = spec.workers if spec.workers is not None else workers
    if spec.kind == "submitit":
        todo = [i for i, cfg in enumerate(configs) if not _finished(cfg)]
        cached = ((i, _train_one(configs[i])) for i in range(len(runs)) if i not in todo)  # never submitted
        submitted = ()
        if todo:
            jobs = make_executor(spec, default_folder=base.get("runs_dir")).run(
                _train_one, [(configs[i], None, tuple(eval_fns)) for i in todo], [configs[i]["name"] for i in todo])
            submitted = ((todo[j], out) for j, out in jobs)
        results = chain(cached, submitted)
    elif n_workers > 1 and not eval_fns and len(runs) > 1:
        results = make_executor(spec, n_workers).run(_train_one, [(cfg, 1) for cfg in configs])
    else:
        results = InProcess().run(_train_one, [(cfg, None, eval_fns) for cfg in configs])
    for k, (i, out) in enumerate(results):
        outcomes[i] = out
        if progress:
            progress(k, len(runs), runs[i], outcomes[i])
    frames = []
    for r, (eval_csv, step) in zip(runs, outcomes):
        ev = pd.read_csv(eval_csv) if Path(eval_csv).is_file() else pd.DataFrame({"step": [step]})
        frames.append(ev.assign(label=r.label, family=r.family, seed=r.seed))
    return pd.concat(frames, ignore_index=True)


def describe(sw: Sweep) -> str:
    """One line on what the sweep trains."""
    b = sw.base
    n_runs = len(sw.runs())
    return (f"dataset {b['dataset']}, model {b['model']}, {b['total_steps']} steps at batch {b['batch_size']} "
            f"({b['total_steps'] * b['batch_size']:,} training samples per run), {len(sw.seeds)} seeds, {n_runs} runs, "
            f"metric {sw.metric} every {b['eval_every'] or b['total_steps']} steps on {b['eval_n']} one-step samples")


def describe_final(sw: Sweep, final: pd.DataFrame | None) -> str:
    if final is None:
        return "no final evaluation: the final value of each run is its curve's last point"
    fe = sw.final_eval
    return (f"final evaluation of {len(final)} runs: {fe['n']} one-step samples x {len(fe['sampling_seeds'])} sampling "
            f"seeds {fe['sampling_seeds']} = {fe['n'] * len(fe['sampling_seeds'])} per run, against the whole data set")


def describe_curves(sw: Sweep, curves: pd.DataFrame) -> str:
    steps = sorted(int(s) for s in curves.step.unique() if s > 0)
    return f"{curves.groupby(['label', 'seed']).ngroups} runs; evaluated at steps {steps}"


def metric_check(sw: Sweep) -> pd.DataFrame | None:
    """For digits sweeps: ``digits_metric_check()`` (FD_digits, KID_digits and pixel W2 on degraded sets); written
    to metric_check.csv. None for other data sets."""
    from .. import report
    if not uses_digits_classifier(sw.base["dataset"]):
        return None
    t = digits_metric_check()
    report.save_table(t, sw.out / "metric_check.csv")
    return t.round({"fd_digits": 1, "kid_digits": 2, "pixel_w2": 3})


def run_sweep(sw: Sweep, progress: Callable | None = None) -> pd.DataFrame:
    """Train the sweep (IC at ``frozen_seed`` first when frozen predictors are needed), write curves.csv."""
    from .. import report
    if sw.reanalyse:
        report.save_table(sw.committed["curves"], sw.out / "curves.csv")
        return sw.committed["curves"]
    eval_fns = []
    if sw.metric == "fid":
        eval_fns = [fid_eval_fn(sw.base["dataset"], n=int(sw.fid.get("n", 50_000)),
                                data_root=sw.fid.get("data_root", "data"), weights_path=sw.fid.get("weights_path"),
                                cache_dir=str(Path(sw.base["runs_dir"]) / "fid_stats"))]
    if uses_digits_classifier(sw.base["dataset"]) and sw.metric in DIGITS_CLASSIFIER_METRICS:
        from ..metrics import digits_features
        digits_features()  # load and check the frozen classifier once, before any worker needs it
    runs = sw.runs()
    first = [r for r in runs if r.family != "frozen"]
    curves = train_sweep(sw.base, first, eval_fns, progress, sw.workers, sw.executor or None)
    frozen = [r for r in runs if r.family == "frozen"]
    if frozen:
        curves = pd.concat([curves, train_sweep(sw.base, frozen, eval_fns, progress, sw.workers, sw.executor or None)],
                           ignore_index=True)
    report.save_table(curves, sw.out / "curves.csv")
    return curves


def _curve_plot(sw: Sweep, curves: pd.DataFrame, labels: list, title: str, path_stem: str):
    import seaborn as sns
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter
    from .. import report
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    data = curves[curves.label.isin(labels)].assign(run=lambda d: d.label.map(tex_label))
    sns.lineplot(data=data, x="step", y=sw.metric, hue="run", hue_order=[tex_label(l) for l in labels],
                 errorbar=("ci", 90) if len(sw.seeds) > 1 else None, seed=0, marker="o", ax=ax)
    ax.set(yscale="log", xlabel="training iteration", ylabel=METRIC_LABELS.get(sw.metric, sw.metric), title=title)
    for axis in (ax.yaxis,):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(ScalarFormatter())
    ax.ticklabel_format(axis="x", style="plain")
    ax.legend(title=None)
    report.show_figure(fig, sw.out / f"{path_stem}.png")


def plot_sweep(sw: Sweep, curves: pd.DataFrame) -> None:
    """Fig. 5: the metric against training iterations for IC, GC at each mu and OT (mean, 90% band over seeds)."""
    _curve_plot(sw, curves, sw.mu_labels,
                       f"{sw.base['dataset']}: one-step samples, mean over {len(sw.seeds)} seeds (90% band)", "sweep")


def plot_frozen(sw: Sweep, curves: pd.DataFrame) -> None:
    """Fig. 4: GC with frozen IC predictors (strong, weak) against IC and GC with the EMA predictor."""
    if sw.frozen:
        _curve_plot(sw, curves, ["IC", mu_label(sw.frozen_mu)] + sw.frozen_labels,
                       "GC with a frozen IC predictor", "frozen")


def plot_samples(sw: Sweep, n: int = 64, seed: int = 0) -> None:
    """One-step samples from the final EMA model of each flow (seed ``seed`` runs, the same noise for all),
    side by side (image data sets; 2-D toys as scatter plots). Saved as samples.png."""
    from matplotlib.figure import Figure
    from .. import report
    from ..config import run_dir_for
    from ..evaluation import generate
    from ..images import image_grid
    from ..rundir import RunPaths
    from ..train import load_model
    if sw.reanalyse:   # the weights may be gone: the figure the runs' own notebook drew
        for suffix, data in sw.committed["samples"].items():
            report.atomic_write(sw.out / f"samples{suffix}", lambda f, data=data: f.write(data))
        if ".png" in sw.committed["samples"]:
            report.display_png(sw.out / "samples.png")
        return
    labels = [l for l in sw.mu_labels if l in ("IC", "OT", sw.gc_main)] + [l for l in sw.mu_labels
                                                                          if l not in ("IC", "OT", sw.gc_main)]
    runs = {r.label: r for r in sw.runs() if r.seed == sw.seeds[0]}
    fig = Figure(figsize=(2.2 * len(labels), 2.4))
    axes = fig.subplots(1, len(labels), squeeze=False)[0]
    for ax, label in zip(axes, labels):
        cfg = run_config(sw.base, runs[label])
        ckpt = RunPaths(run_dir_for(cfg)).checkpoint(cfg["total_steps"])
        _, ema, _ = load_model(ckpt)
        x = generate(ema, n, ema.data_shape, ema.sigma_max, seed=seed)
        if x.ndim == 2:  # 2-D toy: a scatter plot of the samples
            ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2)
            ax.set_aspect("equal")
            ax.set(title=tex_label(label), xticks=[], yticks=[])
            continue
        side = int(math.ceil(math.sqrt(n)))  # a square of side x side tiles, 1 white pixel after each
        grid = image_grid(((x[:n].clamp(-1, 1) + 1) / 2).float(), nrow=side, rows=side, padding=1, pad_value=1.0,
                          border=False)
        ax.imshow(grid.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set(title=tex_label(label), xticks=[], yticks=[])
    fig.suptitle(f"one-step samples after {sw.base['total_steps']} steps (seed {sw.seeds[0]}, same noise)")
    report.show_figure(fig, sw.out / "samples.png")


def table1(sw: Sweep, curves: pd.DataFrame, final: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 1 for this run: the data set, the spec's ``column`` settings (the metric), then the final metric per
    flow, mean ± sd over seeds (from the final evaluation when given): IC, each other compared flow (OT, a plugin's
    coupling by its name), the featured GC run. Also writes final.csv."""
    from .. import report
    table = _final_summary(sw, curves, final).reset_index() if final is not None else \
        final_table(curves, sw.metric, sw.mu_labels + sw.frozen_labels)
    report.save_table(table, sw.out / "final.csv")
    t = table.set_index("label")
    cell = lambda l: f"{t.loc[l, 'mean']:.4g} ± {0 if np.isnan(t.loc[l, 'std']) else t.loc[l, 'std']:.2g}"
    others = [flow_label(f) for f in sw.curve_flows if f not in ("ic", "gc")]
    labels = (["IC"] if "IC" in sw.mu_labels else []) + others + ([sw.gc_main] if sw.gc_main else [])
    return pd.DataFrame({"dataset": [sw.base["dataset"]], **{k: [v] for k, v in sw.columns.items()},
                         **{f"iCT-{l}": [cell(l)] for l in labels}})


# --------------------------------------------------------------------------------------------- final evaluation
def final_checkpoint(sw: Sweep, run: Run) -> Path:
    """The final checkpoint of one run of the sweep (it exists once the run has finished)."""
    from ..config import run_dir_for
    from ..rundir import RunPaths
    cfg = run_config(sw.base, run)
    return RunPaths(run_dir_for(cfg)).checkpoint(cfg["total_steps"])


def _final_eval_key(sw: Sweep, names) -> str:
    import hashlib
    import json
    from ..metrics.digits import WEIGHTS_SHA256
    spec = {"final_eval": sw.final_eval, "metrics": list(names), "steps": 1,
            "classifier": WEIGHTS_SHA256 if any("digits" in m for m in names) else None}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def evaluate_final(sw: Sweep, run: Run, names=None, device: str = "cpu") -> dict:
    """The final evaluation of one run: ``final_eval['n']`` one-step samples of its final EMA model for each
    sampling seed, pooled, scored against the whole training set. Cached in the run directory (final_eval-<key>.json,
    keyed by the protocol, the metrics and the digits classifier's checksum), so it runs once per run."""
    import json
    import torch
    from ..evaluation import evaluate_samples, generate
    from ..io import write_json
    from ..train import load_model
    names = list(names or ([sw.metric] + (["kid_digits"] if sw.metric == "fd_digits" else [])))
    ckpt = final_checkpoint(sw, run)
    cache = ckpt.parent.parent / f"final_eval-{_final_eval_key(sw, names)}.json"
    if cache.is_file():
        return json.loads(cache.read_text())["values"]
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: the final checkpoint of {run.label} at seed {run.seed} does not exist; "
                                f"train the sweep first")
    _, ema, cfg = load_model(ckpt, device)
    from ..data import load_dataset, to_float
    data = to_float(load_dataset(cfg.dataset, root=cfg.data_root, download=False, n=cfg.num_data, seed=cfg.seed))
    samples = torch.cat([generate(ema, sw.final_eval["n"], tuple(data.shape[1:]), ema.sigma_max, 1, seed=s,
                                  device=device) for s in sw.final_eval["sampling_seeds"]])
    values = evaluate_samples(samples.cpu(), data, names, n_ref=len(data))
    write_json(cache, {"checkpoint": ckpt.name, "final_eval": sw.final_eval, "samples": len(samples),
                       "values": values})
    return values


def final_evaluation(sw: Sweep) -> pd.DataFrame | None:
    """``evaluate_final`` for every run of the sweep (label, family, seed, the metrics); written to
    final_eval.csv. None when the sweep has no final_eval."""
    from .. import report
    if not sw.final_eval:
        return None
    if sw.reanalyse:
        report.save_table(sw.committed["final"], sw.out / "final_eval.csv")
        return sw.committed["final"]
    device = "cuda" if sw.base.get("device") == "cuda" else "cpu"   # the same seeded noise either way
    rows = [{"label": r.label, "family": r.family, "seed": r.seed, **evaluate_final(sw, r, device=device)}
            for r in sw.runs()]
    t = pd.DataFrame(rows)
    report.save_table(t, sw.out / "final_eval.csv")
    return t


def run_table(sw: Sweep) -> pd.DataFrame | None:
    """For a pre-registered profile: where and how long each run trained (label, seed, device, seconds, processes,
    stack size, from its done.json), written to runs.csv. A seed's runs are compared with each other, so they must
    have trained on one kind of device: a line names each seed where they did not. None for other sweeps (their
    wall times would make a committed CSV differ at every reproduction)."""
    from .. import report
    from ..config import run_dir_for
    from ..rundir import RunPaths, read_json_guarded
    if not sw.preregistration:
        return None
    if sw.reanalyse:
        t = sw.committed.get("runs")
    else:
        rows = []
        for r in sw.runs():
            done = read_json_guarded(RunPaths(run_dir_for(run_config(sw.base, r))).done_json) or {}
            rows.append({"label": r.label, "seed": r.seed, "device": done.get("device", "not recorded"),
                         "seconds": done.get("seconds"), "world_size": done.get("world_size"),
                         "stack_size": done.get("stack_size", 1)})
        t = pd.DataFrame(rows)
    if t is None:
        print("runs.csv: not recorded for this profile (its runs predate it)")
        return None
    report.save_table(t, sw.out / "runs.csv")
    mixed = [s for s, g in t.groupby("seed") if g.device.nunique() > 1]
    if mixed:
        print(f"seeds whose runs trained on different kinds of device: {mixed} (their paired rows mix devices)")
    return t


# --------------------------------------------------------------------------------------------- metric check
def digits_metric_check(n: int = 360, seed: int = 0) -> pd.DataFrame:
    """Why FD_digits replaced pixel W2: both metrics on held-out real digits and on four degraded sets, each
    against the classifier's training split (real vs real is each metric's floor). Lower is better."""
    import torch
    import torch.nn.functional as F
    from ..metrics import fd_digits, kid_digits, w2_exact
    from ..metrics.digits import digits_split
    x_tr, _, x_te, y_te = digits_split()
    x_te = x_te[:n]
    g = torch.Generator().manual_seed(seed)
    flat = x_tr.reshape(len(x_tr), -1).double()
    chol = torch.linalg.cholesky(torch.cov(flat.T) + 1e-6 * torch.eye(flat.shape[1], dtype=torch.float64))
    mean = x_te.mean(0, keepdim=True)
    sets = {
        "held-out real digits": x_te,
        "Gaussian fitted to the data": (flat.mean(0) + torch.randn(len(x_te), flat.shape[1], generator=g,
                                                                   dtype=torch.float64) @ chol.T).float().reshape(x_te.shape),
        "3x3 box blur": F.avg_pool2d(F.pad(x_te, (1, 1, 1, 1), mode="replicate"), 3, stride=1),
        "shrunk 0.7x toward the mean": mean + 0.7 * (x_te - mean),
        "classes 0, 1, 2 removed": x_te[y_te[:n] >= 3],
    }
    rows = []
    for name, x in sets.items():
        ref = x_tr[torch.randperm(len(x_tr), generator=g)[:len(x)]]
        rows.append({"set": name, "n": len(x), "fd_digits": fd_digits(x, x_tr), "kid_digits": kid_digits(x, x_tr),
                     "pixel_w2": w2_exact(x, ref)})
    return pd.DataFrame(rows)


def fid_eval_fn(dataset: str, n: int = 50_000, data_root="data", weights_path=None, cache_dir="runs/fid_stats",
                batch_size: int = 250, seed: int = 0, device=None) -> Callable:
    """An evaluation hook ``fn(step, ema_model) -> {"fid": value}``: one-step samples (clipped and rounded to
    uint8) against the data set's cached Inception statistics (torch-fidelity's TF-compatible weights)."""
    from ..data import IMAGE_SHAPES, load_dataset
    from ..evaluation import generate
    from ..metrics import fid_from_samples, inception_extractor, reference_stats

    extractor = inception_extractor(weights_path, device)
    ref = reference_stats(dataset, lambda: load_dataset(dataset, root=data_root), extractor, cache_dir, batch_size)

    def fn(step, ema_model):
        dev = next(ema_model.parameters()).device
        shape = getattr(ema_model, "data_shape", None) or IMAGE_SHAPES[dataset]
        samples = generate(ema_model, n, shape, ema_model.sigma_max, seed=seed, batch=batch_size, device=str(dev))
        return {"fid": fid_from_samples(samples, ref, extractor, batch_size)}

    fn.__name__ = f"fid_{dataset}"
    return fn
