"""What the experiment notebooks share: the training configuration, the trained model and its data, claims.

A notebook names a dataset and a flow; ``train_config`` starts from the project's training preset
``params/train/<family>.yaml`` (family: ``toy`` for the 2-D toys, ``digits``, ``cifar10``) composed with the flow
(``load_config(preset, flow=flow)``: the overlay ``params/train/flows/<flow>.yaml`` and the preset's own settings
for that flow) and applies the notebook's overrides. Only settings that change the weights enter the configuration
hash (``gclib.config``), so two notebooks asking for the same run share one cached, trained model under
``report.runs_dir()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checks import check_flow, check_levels, check_mu, check_positive_int  # noqa: F401 (re-exported)
from ..config import Config, load_config
from ..couplings import REGISTRY as COUPLINGS
from ..data import experiment_datasets, get_dataset, load_dataset, to_float
from ..device import resolve_device  # noqa: F401 (re-exported: the notebook drivers call common.resolve_device)
from ..report import project_root, runs_dir as default_runs_dir

# The built-in data sets the experiment notebooks can train on: those with a training preset
# params/train/<family>.yaml (family "toy" for every 2-D toy); ``check_dataset`` reads the registry live.
DATASETS = experiment_datasets()


# The training overrides of the theory notebooks' trained predictor (ct_cd_gap, transport_cost, toy_flows: their
# specs' train_overrides default): a short, cheap run on a 2-D toy, nothing evaluated or sampled while training.
TRAIN_OVERRIDES = {"lr": 1e-3, "ema_decay": 0.999, "ema_every": 1, "s1": 40, "checkpoint_every": 0, "eval_every": 0,
                   "eval_metrics": [], "sample_every": 0}


def check_dataset(dataset: str) -> str:
    """``dataset`` if the experiment notebooks can train on it (``gclib.data.experiment_datasets``, read live: a
    data set a plugin registers counts)."""
    allowed = experiment_datasets()
    if dataset not in allowed:
        raise ValueError(f"dataset={dataset!r} is not valid; allowed values: {', '.join(map(repr, allowed))}")
    return dataset


def train_config(dataset: str = "two_gaussians", flow: str = "ic", mu: float = 0.5, steps: int | None = None,
                 seed: int = 0, runs_dir=None, root=None, **overrides) -> Config:
    """The validated training Config for ``dataset`` and ``flow`` (nothing is trained here).

    Base: params/train/<family>.yaml under the project root composed with ``flow`` (its overlay
    params/train/flows/<flow>.yaml and the preset's flows: entry); then dataset, mu (a flow that reads it), total_steps
    (``steps``; None keeps the file's), seed, runs_dir (default report.runs_dir()), progress off, and
    ``overrides`` (any Config field). Raises ValueError naming a bad dataset, flow or mu.
    """
    check_dataset(dataset)
    check_flow(flow)
    check_mu(mu)
    ds = get_dataset(dataset)
    path = project_root(root) / "params" / "train" / f"{ds.family}.yaml"
    over = dict(seed=int(seed), runs_dir=str(runs_dir if runs_dir is not None else default_runs_dir(root)),
                progress=False, dataset=dataset)   # the preset's own data set, or another of its family
    if not ds.is_image and dataset != "two_gaussians":   # the toy preset's own set keeps the preset's name
        over["name"] = f"{dataset}_{flow}"
    if "mu" in COUPLINGS[flow].config_fields():   # a coupling that reads mu (GC)
        over["mu"] = float(mu)
    if steps is not None:
        over["total_steps"] = check_positive_int("train_steps", steps)
    over.update(overrides)
    return load_config(path, over, flow=flow)


def training_data(cfg: Config) -> torch.Tensor:
    """The finite training set of ``cfg`` as float32 (the point set whose exact velocity the metrics use)."""
    return to_float(load_dataset(cfg.dataset, root=cfg.data_root, download=False, n=cfg.num_data, seed=cfg.seed))


def trained_model(cfg: Config, device: str = "cpu"):
    """Train (or reuse the cached run with the same configuration hash) and return (ema_model, data, run_dir).
    A run that another process is training (another notebook, a second ``reproduce``) is waited for (a message,
    then up to ``gclib.rundir.lock_timeout()`` seconds) and reused."""
    from ..config import run_dir_for
    from ..rundir import wait_for_run
    from ..train import train
    res = wait_for_run(lambda: train(cfg), run_dir_for(cfg))
    _, ema, _ = res.load(device)
    return ema, training_data(cfg).to(device), Path(res.run_dir)


VERDICTS = ("holds", "refuted", "inconclusive")


def claim(text: str, verdict, measured: str, paper: str = "") -> dict:
    """One entry of metrics.json's "claims": the claim in words, the paper's own sentence (``paper``), the verdict
    ("holds", "refuted" or "inconclusive"; a bool is read as holds/refuted) and the rounded numbers."""
    if isinstance(verdict, (bool, np.bool_)):
        verdict = "holds" if verdict else "refuted"
    if verdict not in VERDICTS:
        raise ValueError(f"verdict={verdict!r} is not valid; allowed values: {', '.join(map(repr, VERDICTS))}")
    return {"claim": str(text), "paper": str(paper), "verdict": verdict, "measured": str(measured)}


@dataclass
class PairedVerdict:
    """Mean of per-seed paired differences a - b with a two-sided ``level`` Student-t interval, and the verdict
    for the paper's direction ``expect`` ("less": the paper says a < b; "greater": a > b)."""
    verdict: str
    mean: float
    lo: float
    hi: float
    n: int
    level: float
    expect: str

    def text(self, name_a: str = "a", name_b: str = "b", digits: int = 3) -> str:
        f = lambda v: f"{v:.{digits}g}"
        return (f"{name_a} - {name_b} = {f(self.mean)} [{f(self.lo)}, {f(self.hi)}] "
                f"({self.level:.0%} t-interval, {self.n} paired seeds)")


def paired_verdict(a, b, expect: str = "less", level: float = 0.9) -> PairedVerdict:
    """Compare two flows run on the same seeds: differences d_s = a_s - b_s, their mean and the Student-t
    interval mean +- t_{(1+level)/2, n-1} sd / sqrt(n). Verdict: "holds" when the interval excludes 0 in the
    paper's direction, "refuted" when it excludes 0 the other way, "inconclusive" otherwise (or with < 2 seeds).
    a, b: sequences of equal length, entry s from seed s of each flow (pair them by seed before calling)."""
    from scipy import stats
    if expect not in ("less", "greater"):
        raise ValueError(f"expect={expect!r} is not valid; allowed values: 'less', 'greater'")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must be in (0, 1)")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_verdict needs two 1-D sequences of equal length (one value per seed); "
                         f"got shapes {a.shape} and {b.shape}")
    d = a - b
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return PairedVerdict("inconclusive", mean, float("nan"), float("nan"), n, level, expect)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / np.sqrt(n))
    lo, hi = mean - half, mean + half
    return PairedVerdict(interval_verdict(lo, hi, expect), mean, lo, hi, n, level, expect)


