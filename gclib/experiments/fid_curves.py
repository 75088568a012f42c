"""Training sweeps behind the FID-curve figures (Figs. 4 and 5, Table 1), their figures and their claims.

A sweep is a list of ``Run``s (a label, a seed and the config fields that differ from a base config, for
example the preset ``params/train/digits.yaml``, whose own flow is IC; each run sets its flow, mu and predictor).
``Sweep`` holds a notebook's validated parameters; ``run_sweep`` trains each run (cached by config hash through
``gclib.train.train``, optionally in parallel worker processes) and returns every run's evaluation curve in one
long DataFrame; ``final_table`` turns it into a Table-1-shaped summary; ``sweep_claims`` judges the paper's
statements by paired differences over seeds (``common.paired_verdict``). Runs that differ only in the flow or mu
share their random numbers at one seed (``gclib.rng``), so the paired differences measure the flow, not the
draws.

Frozen predictors (Fig. 4) are checkpoints of the sweep's own IC run at seed ``frozen_seed``: "strong" at its
last step, "weak" at an early step (e.g. 20% of training), so no extra model is trained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..checks import check_choice, check_flow, check_mu
from ..data import get_dataset
from ..evaluation import CURVE_NAMES, LABELS
from .common import claim, combine_verdicts, paired_claim, paired_verdict
from .inference import add_holm, censored_sign_test, paired_p
from .params import check_rules, distinct_ints, int_at_least, nonempty

# the metrics a training curve can use and their plot labels: gclib.evaluation's registry (Metric.curve), read
# live, so a metric registered after this import (a plugin's) is a valid sweep metric
METRICS = CURVE_NAMES
METRIC_LABELS = LABELS
# the metrics computed with the frozen digits classifier (gclib.metrics.digits)
DIGITS_CLASSIFIER_METRICS = ("fd_digits", "kid_digits")


def uses_digits_classifier(dataset: str) -> bool:
    """Whether ``dataset`` is scored with the frozen digits classifier: its quality metric in the data-set registry
    (``gclib.data.REGISTRY[dataset].metric``) is one of ``DIGITS_CLASSIFIER_METRICS`` (digits: FD_digits)."""
    return get_dataset(dataset).metric in DIGITS_CLASSIFIER_METRICS


@dataclass
class Run:
    label: str                      # e.g. "IC", "OT", "GC mu=0.5", "GC frozen strong"
    seed: int
    overrides: dict = field(default_factory=dict)
    family: str = ""                # "flow", "mu" or "frozen": which figure the run belongs to


def mu_label(mu: float) -> str:
    return "IC" if mu == 0 else f"GC mu={mu:g}"


def tex_label(label: str) -> str:
    """A run label for figures: 'GC mu=0.5' -> 'GC, $\\mu$ = 0.5'."""
    return label.replace(" mu=", r", $\mu$ = ")


def flow_label(flow: str) -> str:
    """The run label of a coupling swept on its own: "IC", "OT", or a registered coupling's name as it is."""
    return {"ic": "IC", "ot": "OT"}.get(flow, flow)


def sweep_runs(seeds: Sequence[int], mus: Sequence[float] = (0.0, 0.5), include_ot: bool = True,
               frozen_mu: float = 0.5, frozen_checkpoints: dict | None = None, per_flow: dict | None = None,
               flows: Sequence[str] | None = None) -> list[Run]:
    """The runs of Figs. 4-5 for each seed: IC (mu = 0 is exactly IC), GC for every other mu, OT, and GC with a
    frozen predictor per entry of ``frozen_checkpoints`` ({name: checkpoint path}). ``per_flow`` adds config
    fields per flow, e.g. {"gc": {"dropout": 0.0}} as in the paper's released CIFAR-10 configs.

    ``flows``: the registered couplings to sweep (``gclib.couplings.REGISTRY``), default ("ic", "gc", "ot"), or
    ("ic", "gc") when not ``include_ot`` (which is ignored when ``flows`` is given). "ic" and "gc" give the mu runs
    above (IC for mu = 0, GC for each other mu, labelled by ``mu_label``, family "mu"); every other flow one run
    per seed with no setting of its own (labelled by ``flow_label``: "OT", or the coupling's name; family "flow"),
    in the order given, after the mu runs. The frozen-predictor runs come last, as before."""
    per_flow = per_flow or {}
    for flow in per_flow:
        check_flow(flow)
    for mu in mus:
        check_mu(mu)
    flows = ("ic", "gc") + (("ot",) if include_ot else ()) if flows is None else tuple(flows)
    for flow in flows:
        check_flow(flow)
    if len(set(flows)) != len(flows):
        raise ValueError(f"flows={list(flows)!r} names a coupling twice")
    others = [f for f in flows if f not in ("ic", "gc")]

    def run(label, seed, ov, family):
        return Run(label, seed, {**ov, **per_flow.get(ov["flow"], {})}, family)

    runs = []
    for seed in seeds:
        for mu in sorted(set(float(m) for m in mus) | {0.0}):
            if ("ic" if mu == 0 else "gc") not in flows:
                continue
            ov = {"flow": "ic"} if mu == 0 else {"flow": "gc", "mu": mu, "predictor": "ema"}
            runs.append(run(mu_label(mu), seed, ov, "mu"))
        for flow in others:
            runs.append(run(flow_label(flow), seed, {"flow": flow}, "flow"))
        for name, path in (frozen_checkpoints or {}).items():
            runs.append(run(f"GC frozen {name}", seed,
                            {"flow": "gc", "mu": check_mu(frozen_mu), "predictor": str(path)}, "frozen"))
    return runs


