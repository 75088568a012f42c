"""Built-in sample-quality checks for ``gclib evaluate`` and the training loop's ``eval_metrics``.

A metric is called as ``fn(samples, data) -> float | dict`` with samples and data as (n, ...) float tensors.
``REGISTRY`` (``Metric``: function, plot label, what it needs, whether it scores a training curve) is the one list
of metrics; ``register_metric`` adds one, and ``METRICS``, ``NEEDS``, ``LABELS``, ``SAME_SIZE``,
``INCEPTION_METRICS`` and ``CURVE_METRICS`` are derived from it (as are ``gclib.experiments.fid_curves.METRICS``
and ``METRIC_LABELS``). The metrics that ``eval_metrics`` and ``gclib evaluate --metric`` accept are exactly the
names of ``METRICS``:
- ``w2``: exact 2-Wasserstein distance between the samples and as many random data points (flattened), from
  POT's ``ot.emd2`` on the squared Euclidean cost (the square root of the optimal mean cost);
- ``w2sq``: its square (the optimal mean squared distance);
- ``nn_dist``: mean Euclidean distance from each sample to its nearest data point (over the whole set);
- ``fd_digits``, ``kid_digits``: Frechet distance and kernel inception distance of 8x8 digits in the features of
  a small digits classifier (``gclib.metrics.fd_digits`` / ``kid_digits``, imported when first called);
- ``fid``, ``kid``, ``isc``: FID, KID and Inception Score in torch-fidelity's TF-compatible Inception features
  (``gclib.metrics.inception``; the weights file from ``weights_path``, $GCLIB_INCEPTION_WEIGHTS or torch hub's
  cache).

What each metric needs (``NEEDS``: optional packages, weight files, data of a given shape) is checked by
``check_metrics`` / ``check_metric_data`` before the first sample is drawn, so ``gclib evaluate`` with a missing
file fails at once, in one line naming the file, instead of after generating every sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .checks import RegistryNames, check_choice
from .data import DataSet, get_dataset, to_float


def w2(samples: torch.Tensor, data: torch.Tensor) -> float:
    """Exact W2 (``gclib.metrics.w2_exact``: POT in float64, convergence checked)."""
    from .metrics import w2_exact
    return w2_exact(samples, data)


def w2sq(samples: torch.Tensor, data: torch.Tensor) -> float:
    """Squared exact W2 (the optimal mean squared distance), as the authors report it on their 2-D toy."""
    return w2(samples, data) ** 2


def nn_dist(samples: torch.Tensor, data: torch.Tensor) -> float:
    a = samples.reshape(len(samples), -1).double().cpu()
    b = data.reshape(len(data), -1).double().cpu()
    mins = [torch.cdist(chunk, b).min(1).values for chunk in a.split(1024)]
    return float(torch.cat(mins).mean())


def fd_digits(samples: torch.Tensor, data: torch.Tensor) -> float:
    """Frechet distance in the digits classifier's features (``gclib.metrics.fd_digits``)."""
    from .metrics import fd_digits as fn
    return fn(samples, data)


def kid_digits(samples: torch.Tensor, data: torch.Tensor) -> float:
    """Kernel inception distance in the digits classifier's features (``gclib.metrics.kid_digits``)."""
    from .metrics import kid_digits as fn
    return fn(samples, data)


def fid(samples: torch.Tensor, data: torch.Tensor, weights_path=None) -> float:
    """FID (TF-Inception pool features through torch-fidelity; gclib.metrics.inception)."""
    from .metrics.inception import fid_inception
    return fid_inception(samples, data, weights_path=weights_path)


def kid(samples: torch.Tensor, data: torch.Tensor, weights_path=None) -> dict:
    """KID in TF-Inception features ({"mean", "std"} over subsets; gclib.metrics.inception)."""
    from .metrics.inception import kid_inception
    return kid_inception(samples, data, weights_path=weights_path)


def isc(samples: torch.Tensor, data: torch.Tensor, weights_path=None) -> dict:
    """Inception Score of the samples ({"mean", "std"} over splits; gclib.metrics.inception)."""
    from .metrics.inception import isc_inception
    return isc_inception(samples, data, weights_path=weights_path)


def get_metric(name: str):
    """The metric function registered as ``name`` in ``METRICS``; ValueError listing the valid names otherwise."""
    return METRICS[check_choice("metric", name, METRICS)]


def get_metric_entry(name: str) -> "Metric":
    """The ``Metric`` registered as ``name``; ValueError listing the valid names otherwise."""
    return REGISTRY[check_choice("metric", name, REGISTRY)]