def paired_claim(text: str, a, b, name_a: str, name_b: str, expect: str = "less", paper: str = "",
                 level: float = 0.9, digits: int = 3) -> dict:
    """A claim row from a paired comparison: the verdict of ``paired_verdict`` and, as the measured column, the
    mean of each side and the paired difference with its interval."""
    v = paired_verdict(a, b, expect, level)
    f = lambda x: f"{np.mean(x):.{digits}g}"
    row = claim(text, v.verdict, f"{name_a} {f(a)} vs {name_b} {f(b)}; {v.text(name_a, name_b, digits)}", paper)
    return {**row, "n": int(v.n)}


def paired_power(effect: float, sd: float, n: int, level: float = 0.9) -> float:
    """The probability that ``paired_verdict`` says "holds" when the true mean paired difference is ``effect``
    in the paper's direction (> 0 here) and the per-seed differences have standard deviation ``sd``: the
    two-sided ``level`` t-interval over ``n`` seeds lies on the paper's side of 0 (noncentral t, exact for
    normal differences)."""
    from scipy import stats
    if n < 2 or sd <= 0:
        raise ValueError(f"paired_power needs n >= 2 and sd > 0; got n={n}, sd={sd}")
    crit = stats.t.ppf(0.5 + level / 2, n - 1)
    return float(stats.nct.sf(crit, n - 1, abs(effect) * np.sqrt(n) / sd))