def _name(label: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in label.lower()).strip("_")


def run_config(base: dict, run: Run) -> dict:
    """The training configuration of one run of a sweep (base + the run's overrides, seed and name)."""
    return {**base, **run.overrides, "seed": run.seed, "name": f"{base.get('name', 'run')}-{_name(run.label)}-s{run.seed}"}


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


def final_table(curves: pd.DataFrame, metric: str, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``metric`` at each run's last evaluated step, one row per label
    (in ``labels`` order when given), with the number of seeds."""
    last = curves.loc[curves.groupby(["label", "seed"])["step"].idxmax()]
    t = last.groupby("label")[metric].agg(["mean", "std", "count"]).rename(columns={"count": "seeds"})
    if labels is not None:
        t = t.reindex([l for l in labels if l in t.index])
    return t.reset_index()


# --------------------------------------------------------------------------------------------- a sweep
@dataclass
class Sweep:
    """A notebook's validated sweep: the base training config (a dict), what to run and how to score it."""
    base: dict
    metric: str
    seeds: list
    mus: list
    include_ot: bool
    frozen: dict                   # {name: step of the IC run at frozen_seed whose checkpoint is frozen}
    frozen_mu: float
    frozen_seed: int
    workers: int
    out: Path
    fid: dict = field(default_factory=dict)
    per_flow: dict = field(default_factory=dict)   # extra config fields per flow, e.g. {"gc": {"dropout": 0.0}}
    final_eval: dict = field(default_factory=dict)  # {"n": per sampling seed, "sampling_seeds": [...]}; {}: none
    preregistration: dict = field(default_factory=dict)  # endpoints fixed before the runs (see ENDPOINTS)
    executor: dict = field(default_factory=dict)   # where the runs train (gclib.executors); {}: locally, workers
    compare_budget: str = ""       # a profile at another budget whose primary final leads this one's are set against
    reanalyse: bool = False        # analyse the committed curves and final evaluation instead of training
    committed: dict = field(default_factory=dict, repr=False)   # what reanalyse read: {"curves", "final", "samples"}

    @property
    def mu_labels(self) -> list:
        return [mu_label(m) for m in sorted(set(self.mus) | {0.0})] + (["OT"] if self.include_ot else [])

    @property
    def frozen_labels(self) -> list:
        return [f"GC frozen {n}" for n in self.frozen]

    @property
    def gc_main(self) -> str:
        return mu_label(0.5) if 0.5 in self.mus else mu_label(self.mus[0])

    def frozen_checkpoints(self) -> dict:
        """{name: checkpoint path} of the frozen predictors: checkpoints of the IC run at ``frozen_seed``."""
        paths = self.frozen_checkpoints_at(self.frozen_seed, list(self.frozen.values()))
        return dict(zip(self.frozen, paths))

    def frozen_checkpoints_at(self, seed: int, steps=None) -> list:
        """Checkpoint paths of this sweep's IC run at ``seed`` at ``steps`` (default: its last step)."""
        from ..config import run_dir_for
        from ..rundir import RunPaths
        paths = RunPaths(run_dir_for(run_config(self.base, Run("IC", seed, {"flow": "ic"}))))
        return [str(paths.checkpoint(s)) for s in (steps or [self.base["total_steps"]])]

    def runs(self) -> list[Run]:
        return sweep_runs(self.seeds, self.mus, self.include_ot, self.frozen_mu, self.frozen_checkpoints(),
                          self.per_flow)


# The allowed values of notebooks/fid_curves.ipynb's parameters (defaults: its parameters cell; names and types:
# ``check_params``); what needs the training configuration (frozen steps, the final evaluation, the pre-registered
# endpoints) is checked by ``make_sweep``.
RULES = dict(
    metric=lambda name, v: check_choice("metric", v, METRICS), seeds=distinct_ints,
    mus=nonempty(lambda name, v: check_mu(v)), frozen_mu=lambda name, v: check_mu(v),
    frozen_seed=int_at_least(0), workers=int_at_least(1))


def setup(params) -> "Sweep":
    """Check the parameters of notebooks/fid_curves.ipynb (the mapping ``check_params`` returns: ``RULES``, then
    ``make_sweep``'s checks; one clear ValueError naming the parameter, before any work) and build its ``Sweep``."""
    p = check_rules("fid_curves", params, RULES)
    return make_sweep(p.variant, p.base_config, p.overrides, p.metric, p.seeds, p.mus, include_ot=p.include_ot,
                      frozen=p.frozen, frozen_mu=p.frozen_mu, frozen_seed=p.frozen_seed, per_flow=p.per_flow, fid=p.fid,
                      workers=p.workers, final_eval=p.final_eval, preregistration=p.preregistration,
                      executor=p.executor, compare_budget=p.compare_budget, reanalyse=p.reanalyse)


def make_sweep(variant: str, base_config: str, overrides: dict, metric: str, seeds, mus, include_ot: bool = True,
               frozen: dict | None = None, frozen_mu: float = 0.5, frozen_seed: int = 0, per_flow: dict | None = None,
               fid: dict | None = None, workers: int = 1, root=None, *, final_eval: dict | None = None,
               preregistration: dict | None = None, executor: dict | None = None, compare_budget: str = "",
               reanalyse: bool = False) -> Sweep:
    """Validate a notebook's parameters and build its ``Sweep`` (nothing is trained here)."""
    from .. import report
    from ..config import load_config
    check_choice("metric", metric, METRICS)
    mus = [check_mu(m) for m in mus]
    check_mu(frozen_mu)
    if not seeds:
        raise ValueError("seeds: give at least one seed (paired verdicts need 2 or more)")
    if metric == "fid" and not fid:
        raise ValueError("metric='fid' needs the fid block (n, weights_path, data_root)")
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise ValueError(f"workers={workers!r} is not valid; it must be a positive integer")
    from ..executors import executor_spec
    if not executor_spec(executor or None).wait:   # one line naming a bad executor setting, before any work
        raise ValueError("executor: wait=false is for gclib train; a sweep waits for its runs' curves")
    root = report.project_root(root)
    base = load_config(root / base_config, {"runs_dir": str(report.runs_dir(root)), **overrides, "progress": False})
    frozen = dict(frozen or {})
    for name, step in frozen.items():
        every = base.checkpoint_every
        if not (0 < int(step) <= base.total_steps) or (int(step) != base.total_steps and
                                                       (not every or int(step) % every)):
            raise ValueError(f"frozen={frozen!r}: step {step} of predictor {name!r} must be the last step "
                             f"({base.total_steps}) or a multiple of checkpoint_every ({every}) below it")
        kept = base.total_steps // every - int(step) // every + 1 if every else 1
        if int(step) != base.total_steps and kept > base.keep_checkpoints:
            raise ValueError(f"frozen={frozen!r}: the checkpoint at step {step} is rotated away; raise "
                             f"keep_checkpoints to at least {kept}")
    if frozen and frozen_seed not in seeds:
        raise ValueError(f"frozen_seed={frozen_seed!r} must be one of seeds={list(seeds)} (the frozen predictors are "
                         f"checkpoints of that seed's IC run)")
    base = base.to_dict()
    if per_flow:
        for flow in per_flow:
            check_flow(flow)
    if metric == "fid":
        base["eval_metrics"] = []
    sw = Sweep(base, metric, list(seeds), mus, bool(include_ot), frozen, float(frozen_mu), int(frozen_seed),
               int(workers), root / "results" / "fid_curves" / str(variant), dict(fid or {}), dict(per_flow or {}),
               _check_final_eval(final_eval), dict(preregistration or {}), executor=dict(executor or {}),
               compare_budget=str(compare_budget or ""), reanalyse=bool(reanalyse))
    _check_preregistration(sw)
    if sw.reanalyse:
        sw.committed = _read_committed(sw)   # before anything in sw.out is rewritten
    if sw.compare_budget:
        _check_compare_budget(sw, root)   # one line naming the problem, before any training
    return sw


def _read_committed(sw: Sweep) -> dict:
    """``reanalyse``: the committed results of this variant that a new analysis starts from (its runs' weights may
    be gone): curves.csv, final_eval.csv when the sweep has a final evaluation, and the sample figure (it needs the
    weights, so it is kept as it was). One ValueError naming what is missing."""
    need = ["curves.csv"] + (["final_eval.csv"] if sw.final_eval else [])
    missing = [n for n in need if not (sw.out / n).is_file()]
    if missing:
        raise ValueError(f"reanalyse=True: {', '.join(missing)} missing in {sw.out}; reanalyse reads a trained "
                         f"variant's committed results (train it first: reanalyse=False)")
    read = lambda n: pd.read_csv(sw.out / n)
    return {"curves": read("curves.csv"), "final": read("final_eval.csv") if sw.final_eval else None,
            "runs": read("runs.csv") if (sw.out / "runs.csv").is_file() else None,
            "samples": {p.suffix: p.read_bytes() for p in sw.out.glob("samples.*")}}


def _check_compare_budget(sw: Sweep, root: Path) -> None:
    """``compare_budget`` names a profile params/fid_curves/<name>.yaml with this sweep's metric and another
    number of steps, and this sweep pre-registered a final endpoint; that profile's results are read (and checked)
    only when the claims are computed, so both can train in one job."""
    import yaml
    from ..config import load_config
    what = f"compare_budget={sw.compare_budget!r}"
    if not sw.preregistration or not any(e["endpoint"] == "final" for e in sw.preregistration["primary"]):
        raise ValueError(f"{what}: it compares the primary final endpoints of a preregistration, and this sweep "
                         f"has none")
    path = root / "params" / "fid_curves" / f"{sw.compare_budget}.yaml"
    if not path.is_file():
        raise ValueError(f"{what}: no such profile ({path} does not exist)")
    p = yaml.safe_load(path.read_text()) or {}
    steps = (p.get("overrides") or {}).get("total_steps") or load_config(root / p["base_config"]).total_steps
    _check_other_budget(sw, p.get("metric"), steps)


def _check_other_budget(sw: Sweep, metric, steps) -> None:
    """The profile ``sw.compare_budget`` (its metric and steps, from its params file or its results) is scored like
    this one at another budget; one ValueError otherwise."""
    what = f"compare_budget={sw.compare_budget!r}"
    if metric != sw.metric:
        raise ValueError(f"{what}: that profile is scored with {metric!r}, this one with {sw.metric!r}")
    if int(steps) == int(sw.base["total_steps"]):
        raise ValueError(f"{what}: that profile trains for {steps} steps too; compare against another budget")


def _check_final_eval(final_eval) -> dict:
    fe = dict(final_eval or {})
    if not fe:
        return {}
    unknown = set(fe) - {"n", "sampling_seeds"}
    if unknown:
        raise ValueError(f"final_eval: unknown key(s) {sorted(unknown)}; allowed: 'n', 'sampling_seeds'")
    n, seeds = fe.get("n"), fe.get("sampling_seeds")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"final_eval: n={n!r} must be an integer >= 2 (samples per sampling seed)")
    if not isinstance(seeds, (list, tuple)) or not seeds or len(set(seeds)) != len(seeds) or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2 ** 63 for x in seeds):
        raise ValueError(f"final_eval: sampling_seeds={seeds!r} must be a non-empty list of distinct integers >= 0")
    return {"n": int(n), "sampling_seeds": [int(x) for x in seeds]}


