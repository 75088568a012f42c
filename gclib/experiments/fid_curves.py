"""Training sweeps behind the FID-curve figures (Figs. 4 and 5, Table 1).

A sweep is a list of ``Run``s (a label, a seed and the config fields that differ from a base config, for
example ``params/train/toy_ic.yaml``). ``train_sweep`` trains each (cached by config hash through
``gclib.train.train``) and returns every run's evaluation curve in one long DataFrame; ``final_table`` turns
it into a Table-1-shaped summary (mean and standard deviation over seeds at the last evaluated step).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from .._checks import check_flow, check_mu


@dataclass
class Run:
    label: str                      # e.g. "IC", "OT", "GC mu=0.5", "GC frozen strong"
    seed: int
    overrides: dict = field(default_factory=dict)
    family: str = ""                # "flow", "mu" or "frozen": which figure the run belongs to


def mu_label(mu: float) -> str:
    return "IC" if mu == 0 else f"GC mu={mu:g}"


def sweep_runs(seeds: Sequence[int], mus: Sequence[float] = (0.0, 0.5), include_ot: bool = True,
               frozen_mu: float = 0.5, frozen_checkpoints: dict | None = None, per_flow: dict | None = None) -> list[Run]:
    """The runs of Figs. 4-5 for each seed: IC (mu = 0 is exactly IC), GC for every other mu, OT, and GC with a
    frozen predictor per entry of ``frozen_checkpoints`` ({name: checkpoint path}). ``per_flow`` adds config
    fields per flow, e.g. {"gc": {"dropout": 0.0}} as in the paper's released CIFAR-10 configs."""
    per_flow = per_flow or {}
    for flow in per_flow:
        check_flow(flow)
    for mu in mus:
        check_mu(mu)

    def run(label, seed, ov, family):
        return Run(label, seed, {**ov, **per_flow.get(ov["flow"], {})}, family)

    runs = []
    for seed in seeds:
        for mu in sorted(set(float(m) for m in mus) | {0.0}):
            ov = {"flow": "ic"} if mu == 0 else {"flow": "gc", "mu": mu, "predictor": "ema"}
            runs.append(run(mu_label(mu), seed, ov, "mu"))
        if include_ot:
            runs.append(run("OT", seed, {"flow": "ot"}, "flow"))
        for name, path in (frozen_checkpoints or {}).items():
            runs.append(run(f"GC frozen {name}", seed,
                            {"flow": "gc", "mu": check_mu(frozen_mu), "predictor": str(path)}, "frozen"))
    return runs


def _name(label: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in label.lower()).strip("_")


def train_sweep(base: dict, runs: Sequence[Run], eval_fns: Sequence[Callable] = (), progress: Callable | None = None) -> pd.DataFrame:
    """Train every run (config = base updated with the run's seed and overrides; cached by config hash) and
    return the evaluation curves: one row per (run, evaluated step) with columns label, family, seed, step and
    the metrics that the config's ``eval_metrics`` / ``eval_fns`` produce."""
    from ..train import train

    frames = []
    for i, r in enumerate(runs):
        cfg = {**base, **r.overrides, "seed": r.seed, "name": f"{base.get('name', 'run')}-{_name(r.label)}-s{r.seed}"}
        res = train(cfg, eval_fns=eval_fns)
        if progress:
            progress(i, len(runs), r, res)
        ev = pd.read_csv(res.eval_csv) if Path(res.eval_csv).is_file() else pd.DataFrame({"step": [res.step]})
        frames.append(ev.assign(label=r.label, family=r.family, seed=r.seed))
    return pd.concat(frames, ignore_index=True)


def final_table(curves: pd.DataFrame, metric: str, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``metric`` at each run's last evaluated step, one row per label
    (in ``labels`` order when given), with the number of seeds."""
    last = curves.loc[curves.groupby(["label", "seed"])["step"].idxmax()]
    t = last.groupby("label")[metric].agg(["mean", "std", "count"]).rename(columns={"count": "seeds"})
    if labels is not None:
        t = t.reindex([l for l in labels if l in t.index])
    return t.reset_index()


def fid_eval_fn(dataset: str, n: int = 50_000, data_root="data", weights_path=None, cache_dir="runs/fid_stats",
                batch_size: int = 250, seed: int = 0, device=None) -> Callable:
    """An evaluation hook ``fn(step, ema_model) -> {"fid": value}``: one-step samples (clipped and rounded to
    uint8) against the data set's cached Inception statistics (torch-fidelity's TF-compatible weights)."""
    from ..data import load_dataset
    from ..evaluation import generate
    from ..metrics import fid_from_samples, inception_extractor, reference_stats

    extractor = inception_extractor(weights_path, device)
    ref = reference_stats(dataset, lambda: load_dataset(dataset, root=data_root), extractor, cache_dir, batch_size)

    def fn(step, ema_model):
        dev = next(ema_model.parameters()).device
        shape = getattr(ema_model, "data_shape", None) or (3, 32, 32)
        samples = generate(ema_model, n, shape, ema_model.sigma_max, seed=seed, batch=batch_size, device=str(dev))
        return {"fid": fid_from_samples(samples, ref, extractor, batch_size)}

    fn.__name__ = f"fid_{dataset}"
    return fn