def detectable_effect(sd: float, n: int, power: float = 0.8, level: float = 0.9) -> float:
    """The smallest true paired difference that ``paired_verdict`` declares "holds" with probability
    ``power`` over ``n`` seeds when the differences have standard deviation ``sd``."""
    from scipy.optimize import brentq
    return float(brentq(lambda e: paired_power(e, sd, n, level) - power, 1e-9 * sd, 100 * sd))


# --------------------------------------------------------------------------------------------- intervals, predictors
def combine_verdicts(verdicts) -> str:
    """One verdict for a claim made of several parts: every part holds -> "holds"; any part refuted -> "refuted";
    otherwise "inconclusive"."""
    verdicts = list(verdicts)
    if verdicts and all(v == "holds" for v in verdicts):
        return "holds"
    return "refuted" if any(v == "refuted" for v in verdicts) else "inconclusive"


def interval_verdict(lo: float, hi: float, expect: str = "less", ref: float = 0.0) -> str:
    """The verdict for "the quantity is below ``ref``" (expect="less") or "above ``ref``" ("greater") from an
    interval [lo, hi] of it: "holds" when the whole interval is on the paper's side of ``ref``, "refuted" when it
    is entirely on the other side, "inconclusive" when it contains ``ref`` (or is not finite)."""
    if expect not in ("less", "greater"):
        raise ValueError(f"expect={expect!r} is not valid; allowed values: 'less', 'greater'")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    below, above = hi < ref, lo > ref
    if (below and expect == "less") or (above and expect == "greater"):
        return "holds"
    return "refuted" if (below or above) else "inconclusive"


@dataclass
class DiffVerdict(PairedVerdict):
    """``PairedVerdict`` for two independent estimates (each a mean with its standard error): the interval of
    the difference is normal, mean +- z_{(1+level)/2} sqrt(se_a^2 + se_b^2); ``n`` is 0 (no pairing)."""

    def text(self, name_a: str = "a", name_b: str = "b", digits: int = 3) -> str:
        f = lambda v: f"{v:.{digits}g}"
        return (f"{name_a} - {name_b} = {f(self.mean)} [{f(self.lo)}, {f(self.hi)}] "
                f"({self.level:.0%} normal interval from the two standard errors)")


def diff_verdict(mean_a: float, se_a: float, mean_b: float, se_b: float, expect: str = "less",
                 level: float = 0.9) -> DiffVerdict:
    """Compare two independently estimated means (e.g. Monte Carlo averages over separate draws) where no pairing
    by seed exists: d = mean_a - mean_b, interval d +- z sqrt(se_a^2 + se_b^2), verdict as ``paired_verdict``
    ("holds" when the interval excludes 0 in the paper's direction ``expect``)."""
    from scipy import stats
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must be in (0, 1)")
    d = float(mean_a) - float(mean_b)
    half = float(stats.norm.ppf(0.5 + level / 2) * np.sqrt(float(se_a) ** 2 + float(se_b) ** 2))
    lo, hi = d - half, d + half
    return DiffVerdict(interval_verdict(lo, hi, expect), d, lo, hi, 0, level, expect)


def model_quality(ema, data, n: int = 2000, seed: int = 0, device: str = "cpu", *, dataset: str) -> dict:
    """How good a model's one-step samples are, in the quality metric of ``dataset`` (``gclib.data.DataSet.metric``,
    never guessed from the shape), scored against the model's own training set ``data`` as the metric's entry says
    (``gclib.evaluation.Metric.reference``: n rows for an exact-OT metric such as ``w2``, the whole set for
    ``fd_digits``), never against another data set. Samples: ``gclib.evaluation.generate(ema, n, shape,
    ema.sigma_max, seed=seed)``. Returns {"metric" (its name in tables, ``Metric.table_name``), "value", "n"}."""
    from ..evaluation import generate, get_metric_entry
    metric = get_metric_entry(get_dataset(dataset).metric)
    why = metric.refusal(dataset)
    if why:
        raise ValueError(f"dataset={dataset!r}: its quality metric {metric.name!r} cannot score it: it {why}")
    samples = generate(ema, n, tuple(data.shape[1:]), ema.sigma_max, seed=seed, device=device).cpu()
    value = metric.fn(samples.float(), metric.reference(to_float(data.cpu()), n, seed))
    if isinstance(value, dict):
        value = value["mean"]
    return {"metric": metric.table_name, "value": float(value), "n": int(n)}