# Endpoints a pre-registration can name (per seed, from a run's curve or its final evaluation):
ENDPOINTS = {
    "final": "the metric of the final EMA model on the final evaluation's samples (the curve's last point when the "
             "sweep has no final_eval)",
    "mean_log": "the mean of log(metric) over the curve's evaluations after step 0 (convergence speed)",
    "steps_to_reach": "the first evaluated step at which a's curve is at or below b's final value on the curve "
                      "against b's own; a seed whose curve never reaches it is censored (the profile's `censoring` "
                      "rule: it ranks last, and the row is a paired sign test)",
    "first": "the metric at the first evaluation after step 0",
}


def _check_preregistration(sw: Sweep) -> None:
    pre = sw.preregistration
    if not pre:
        return
    allowed = ("date", "primary", "secondary", "power", "shared_with", "censoring", "censoring_added", "seen_before")
    unknown = set(pre) - set(allowed)
    if unknown:
        raise ValueError(f"preregistration: unknown key(s) {sorted(unknown)}; allowed: {', '.join(allowed)}")
    if not pre.get("primary"):
        raise ValueError("preregistration: name at least one primary endpoint")
    if any(e.get("endpoint") == "steps_to_reach" for role in ("primary", "secondary") for e in pre.get(role) or []
           if isinstance(e, dict)) and not pre.get("censoring"):
        raise ValueError("preregistration: a steps_to_reach endpoint needs `censoring`, the rule for a seed that "
                         "never reaches the target (e.g. 'never reached ranks last; paired sign test')")
    labels = set(sw.mu_labels + sw.frozen_labels)
    for role in ("primary", "secondary"):
        for i, e in enumerate(pre.get(role) or []):
            where = f"preregistration.{role}[{i}]"
            if not isinstance(e, dict) or set(e) - {"endpoint", "a", "b", "expect"} or not {"endpoint", "a", "b"} <= set(e):
                raise ValueError(f"{where}={e!r}: give endpoint, a, b (and optionally expect)")
            check_choice(f"{where}.endpoint", e["endpoint"], tuple(ENDPOINTS))
            for side in ("a", "b"):
                if e[side] not in labels:
                    raise ValueError(f"{where}.{side}={e[side]!r} is not a run of this sweep; runs: {sorted(labels)}")
            check_choice(f"{where}.expect", e.get("expect", "less"), ("less", "greater"))


