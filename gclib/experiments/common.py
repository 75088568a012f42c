"""What the experiment notebooks share: the training configuration, the trained model and its data, claims.

A notebook names a dataset and a flow; ``train_config`` starts from the project's training parameter set
``params/train/<family>_<flow>.yaml`` (family: ``toy`` for the 2-D toys, ``digits``, ``cifar10``) and applies the
notebook's overrides. Only settings that change the weights enter the configuration hash (``gclib.config``), so
two notebooks asking for the same run share one cached, trained model under ``report.runs_dir()``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .._checks import check_flow, check_mu
from ..config import TOYS, Config, load_config
from ..data import load_dataset, to_float
from ..report import project_root, runs_dir as default_runs_dir

DATASETS = TOYS + ("digits", "cifar10")


def check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r} is not valid; allowed values: {', '.join(map(repr, DATASETS))}")
    return dataset


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name}={value!r} is not valid; it must be a positive integer")
    return int(value)


def check_levels(name: str, values, lo: float | None = None, hi: float | None = None, allow_zero: bool = False) -> list:
    """A non-empty list of levels, each > 0 (or == 0 if allow_zero) and within [lo, hi] when given."""
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name}={values!r} is not valid; it must be a list of numbers") from None
    if not vals:
        raise ValueError(f"{name}={values!r} is not valid; it must be a non-empty list")
    for v in vals:
        if v == 0 and allow_zero:
            continue
        if not v > 0 or (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"[{lo}, {hi}]" if lo is not None and hi is not None else "> 0"
            raise ValueError(f"{name}={values!r} is not valid; every level must be in {rng}"
                             + (" (or 0)" if allow_zero else ""))
    return vals


def train_config(dataset: str = "two_gaussians", flow: str = "ic", mu: float = 0.5, steps: int | None = None,
                 seed: int = 0, runs_dir=None, root=None, **overrides) -> Config:
    """The validated training Config for ``dataset`` and ``flow`` (nothing is trained here).

    Base: params/train/<family>_<flow>.yaml under the project root; then dataset (toys), mu (gc), total_steps
    (``steps``; None keeps the file's), seed, runs_dir (default report.runs_dir()), progress off, and
    ``overrides`` (any Config field). Raises ValueError naming a bad dataset, flow or mu.
    """
    check_dataset(dataset)
    check_flow(flow)
    check_mu(mu)
    family = "toy" if dataset in TOYS else dataset
    path = project_root(root) / "params" / "train" / f"{family}_{flow}.yaml"
    over = dict(seed=int(seed), runs_dir=str(runs_dir if runs_dir is not None else default_runs_dir(root)),
                progress=False)
    if dataset in TOYS:
        over["dataset"] = dataset
        if dataset != "two_gaussians":
            over["name"] = f"{dataset}_{flow}"
    if flow == "gc":
        over["mu"] = float(mu)
    if steps is not None:
        over["total_steps"] = check_positive_int("train_steps", steps)
    over.update(overrides)
    return load_config(path, over)


def training_data(cfg: Config) -> torch.Tensor:
    """The finite training set of ``cfg`` as float32 (the point set whose exact velocity the metrics use)."""
    return to_float(load_dataset(cfg.dataset, root=cfg.data_root, download=False, n=cfg.num_data, seed=cfg.seed))


def trained_model(cfg: Config, device: str = "cpu"):
    """Train (or reuse the cached run with the same configuration hash) and return (ema_model, data, run_dir)."""
    from ..train import train
    res = train(cfg)
    _, ema, _ = res.load(device)
    return ema, training_data(cfg).to(device), Path(res.run_dir)


def claim(text: str, holds, measured: str) -> dict:
    """One entry of metrics.json's "claims": the paper's claim in words, the verdict, the rounded numbers."""
    return {"claim": str(text), "holds": bool(holds), "measured": str(measured)}



def resolve_device(device: str = "auto") -> str:
    """"auto" -> "cuda" when available, else "cpu"; "cpu"/"cuda" checked."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r} is not valid; allowed values: 'auto', 'cpu', 'cuda'")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available; allowed values here: 'auto', 'cpu'")
    return device
