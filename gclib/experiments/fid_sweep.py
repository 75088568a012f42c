"""The specification of a FID-curve sweep (Figs. 4 and 5, Table 1): its runs and labels, the validated notebook
parameters (``Sweep``, ``setup``, ``make_sweep``, ``sweep_from_params``) and the pre-registration's endpoints.

A sweep is a list of ``Run``s (a label, a seed and the config fields that differ from a base config, for
example the preset ``params/train/digits.yaml``, whose own flow is IC; each run sets its flow, mu and predictor).
Frozen predictors (Fig. 4) are checkpoints of the sweep's own IC run at seed ``frozen_seed``: "strong" at its
last step, "weak" at an early step (e.g. 20% of training), so no extra model is trained. Training, figures and the
final evaluation are in ``fid_curves``, the claims in ``fid_claims``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..checks import check_choice, check_flow, check_mu
from ..data import get_dataset
from ..evaluation import CURVE_NAMES, LABELS
from .params import distinct_ints, int_at_least, nonempty
from .spec import Param, Spec, register_spec

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


# --------------------------------------------------------------------------------------------- the parameters
def _registered(flows, problem: str) -> None:
    """Each of ``flows`` a registered coupling (read live: a plugin's coupling counts), else ``problem`` followed by
    check_flow's own words."""
    for f in flows:
        try:
            check_flow(f)
        except ValueError as e:
            raise ValueError(f"{problem}{e}") from None


def _flows_rule(name: str, value) -> None:
    """None (IC, GC and, with include_ot, OT), or a non-empty list of distinct registered couplings."""
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name}={value!r} is not valid; it must be a non-empty list of registered couplings")
    _registered(value, f"{name}={list(value)!r} is not valid; every element: ")
    if len(set(value)) != len(value):
        raise ValueError(f"{name}={list(value)!r} is not valid; it names a coupling twice")