SWEEP_KEYS = ("variant", "base_config", "overrides", "metric", "seeds", "mus", "include_ot", "frozen", "frozen_mu",
              "frozen_seed", "per_flow", "fid", "workers", "final_eval", "preregistration", "executor",
              "compare_budget", "reanalyse")


def sweep_from_params(path, root=None) -> Sweep:
    """The ``Sweep`` of a parameter file params/fid_curves/<variant>.yaml (what the notebook builds from it)."""
    import yaml
    p = yaml.safe_load(Path(path).read_text()) or {}
    kw = {k: p[k] for k in SWEEP_KEYS if k in p}
    kw.setdefault("variant", Path(path).stem)
    return make_sweep(**kw, root=root)


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
    """Table 1 for this run: the final metric per flow, mean ± sd over seeds (from the final evaluation when
    given); also writes final.csv."""
    from .. import report
    table = _final_summary(sw, curves, final).reset_index() if final is not None else \
        final_table(curves, sw.metric, sw.mu_labels + sw.frozen_labels)
    report.save_table(table, sw.out / "final.csv")
    t = table.set_index("label")
    cell = lambda l: f"{t.loc[l, 'mean']:.4g} ± {0 if np.isnan(t.loc[l, 'std']) else t.loc[l, 'std']:.2g}"
    cols = {"iCT-IC": "IC", **({"iCT-OT": "OT"} if sw.include_ot else {}), f"iCT-{sw.gc_main}": sw.gc_main}
    return pd.DataFrame({"dataset": [sw.base["dataset"]], "metric": [sw.metric],
                         **{k: [cell(v)] for k, v in cols.items()}})


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