# ------------------------------------------------------------------------------- prerequisites, before sampling
def _need_torch_fidelity(weights_path=None) -> None:
    from .checks import require
    require("torch_fidelity", "it")    # MissingExtraError naming the package and the extra (gclib[fid])


def _need_inception_weights(weights_path=None) -> None:
    from .metrics.fid import inception_weights_path
    inception_weights_path(weights_path)   # FileNotFoundError / ValueError naming the file and its checksum


def _need_digits_classifier(weights_path=None) -> None:
    from .metrics.digits import DigitsWeightsError, digits_features
    try:
        digits_features()
    except DigitsWeightsError as e:
        raise FileNotFoundError(str(e)) from e


def _images(shape) -> str | None:
    if len(shape) != 3 or shape[0] not in (1, 3):
        kind = f" ({shape[0]}-D points)" if len(shape) == 1 else ""
        return f"needs images (C, H, W) with 1 or 3 channels; the data items have shape {tuple(shape)}{kind}"
    return None


def _digits(shape) -> str | None:
    if tuple(shape) != (1, 8, 8):
        return f"needs 8x8 digits (1, 8, 8); the data items have shape {tuple(shape)}"
    return None


# ----------------------------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Metric:
    """One registered metric. fn(samples, data[, weights_path]) -> float | dict; label: its name in plots (TeX);
    needs: checks of packages and files, run in order before any sample is drawn (a missing package is named
    before a file that the package would read); item: check of one data item's shape (None: any);
    same_size: scored against as many data points as samples (exact OT); weights: fn takes ``weights_path``
    (the Inception weights); curve: a training curve of ``gclib.experiments.fid_curves`` can use it; text: its
    name in tables and metrics.json (plain text; default its label); requires: the optional modules it imports
    (keys of ``gclib.checks.EXTRAS``), checked before a run starts (``gclib.config.preflight``).

    What the rest of gclib asks it: ``accepts(dataset)`` (``refusal`` says why not), from its item check and the
    data set's item shape, never from the data set's name; ``reference(data, n, seed)``, the data rows it scores
    n samples of a model of that data set against (the model's own training set)."""
    name: str
    fn: Callable
    label: str
    needs: tuple = ()
    item: Callable | None = None
    same_size: bool = False
    weights: bool = False
    curve: bool = False
    text: str = ""
    requires: tuple = ()

    @property
    def table_name(self) -> str:
        """Its name in tables and metrics.json: ``text``, else its label."""
        return self.text or self.label

    def refusal(self, dataset) -> str | None:
        """Why it cannot score models of ``dataset`` (a registered name or a ``gclib.data.DataSet``): its item
        check on the data set's item shape; None when it accepts it."""
        ds = dataset if isinstance(dataset, DataSet) else get_dataset(dataset)
        return self.item(tuple(ds.shape)) if self.item is not None else None

    def accepts(self, dataset) -> bool:
        """Whether it can score models of ``dataset`` (see ``refusal``)."""
        return self.refusal(dataset) is None

    def reference(self, data: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
        """The rows of ``data`` (a model's training set) it scores ``n`` samples against: for ``same_size`` (exact
        OT between equal sets) n rows drawn without replacement by a generator seeded ``seed + 1`` (all rows, in
        order, when there are at most n); otherwise the whole set as given."""
        if self.same_size and len(data) > n:
            return data[torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + 1))[:n]]
        return data