def _per_flow_rule(name: str, value) -> None:
    """None or a mapping {registered coupling: {Config field: value}}."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"{name}={value!r} is not valid; it must be a mapping {{flow: {{field: value}}}}")
    _registered(value, f"{name}={value!r} is not valid; ")


# notebooks/fid_curves.ipynb's parameters, each declared once: its default (the parameters cell spells the same),
# its doc line, its rule (what needs the training configuration, such as frozen steps, the final evaluation and
# the pre-registered endpoints, is checked by ``make_sweep``), and whether it sets a Config field on every run
# (``config``) or is listed in Table 1 and metrics.json (``column``). ``make_sweep``'s arguments, a profile's keys
# (``SWEEP_KEYS``), ``RULES`` and the notebook's declared parameters are this list.
SPEC = register_spec(Spec("fid_curves", positional=13, params=(
    Param("variant", "default", "results/fid_curves/<variant>/", required=True),
    Param("base_config", "params/train/toy.yaml", "a preset (IC as written); each run sets its own flow",
          required=True),
    Param("overrides", {"dataset": "8gaussians", "total_steps": 300, "lr": 1e-3, "batch_size": 256, "ema_every": 1,
                        "ema_decay": 0.999, "eval_every": 50, "eval_n": 500, "eval_metrics": ["w2"],
                        "checkpoint_every": 0, "s1": 40},
          "Config fields set on the preset for every run", required=True),
    Param("metric", "w2", "the curves' metric: a registered curve metric (w2, w2sq, fd_digits, kid_digits, fid...)",
          rule=lambda name, v: check_choice(name, v, METRICS), required=True, column=True),
    Param("seeds", [0, 1, 2], "training seeds (paired verdicts need 2 or more)", rule=distinct_ints, required=True),
    Param("mus", [0.5, 1.0], "GC probabilities (IC, mu 0, is always included)",
          rule=nonempty(lambda name, v: check_mu(v)), required=True),
    Param("include_ot", True, "sweep OT too (when flows is not given)"),
    Param("frozen", {}, "{name: step}: GC with a frozen predictor, the IC run's checkpoint at frozen_seed"),
    Param("frozen_mu", 0.5, "mu of the frozen-predictor runs", rule=lambda name, v: check_mu(v)),
    Param("frozen_seed", 0, "the seed whose IC run gives the frozen predictors", rule=int_at_least(0)),
    Param("per_flow", {}, "extra Config fields per flow, e.g. {'gc': {'dropout': 0.0}}", rule=_per_flow_rule),
    Param("fid", {}, "GPU: {'n': 50000, 'weights_path': None, 'data_root': 'data'}"),
    Param("workers", 1, "runs trained at a time (processes of one thread each)", rule=int_at_least(1)),
    Param("executor", {}, "{'kind': 'submitit', ...}: each run a SLURM job (docs/cluster.md)"),
    Param("final_eval", {}, "{'n': 2000, 'sampling_seeds': [0, 1, 2, 3, 4]}: final-model samples"),
    Param("preregistration", {}, "endpoints fixed before the runs: {'primary': [...], 'secondary': [...]}"),
    Param("compare_budget", "", "a profile at another budget (e.g. 'cpu_long'): does the lead change?"),
    Param("reanalyse", False, "analyse the committed curves.csv and final_eval.csv (no training)"),
    Param("flows", None, "the couplings to compare, each its own curve: None is ['ic', 'gc'] and 'ot' with "
          "include_ot; a registered coupling (a plugin's) is labelled by its name", rule=_flows_rule),
)))
RULES = SPEC.rules()          # {name: rule} (every Param's rule)
SWEEP_KEYS = SPEC.sweep_keys  # make_sweep's arguments: the keys a profile params/fid_curves/<variant>.yaml may give


# --------------------------------------------------------------------------------------------- a sweep
def curve_flows(flows, include_ot: bool = True) -> tuple:
    """The couplings a sweep compares: ``flows`` as given, or IC, GC and (``include_ot``) OT."""
    return ("ic", "gc") + (("ot",) if include_ot else ()) if flows is None else tuple(flows)


@dataclass
class Sweep:
    """A notebook's validated sweep: the base training config (a dict), what to run and how to score it. ``params``
    holds every parameter's checked value (one without an attribute here, added to ``spec``, is
    ``sw.setting(name)``)."""
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
    flows: list | None = None      # the couplings compared (None: IC, GC, and OT with include_ot)
    params: dict = field(default_factory=dict, repr=False)   # every parameter's checked value
    spec: Spec = field(default=SPEC, repr=False, compare=False)

    def setting(self, name: str):
        """A parameter's value: the attribute of that name, else ``params[name]``."""
        return getattr(self, name) if name in self.__dataclass_fields__ else self.params[name]

    @property
    def columns(self) -> dict:
        """{name: value} of the spec's ``column`` parameters, as Table 1 and metrics.json list them."""
        return {p.name: self.setting(p.name) for p in self.spec.params if p.column}

    @property
    def curve_flows(self) -> tuple:
        return curve_flows(self.flows, self.include_ot)

    @property
    def mu_labels(self) -> list:
        """The labels of the compared runs: IC and GC at each mu (those compared), then each other flow's."""
        fl = self.curve_flows
        mus = [m for m in sorted(set(self.mus) | {0.0}) if ("ic" if m == 0 else "gc") in fl]
        return [mu_label(m) for m in mus] + [flow_label(f) for f in fl if f not in ("ic", "gc")]

    @property
    def frozen_labels(self) -> list:
        return [f"GC frozen {n}" for n in self.frozen]

    @property
    def gc_main(self) -> str | None:
        """The GC run the claims and Table 1 feature (mu = 0.5 when swept); None when GC is not compared."""
        if "gc" not in self.curve_flows:
            return None
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
                          self.per_flow, self.flows)


def setup(params, spec: Spec = SPEC) -> "Sweep":
    """Check the parameters of notebooks/fid_curves.ipynb (the mapping ``check_params`` returns; ``spec``'s
    defaults fill what it lacks; every rule, one line per bad value, then ``make_sweep``'s checks: a ValueError
    naming the parameter, before any work) and build its ``Sweep``."""
    v = spec.values(params)
    sw = make_sweep(**{k: v[k] for k in spec.sweep_keys}, spec=spec)
    return _staged(sw, v["variant"])   # reanalyse read the committed results before this