# --------------------------------------------------------------------------------------------- claims
def per_seed(curves: pd.DataFrame, metric: str, label: str, how: str = "final", seeds=None) -> pd.Series:
    """One value per seed of ``label``'s curve: "final" (last evaluated step), "first" (first step > 0),
    "auc" (mean of the metric over the evaluated steps > 0, trapezoid rule on the step axis: lower is faster
    convergence)."""
    c = curves[(curves.label == label) & (curves.step > 0)].sort_values("step")
    out = {}
    for seed, g in c.groupby("seed"):
        y, x = g[metric].to_numpy(float), g.step.to_numpy(float)
        if how == "final":
            out[seed] = y[-1]
        elif how == "first":
            out[seed] = y[0]
        elif how == "auc":
            out[seed] = float(np.trapezoid(y, x) / (x[-1] - x[0])) if len(x) > 1 else y[0]
        else:
            raise ValueError(f"how={how!r} is not valid; allowed values: 'final', 'first', 'auc'")
    s = pd.Series(out).sort_index()
    return s if seeds is None else s.reindex(seeds)


def steps_to_reach(curves: pd.DataFrame, metric: str, label: str, target: pd.Series) -> pd.Series:
    """Per seed: the first evaluated step at which ``label``'s curve is at or below target[seed] (NaN if never)."""
    c = curves[(curves.label == label) & (curves.step > 0)].sort_values("step")
    out = {}
    for seed, g in c.groupby("seed"):
        hit = g[g[metric] <= target.get(seed, np.nan)]
        out[seed] = float(hit.step.iloc[0]) if len(hit) else float("nan")
    return pd.Series(out).sort_index()


def _pair(curves, metric, a, b, how="final"):
    sa, sb = per_seed(curves, metric, a, how), per_seed(curves, metric, b, how)
    common = sorted(set(sa.dropna().index) & set(sb.dropna().index))
    return sa.reindex(common).to_numpy(), sb.reindex(common).to_numpy()


PAPER = {
    "gc_ic": "Table 1 (CIFAR-10, one-step FID): iCT-GC 5.95 against iCT-IC 7.42; GC (mu = 0.5) improves on IC "
             "on every data set.",
    "gc_ot": "Table 1 (CIFAR-10, one-step FID): iCT-GC 5.95 against iCT-OT 6.75.",
    "ot_ic": "Table 1 (CIFAR-10, one-step FID): iCT-OT 6.75 against iCT-IC 7.42 (minibatch OT improves on IC).",
    "speed": "The paper reports that GC speeds up convergence: its FID curves (Figs. 4-5) fall faster than IC's.",
    "mid_mu": "Fig. 5: every 0.3 <= mu <= 0.7 reaches a lower FID than both IC and OT on CIFAR-10.",
    "mu1": "Fig. 5: pure GC (mu = 1) improves fastest at first, then degrades (its intermediate marginals drift).",
    "frozen": "Fig. 4: GC with a strong frozen IC predictor trains better than with a weak one, and better than IC.",
}


PAPER["speed_ot"] = ("Abstract: our method 'not only accelerates consistency training convergence but also enhances "
                     "its overall performance'; Figs. 4-5 plot GC's FID curve beside IC's and OT's.")


def endpoint(sw: Sweep, curves: pd.DataFrame, final: pd.DataFrame | None, name: str, label: str,
             other: str | None = None) -> pd.Series:
    """One value per seed of ``label`` for the endpoint ``name`` (see ENDPOINTS); ``other`` is the reference run
    of "steps_to_reach"."""
    m = sw.metric
    if name == "final":
        if final is not None:
            f = final[final.label == label].set_index("seed")[m]
            return f.sort_index()
        return per_seed(curves, m, label, "final")
    if name == "first":
        return per_seed(curves, m, label, "first")
    if name == "mean_log":
        c = curves[(curves.label == label) & (curves.step > 0)]
        return c.assign(_l=np.log(c[m].to_numpy(float))).groupby("seed")["_l"].mean().sort_index()
    if name == "steps_to_reach":   # NaN where the curve never reaches the target: a censored seed
        target = per_seed(curves, m, other or label, "final")
        return steps_to_reach(curves, m, label, target)
    raise ValueError(f"endpoint={name!r} is not valid; allowed values: {', '.join(map(repr, ENDPOINTS))}")