REGISTRY: dict[str, Metric] = {}


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Add ``metric`` to ``REGISTRY`` (and to the derived tables below); a name already there is refused unless
    ``replace``."""
    if not isinstance(metric, Metric):
        raise TypeError(f"register_metric takes a gclib.evaluation.Metric, not {type(metric).__name__}")
    if metric.name in REGISTRY and not replace:
        raise ValueError(f"metric {metric.name!r} is already registered; pass replace=True to replace it")
    REGISTRY[metric.name] = metric
    _derive()
    return metric


def unregister_metric(name: str) -> None:
    """Remove a metric added by ``register_metric`` (e.g. at the end of a test)."""
    REGISTRY.pop(name, None)
    _derive()


# Derived from REGISTRY (kept up to date in place by register_metric, so an import of them stays live):
METRICS: dict = {}        # name -> fn: the only names that eval_metrics and --metric accept
NEEDS: dict = {}          # name -> (needs, item check)
LABELS: dict = {}         # name -> label
SAME_SIZE: list = []      # exact OT between equal-size sets: as many data points as samples
INCEPTION_METRICS: list = []   # these take weights_path
CURVE_METRICS: list = []  # the metrics of a training curve (fid_curves)
CURVE_NAMES = RegistryNames("curve metric")   # CURVE_METRICS as a live, read-only tuple-like view
CURVE_NAMES.bind(CURVE_METRICS)


def _derive() -> None:
    for table in (METRICS, NEEDS, LABELS):
        table.clear()
    for lst in (SAME_SIZE, INCEPTION_METRICS, CURVE_METRICS):
        lst.clear()
    for m in REGISTRY.values():
        METRICS[m.name], NEEDS[m.name], LABELS[m.name] = m.fn, (m.needs, m.item), m.label
        for flag, lst in ((m.same_size, SAME_SIZE), (m.weights, INCEPTION_METRICS), (m.curve, CURVE_METRICS)):
            if flag:
                lst.append(m.name)


_INCEPTION = (_need_torch_fidelity, _need_inception_weights)
_FIDELITY = ("torch_fidelity",)
for _m in (Metric("w2", w2, "W$_2$", same_size=True, curve=True, text="W2"),
           Metric("w2sq", w2sq, "W$_2^2$", same_size=True, curve=True),
           Metric("nn_dist", nn_dist, "NN distance"),
           Metric("fd_digits", fd_digits, "FD$_{digits}$", (_need_digits_classifier,), _digits, curve=True,
                  text="FD_digits", requires=("sklearn",)),
           Metric("kid_digits", kid_digits, "KID$_{digits}$", (_need_digits_classifier,), _digits, curve=True,
                  requires=("sklearn",)),
           Metric("fid", fid, "FID", _INCEPTION, _images, weights=True, curve=True, requires=_FIDELITY),
           Metric("kid", kid, "KID", _INCEPTION, _images, weights=True, requires=_FIDELITY),
           Metric("isc", isc, "IS", _INCEPTION, _images, weights=True, requires=_FIDELITY)):
    register_metric(_m)


def _raise_problems(problems: dict) -> None:
    """problems: {message: (exception type, [metric names])} -> one exception, one line, every problem."""
    if not problems:
        return
    parts = [f"metric {', '.join(map(repr, names))}: {msg}" for msg, (_, names) in problems.items()]
    first_type = next(iter(problems.values()))[0]
    raise first_type("; ".join(" ".join(p.split()) for p in parts))


def check_metrics(names, weights_path=None) -> list:
    """Check, before any sample is drawn, that every metric in ``names`` can run here: its name (``METRICS``),
    the optional packages it imports (torch-fidelity for fid/kid/isc: the ``fid`` extra) and the files it reads
    (the Inception weights from ``weights_path``, $GCLIB_INCEPTION_WEIGHTS or torch hub's cache, checked by
    SHA-256; the shipped digits classifier). Returns the names. Raises one exception, one line naming every
    problem (each file with where it was looked for and how to provide it): ValueError for an unknown name,
    ModuleNotFoundError for a missing package, FileNotFoundError / ValueError for a missing or wrong file."""
    names = list(names)
    for m in names:
        get_metric(m)
    problems: dict = {}
    done: dict = {}
    for m in names:
        for need in NEEDS[m][0]:
            if need not in done:
                try:
                    need(weights_path)
                    done[need] = None
                except (ImportError, OSError, ValueError) as e:
                    done[need] = e
            e = done[need]
            if e is not None:
                problems.setdefault(str(e), (type(e), []))[1].append(m)
                break   # the next needs of this metric depend on this one
    _raise_problems(problems)
    return names


def check_metric_data(names, item_shape) -> None:
    """Check that every metric in ``names`` accepts data items of shape ``item_shape`` (e.g. (3, 32, 32)): images
    for the Inception metrics, 8x8 digits for the digits metrics. One ValueError naming every problem."""
    problems: dict = {}
    for m in names:
        check = NEEDS[check_choice("metric", m, METRICS)][1]
        msg = check(tuple(item_shape)) if check else None
        if msg:
            problems.setdefault(msg, (ValueError, []))[1].append(m)
    _raise_problems(problems)


@torch.no_grad()
def generate(ema_model, n: int, shape, sigma_max: float, steps: int = 1, seed: int = 0, sigmas=None,
             batch: int = 1024, device="cpu", progress=None) -> torch.Tensor:
    """n samples by consistency sampling from seeded noise; ``steps`` Karras levels from sigma_max unless
    ``sigmas`` (decreasing) is given. ``progress(k)``, if given, is called with the size of each batch as it is
    done (``gclib.progress.Progress.update``)."""
    from .sampling import sample
    from .schedules import karras_sigmas
    if sigmas is None:
        if steps < 1:
            raise ValueError(f"steps={steps} must be >= 1")
        grid = karras_sigmas(steps + 1, ema_model.sigma_min, sigma_max)
        sigmas = grid.flip(0)[:steps].tolist()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        m = min(batch, n - i)
        z = torch.randn((m, *shape), generator=g).to(device)
        out.append(sample(ema_model, z, sigmas, sigma_min=ema_model.sigma_min, generator=g if device == "cpu" else None).cpu())
        if progress is not None:
            progress(m)
    return torch.cat(out)


def evaluate_samples(samples: torch.Tensor, data: torch.Tensor, names, n_ref: int | None = None, seed: int = 0,
                     weights_path=None, say=None) -> dict:
    """{name: value} for each metric name (dict-valued metrics are merged with 'name/key'). ``weights_path``: the
    Inception weights file for fid, kid and isc (default $GCLIB_INCEPTION_WEIGHTS, else torch hub's cache).
    ``say(text)``, if given, hears a line as each metric starts and as it ends (with its value and seconds)."""
    import time
    ref = to_float(data)
    ref = ref[torch.randperm(len(ref), generator=torch.Generator().manual_seed(seed + 1))]  # random order
    if n_ref is not None:
        ref = ref[:n_ref]
    out = {}
    for name in names:
        fn = get_metric(name)
        ref_n = ref[:len(samples)] if name in SAME_SIZE else ref
        kw = {"weights_path": weights_path} if name in INCEPTION_METRICS and weights_path is not None else {}
        if say is not None:
            say(f"{name}: {len(samples)} samples against {len(ref_n)} data points ...")
        t0 = time.perf_counter()
        val = fn(samples.float(), ref_n, **kw)
        got = {f"{name}/{k}": float(v) for k, v in val.items()} if isinstance(val, dict) else {name: float(val)}
        out.update(got)
        if say is not None:
            say(f"{', '.join(f'{k} {v:.6g}' for k, v in got.items())} ({time.perf_counter() - t0:.1f} s)")
    return out


def evaluate_model(ema_model, data: torch.Tensor, names, n: int = 1000, seed: int = 0, sigma_max: float | None = None,
                   steps: int = 1) -> dict:
    device = next(ema_model.parameters()).device
    s = generate(ema_model, n, tuple(data.shape[1:]), sigma_max or ema_model.sigma_max, steps, seed=seed,
                 device=str(device))
    return evaluate_samples(s, data, names, n_ref=max(n, 10_000), seed=seed)


# The evaluation logged during training, built from its config section (``gclib.config.part(cfg, "eval")``):
# config field -> ``make_evaluation`` keyword.
SETTINGS = {"eval_metrics": "metrics", "eval_n": "n", "eval_every": "every"}


@dataclass(frozen=True)
class Evaluation:
    """The in-training evaluation: the metrics ``metrics`` of ``n`` one-step samples (``evaluate_model``, seeded
    by ``seed``, from noise at ``sigma_max``; None: the model's) every ``every`` steps and at the last step
    (``every`` 0: only at the last step)."""
    metrics: tuple = ()
    n: int = 1000
    every: int = 0
    seed: int = 0
    sigma_max: float | None = None

    def due(self, step: int, final: bool = False, extra: bool = False) -> bool:
        """Whether step ``step`` evaluates: something to evaluate (its metrics, or ``extra`` evaluation functions)
        and a step of its schedule."""
        return bool(self.metrics or extra) and bool((self.every and step % self.every == 0) or final)

    def __call__(self, ema_model, data: torch.Tensor) -> dict:
        """{metric: value} of the model against ``data`` ({} without metrics)."""
        if not self.metrics:
            return {}
        return evaluate_model(ema_model, data, list(self.metrics), n=self.n, seed=self.seed, sigma_max=self.sigma_max)


def make_evaluation(metrics=(), n: int = 1000, every: int = 0, *, seed: int = 0,
                    sigma_max: float | None = None) -> Evaluation:
    """The in-training evaluation from its section's settings (``metrics``, ``n``, ``every``: ``SETTINGS``) and what
    it takes from other sections, given explicitly: the run's ``seed`` and the loss section's ``sigma_max``, e.g.
    ``make_evaluation(**part(cfg, "eval"), seed=cfg.seed, sigma_max=cfg.sigma_max)``. Metric names are checked."""
    for name in metrics:
        check_choice("metric", name, METRICS)
    return Evaluation(tuple(metrics), int(n), int(every), int(seed), sigma_max)