def _staged(sw: Sweep, variant: str) -> Sweep:
    """The notebook's sweep writes into a staged folder beside results/fid_curves/<variant>/, which replaces it when
    ``write_claims`` writes metrics.json (``gclib.report.results_dir``): a sweep that fails leaves the old results."""
    from .. import report
    sw.out = report.results_dir("fid_curves", str(variant))
    return sw


def make_sweep(*args, root=None, spec: Spec = SPEC, **kwargs) -> Sweep:
    """Validate a notebook's parameters and build its ``Sweep`` (nothing is trained here). The arguments are
    ``spec``'s sweep parameters (``SWEEP_KEYS``; the first 13 may be given positionally: variant, base_config,
    overrides, metric, seeds, mus, include_ot, frozen, frozen_mu, frozen_seed, per_flow, fid, workers; variant to
    mus are required); every value rule is checked first (one line per bad value)."""
    from .. import report
    from ..config import load_config
    from ..plugins import load_plugins
    load_plugins()    # a plugin's coupling or metric is a valid value
    v = spec.bind(args, kwargs)
    spec.check(v)
    metric, seeds, frozen_seed = v["metric"], list(v["seeds"]), int(v["frozen_seed"])
    if metric == "fid" and not v["fid"]:
        raise ValueError("metric='fid' needs the fid block (n, weights_path, data_root)")
    from ..executors import executor_spec
    if not executor_spec(v["executor"] or None).wait:   # one line naming a bad executor setting, before any work
        raise ValueError("executor: wait=false is for gclib train; a sweep waits for its runs' curves")
    flows = curve_flows(v["flows"], bool(v["include_ot"]))
    if v["flows"] is not None and not v["include_ot"] and "ot" in flows:
        raise ValueError(f"include_ot=False contradicts flows={list(flows)!r}; leave include_ot out when giving flows")
    overrides = spec.with_config(v, v["overrides"])   # the config parameters are Config fields of every run
    root = report.project_root(root)
    base = load_config(root / v["base_config"], {"runs_dir": str(report.runs_dir(root)), **overrides,
                                                 "progress": False})
    frozen = dict(v["frozen"] or {})
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
        raise ValueError(f"frozen_seed={frozen_seed!r} must be one of seeds={seeds} (the frozen predictors are "
                         f"checkpoints of that seed's IC run)")
    if frozen and "ic" not in flows:
        raise ValueError(f"frozen={frozen!r} needs the IC run (its checkpoints are the frozen predictors); "
                         f"flows={list(flows)!r} has no 'ic'")
    base = base.to_dict()
    if metric == "fid":
        base["eval_metrics"] = []
    sw = Sweep(base, metric, seeds, [check_mu(m) for m in v["mus"]], bool(v["include_ot"]), frozen,
               float(v["frozen_mu"]), frozen_seed, int(v["workers"]), root / "results" / "fid_curves" / str(v["variant"]),
               dict(v["fid"] or {}), dict(v["per_flow"] or {}), _check_final_eval(v["final_eval"]),
               dict(v["preregistration"] or {}), executor=dict(v["executor"] or {}),
               compare_budget=str(v["compare_budget"] or ""), reanalyse=bool(v["reanalyse"]),
               flows=None if v["flows"] is None else list(v["flows"]), params=v, spec=spec)
    _check_preregistration(sw)
    if sw.reanalyse:
        sw.committed = _read_committed(sw)   # before anything in sw.out is rewritten
    if sw.compare_budget:
        _check_compare_budget(sw, root)   # one line naming the problem, before any training
    return sw


make_sweep.__signature__ = SPEC.signature(root=None, spec=SPEC)   # help(make_sweep) lists the spec's parameters


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


def sweep_from_params(path, root=None, spec: Spec = SPEC) -> Sweep:
    """The ``Sweep`` of a parameter file params/fid_curves/<variant>.yaml (what the notebook builds from it)."""
    import yaml
    p = yaml.safe_load(Path(path).read_text()) or {}
    kw = {k: p[k] for k in spec.sweep_keys if k in p}
    kw.setdefault("variant", Path(path).stem)
    return make_sweep(**kw, root=root, spec=spec)