def _endpoint_text(name: str, metric: str) -> str:
    return {"final": f"final {metric}", "first": f"{metric} at the first evaluation",
            "mean_log": f"mean log {metric} over training", "steps_to_reach": "steps to reach the reference's final "
            f"{metric}"}[name]


def _claim_words(name: str, a: str, b: str, expect: str, metric: str) -> str:
    if name == "final":
        return f"{a} ends {'below' if expect == 'less' else 'above'} {b} ({_endpoint_text(name, metric)})"
    if name == "first":
        return f"{a} is {'ahead of' if expect == 'less' else 'behind'} {b} at the first evaluation ({metric})"
    if name == "mean_log":
        return f"{a} converges {'faster' if expect == 'less' else 'slower'} than {b} ({_endpoint_text(name, metric)})"
    return f"{a} reaches {b}'s final {metric} in fewer steps than {b}"


def _paper_for(name: str, a: str, b: str) -> str:
    if name in ("mean_log", "steps_to_reach", "first"):
        return PAPER["speed_ot"] if b == "OT" else PAPER["speed"]
    if a.startswith("GC frozen"):
        return PAPER["frozen"]
    if a == mu_label(1.0):
        return PAPER["mu1"]
    if a.startswith("GC mu=") and a != mu_label(0.5):
        return PAPER["mid_mu"]
    return {"IC": PAPER["gc_ic"], "OT": PAPER["gc_ot"]}.get(b, PAPER["gc_ic"]) if a.startswith("GC") else PAPER["ot_ic"]


def preregistered_claims(sw: Sweep, curves: pd.DataFrame, final: pd.DataFrame | None = None,
                         level: float = 0.9) -> list[dict]:
    """One row per endpoint of the sweep's pre-registration, primary first: the paired difference a - b over the
    seeds both runs have, its interval and verdict, tagged with its role and number of seeds (and, when a run is
    shared with another profile, which one)."""
    pre = sw.preregistration
    shared = {l: prof for prof, labels in (pre.get("shared_with") or {}).items() for l in labels}
    rows = []
    for role in ("primary", "secondary"):
        for e in pre.get(role) or []:
            name, a, b, expect = e["endpoint"], e["a"], e["b"], e.get("expect", "less")
            sa, sb = endpoint(sw, curves, final, name, a, b), endpoint(sw, curves, final, name, b, b)
            note = [f"{l} runs shared with {shared[l]}" for l in (a, b) if l in shared]
            if name == "steps_to_reach":
                row = _censored_row(sw, sa, sb, a, b, expect, level)
            else:
                common = sorted(set(sa.dropna().index) & set(sb.dropna().index))
                va, vb = sa.reindex(common).to_numpy(float), sb.reindex(common).to_numpy(float)
                v = paired_verdict(va, vb, expect, level)
                fmt = lambda x: f"{np.mean(x):.4g}" if len(x) else "nan"
                row = claim(_claim_words(name, a, b, expect, sw.metric), v.verdict,
                            f"{a} {fmt(va)} vs {b} {fmt(vb)}; {v.text(a, b, 3)}", _paper_for(name, a, b))
                row.update(n=int(v.n), p=paired_p(v), diff={"mean": v.mean, "lo": v.lo, "hi": v.hi})
            if note:
                row["measured"] += f"; {', '.join(note)}"
            row.update(role=role, endpoint=name, a=a, b=b)
            rows.append(row)
    return add_holm(rows, alpha=round(1 - level, 12))


def _censored_row(sw: Sweep, sa: pd.Series, sb: pd.Series, a: str, b: str, expect: str, level: float) -> dict:
    """The "steps to reach" row: a seed whose curve never reaches the target is censored (ranked after every step
    that reaches it) and the row is judged by a paired sign test (``inference.censored_sign_test``). A profile whose
    censoring rule was added after its pre-registration (``censoring_added`` later than ``date``) also shows the
    scoring it had before: never reached = one evaluation interval past the end, judged by the t-interval."""
    pre = sw.preregistration
    seeds = sorted(set(sa.index) & set(sb.index))
    va, vb = sa.reindex(seeds).to_numpy(float), sb.reindex(seeds).to_numpy(float)
    t = censored_sign_test(va, vb, expect, level)
    measured = t.text(a, b)
    added = str(pre.get("censoring_added") or "")
    if added and added > str(pre.get("date", "")):
        end = int(sw.base["total_steps"]) + int(sw.base.get("eval_every") or sw.base["total_steps"])
        fill = lambda x: np.where(np.isfinite(x), x, end)
        old = paired_verdict(fill(va), fill(vb), expect, level)
        measured += (f"; the censoring rule was added on {added}, after the pre-registration ({pre['date']}): under "
                     f"the earlier scoring (never reached = step {end}) {old.text(a, b, 3)}, {old.verdict}")
    row = claim(_claim_words("steps_to_reach", a, b, expect, sw.metric), t.verdict, measured,
                _paper_for("steps_to_reach", a, b))
    row.update(n=int(t.n), p=float(t.p))
    return row


def _budget_results(sw: Sweep) -> tuple[pd.DataFrame, int]:
    """The final evaluation and number of steps of ``sw.compare_budget``'s committed results (results/fid_curves/
    <profile>/final_eval.csv and metrics.json), checked against this sweep: one ValueError naming the problem."""
    import json
    where = sw.out.parent / sw.compare_budget
    what = f"compare_budget={sw.compare_budget!r}"
    if not (where / "final_eval.csv").is_file() or not (where / "metrics.json").is_file():
        raise ValueError(f"{what}: no final evaluation of that profile in {where}; run its notebook, then this "
                         f"one again (its runs and final evaluation are cached)")
    m = json.loads((where / "metrics.json").read_text())
    _check_other_budget(sw, m.get("metric"), m["steps"])
    other = pd.read_csv(where / "final_eval.csv")
    if not set(sw.seeds) & set(other.seed):
        raise ValueError(f"{what}: it has no seed in common with seeds={list(sw.seeds)}")
    return other, int(m["steps"])


PAPER["budget"] = ("Not a sentence of the paper: it reports one training budget per data set (Table 1). Abstract: "
                   "GC 'not only accelerates consistency training convergence but also enhances its overall "
                   "performance'; a lead that only came from faster convergence would shrink with a longer budget.")


def budget_claims(sw: Sweep, final: pd.DataFrame | None, level: float = 0.9) -> list[dict]:
    """Exploratory rows (not pre-registered): for each primary final endpoint a - b, does the lead change with the
    budget? Per seed in both profiles: (a - b here) - (a - b in ``sw.compare_budget``), the runs of the two
    profiles at one seed being independent draws; "holds" when the lead at the longer budget is larger (a
    difference below 0 for the longer one minus the shorter), "refuted" when it is smaller, "inconclusive"
    otherwise. The measured column gives the lead at each budget with its own interval."""
    if not sw.compare_budget or final is None:
        return []
    other, other_steps = _budget_results(sw)
    steps = int(sw.base["total_steps"])
    (long_, n_long), (short, n_short) = sorted([(final, steps), (other, other_steps)], key=lambda t: -t[1])
    lead = lambda f, a, b: (f[f.label == a].set_index("seed")[sw.metric] - f[f.label == b].set_index("seed")[sw.metric])
    iv = lambda p: f"{p.mean:.3g} [{p.lo:.3g}, {p.hi:.3g}]"
    at = lambda x: iv(paired_verdict(x, np.zeros(len(x)), "less", level))   # a lead and its own interval
    rows = []
    for e in sw.preregistration["primary"]:
        if e["endpoint"] != "final":
            continue
        a, b = e["a"], e["b"]
        dl, ds = lead(long_, a, b), lead(short, a, b)
        common = sorted(set(dl.dropna().index) & set(ds.dropna().index) & set(sw.seeds))
        vl, vs = dl.reindex(common).to_numpy(float), ds.reindex(common).to_numpy(float)
        v = paired_verdict(vl, vs, e.get("expect", "less"), level)
        row = claim(f"{a}'s final lead over {b} is larger at {n_long} steps than at {n_short} ({sw.metric})",
                    v.verdict, f"{a} - {b}: {at(vl)} at {n_long} steps, {at(vs)} at {n_short}; change (longer - "
                    f"shorter) {iv(v)} ({v.level:.0%} t-interval, {v.n} seeds in both profiles); the {other_steps}-step "
                    f"runs are {sw.compare_budget}'s, evidence in its own rows too",
                    PAPER["budget"])
        row.update(role="exploratory", n=int(v.n), endpoint="budget", a=a, b=b, diff={"mean": v.mean, "lo": v.lo, "hi": v.hi})
        rows.append(row)
    return rows


def sweep_claims(sw: Sweep, curves: pd.DataFrame, level: float = 0.9, final: pd.DataFrame | None = None) -> list[dict]:
    """The paper's comparative statements judged on this sweep by paired differences over seeds (final metric,
    or the area under the curve for convergence speed), each holds / refuted / inconclusive. A sweep with a
    pre-registration is judged on exactly its pre-registered endpoints (``preregistered_claims``), followed by the
    exploratory budget rows when ``compare_budget`` names another profile (``budget_claims``)."""
    if sw.preregistration:
        return add_holm(preregistered_claims(sw, curves, final, level) + budget_claims(sw, final, level),
                        alpha=round(1 - level, 12))
    m, gc = sw.metric, sw.gc_main
    f = lambda x: f"{np.mean(x):.3g}"
    labels = set(curves.label)
    claims = [paired_claim(f"{gc} ends below IC (final {m})", *_pair(curves, m, gc, "IC"), gc, "IC",
                           paper=PAPER["gc_ic"], level=level)]
    if "OT" in labels:
        claims.append(paired_claim(f"{gc} ends below OT (final {m})", *_pair(curves, m, gc, "OT"), gc, "OT",
                                   paper=PAPER["gc_ot"], level=level))
        claims.append(paired_claim(f"OT ends below IC (final {m})", *_pair(curves, m, "OT", "IC"), "OT", "IC",
                                   paper=PAPER["ot_ic"], level=level))
    a, b = _pair(curves, m, gc, "IC", "auc")
    v = paired_verdict(a, b, "less", level)
    reach = steps_to_reach(curves, m, gc, per_seed(curves, m, "IC"))
    reach_txt = ", ".join("never" if np.isnan(s) else f"{s:.0f}" for s in reach.to_numpy())
    claims.append(claim(f"{gc} converges faster than IC (mean {m} over training, paired)", v.verdict,
                        f"mean over the curve: {gc} {f(a)} vs IC {f(b)}; {v.text(gc, 'IC')}; steps for {gc} to "
                        f"reach IC's final {m} per seed: {reach_txt} of {int(curves.step.max())}", PAPER["speed"]) | {"n": v.n})
    if "OT" in labels:
        a, b = _pair(curves, m, gc, "OT", "auc")
        v = paired_verdict(a, b, "less", level)
        claims.append(claim(f"{gc} converges faster than OT (mean {m} over training, paired)", v.verdict,
                            f"mean over the curve: {gc} {f(a)} vs OT {f(b)}; {v.text(gc, 'OT')}", PAPER["speed_ot"]) | {"n": v.n})
    mid = [mu_label(x) for x in sw.mus if 0.3 <= x <= 0.7 and mu_label(x) != gc]
    if mid and "OT" in labels:
        parts, texts = [], []
        for l in mid:
            for other in ("IC", "OT"):
                pv = paired_verdict(*_pair(curves, m, l, other), "less", level)
                parts.append(pv.verdict)
                texts.append(pv.text(l, other))
        claims.append(claim(f"every other 0.3 <= mu <= 0.7 ({', '.join(mid)}) ends below both IC and OT",
                            combine_verdicts(parts), "; ".join(texts), PAPER["mid_mu"]))
    if 1.0 in sw.mus:
        g1 = mu_label(1.0)
        early = paired_verdict(*_pair(curves, m, g1, "IC", "first"), "less", level)
        late = paired_verdict(*_pair(curves, m, g1, gc, "final"), "greater", level)
        first = int(curves[curves.step > 0].step.min())
        claims.append(claim("pure GC (mu = 1) improves fastest, then degrades (ahead of IC at the first evaluation, "
                            f"behind {gc} at the end)", combine_verdicts([early.verdict, late.verdict]),
                            f"step {first}: {early.text(g1, 'IC')}; final: {late.text(g1, gc)}", PAPER["mu1"]))
    if "strong" in sw.frozen and "weak" in sw.frozen:
        s, w = "GC frozen strong", "GC frozen weak"
        p1 = paired_verdict(*_pair(curves, m, s, w), "less", level)
        p2 = paired_verdict(*_pair(curves, m, s, "IC"), "less", level)
        claims.append(claim("a strong frozen predictor helps more than a weak one, and beats IC",
                            combine_verdicts([p1.verdict, p2.verdict]), f"{p1.text('strong', 'weak')}; {p2.text('strong', 'IC')}",
                            PAPER["frozen"]))
    return claims


def _final_summary(sw: Sweep, curves: pd.DataFrame, final: pd.DataFrame | None) -> pd.DataFrame:
    """Mean, sd and number of seeds of the final metric per label: from the final evaluation when there is one,
    else from the curve's last point."""
    if final is None:
        return final_table(curves, sw.metric).set_index("label")
    t = final.groupby("label")[sw.metric].agg(["mean", "std", "count"]).rename(columns={"count": "seeds"})
    return t.reindex([l for l in sw.mu_labels + sw.frozen_labels if l in t.index])


def write_claims(sw: Sweep, curves: pd.DataFrame, claims: list[dict], final: pd.DataFrame | None = None) -> pd.DataFrame:
    """metrics.json for this variant (final values per label, the pre-registration and the claims); returns the
    claims as a table."""
    from .. import report
    t = _final_summary(sw, curves, final)
    report.write_metrics(sw.out, {
        "metric": sw.metric, "dataset": sw.base["dataset"], "steps": int(sw.base["total_steps"]),
        "batch_size": int(sw.base["batch_size"]), "seeds": list(sw.seeds),
        "final_from": (f"final evaluation: {sw.final_eval['n']} one-step samples x "
                       f"{len(sw.final_eval['sampling_seeds'])} sampling seeds" if final is not None else
                       f"the curve's last evaluation ({sw.base.get('eval_n')} samples)"),
        "final": {l: dict(mean=float(t.loc[l, "mean"]), std=float(np.nan_to_num(t.loc[l, "std"])),
                          seeds=int(t.loc[l, "seeds"])) for l in t.index},
        "preregistration": sw.preregistration or None,
        "claims": claims})
    cols = ["claim", "paper", "verdict", "measured"] + (["role", "n", "verdict_holm"] if sw.preregistration else [])
    return pd.DataFrame(claims)[cols]


def summary(sw: Sweep, curves: pd.DataFrame, claims: list[dict], final: pd.DataFrame | None = None) -> str:
    """A short deterministic text for nbval: final means (2 significant digits) and the verdicts."""
    from .. import report
    t = _final_summary(sw, curves, final)
    return report.summary({"final_mean": {l: float(t.loc[l, "mean"]) for l in t.index},
                           "verdicts": [c["verdict"] for c in claims]})


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
