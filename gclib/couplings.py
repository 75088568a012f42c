"""The flows: which (endpoint, noise) pairs a consistency step trains on (docs/method.md sections 4-5).

A coupling is a small object registered under its flow name (``REGISTRY``, ``register_coupling``): called on a
data batch x and noise z it returns ``Pairs``, the endpoint ``x`` and noise ``z`` to build the pair
(x + sigma_i z, x + sigma_{i+1} z) from, and the mask of rows whose endpoint was generated. The loss never knows
which flow made it. ``couple(flow, x, z, ...)`` builds the registered coupling from flat options and calls it.

- "ic" (``IC``): independent coupling, (x, z) as drawn (standard consistency training).
- "ot" (``OT(solver)``): exact minibatch optimal transport on the squared Euclidean cost: the noise is permuted
  so that the pairing (x_k, z_perm(k)) solves the assignment problem. Always a permutation, never a resampling.
- "gc" (``GC(mu, predictor, predict_all)``): generator-augmented coupling. Each row is a GC row with probability
  mu (independent Bernoulli); for those rows the endpoint is replaced by x^ = sg f_pred(x + sigma_i z, sigma_i),
  predicted at the LOWER level of the pair, and the SAME z is kept. The predictor runs only on the GC rows (unless
  ``predict_all=True``, the authors' whole-batch variant, kept for benchmarks). A GC row whose lower level is 0
  (ECT's pairs with r = 0) keeps its data endpoint: the predictor at level 0 is the identity, f(x, 0) = x.

The contract every coupling keeps (``tests/test_extend_coupling.py`` checks it for each registered one): the
returned noise rows are a permutation of z's rows (the noise marginal is kept); the endpoint of a row outside
``gc_mask`` is one of x's rows, and with no generated row the endpoints are a permutation of x's rows (the data
marginal is kept); a generated endpoint (a row in ``gc_mask``) is the predictor's output at that row's noisy point
x_k + sigma_k z_k, or x_k itself where sigma_k = 0. Draws come only from ``generator``, in a fixed order.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch

from .checks import FLOWS, check_choice, check_flow, check_mu, check_same_shape
from .precond import pad_dims

Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OT_SOLVERS = ("auto", "emd", "scipy")
# The config fields of the coupling section a coupling may be built from (``Coupling.build``); its own settings
# come from the config's ``coupling_options``.
CONFIG_OPTIONS = ("mu", "ot_solver", "predict_all")
# solver="auto": scipy's linear_sum_assignment below this batch size, POT's ot.emd from it on. Measured on an idle
# 2-core CPU (benchmarks/ot_scaling.py, results/bench/ot_scaling.json): scipy wins below ~128-256 rows; ot.emd
# wins from 128 (d = 2), 512 (d = 64) and 1024 (d = 3072) rows on, by 2-9x at 1024-2048 rows in 2-D. Between
# 256 and 1024 rows in high dimension the two differ by at most a few milliseconds either way.
OT_AUTO_EMD_MIN_N = 512
OT_AUTO_EMD_MIN_N_LOW_DIM = 128   # for d <= OT_AUTO_LOW_DIM (2-D toys: 2.3x faster at 256 rows)
OT_AUTO_LOW_DIM = 16


def resolve_ot_solver(solver: str, n: int, d: int | None = None) -> str:
    """The exact solver ``ot_permutation`` uses for a batch of n rows of dimension d: "emd" or "scipy"
    ("auto" picks by n and d)."""
    check_choice("ot_solver", solver, OT_SOLVERS)
    if solver == "auto":
        low_dim = d is not None and d <= OT_AUTO_LOW_DIM
        return "emd" if n >= (OT_AUTO_EMD_MIN_N_LOW_DIM if low_dim else OT_AUTO_EMD_MIN_N) else "scipy"
    return solver


@dataclass
class Pairs:
    """What a coupling returns. x: endpoints (B, ...); z: noise (B, ...); gc_mask: bool (B,), True where x is a
    generated (GC) endpoint."""
    x: torch.Tensor
    z: torch.Tensor
    gc_mask: torch.Tensor


def ot_permutation(x: torch.Tensor, z: torch.Tensor, solver: str = "auto", num_iter_max: int = 1_000_000) -> torch.Tensor:
    """Permutation ``perm`` (int64, (B,)) minimising sum_k ||x_k - z_perm(k)||^2 exactly.

    solver="emd": POT's network simplex on uniform weights in float64 (convergence checked);
    solver="scipy": scipy.optimize.linear_sum_assignment; solver="auto" (default): the faster of the two for
    this batch size (``resolve_ot_solver``). All are exact, and the result is checked to be a permutation.
    """
    check_choice("ot_solver", solver, OT_SOLVERS)
    check_same_shape("x", x, "z", z)
    n = x.shape[0]
    solver = resolve_ot_solver(solver, n, x[0].numel() if n else None)
    xf = x.detach().reshape(n, -1).to("cpu", torch.float64)
    zf = z.detach().reshape(n, -1).to("cpu", torch.float64)
    cost = torch.cdist(xf, zf).pow_(2).numpy()
    if solver == "scipy":
        from scipy.optimize import linear_sum_assignment
        rows, cols = linear_sum_assignment(cost)
        perm = np.empty(n, dtype=np.int64)
        perm[rows] = cols
        if len(rows) != n or not (np.bincount(cols, minlength=n) == 1).all():
            raise RuntimeError("linear_sum_assignment returned an assignment that is not a permutation")
    else:
        import ot
        w = np.full(n, 1.0 / n)
        plan, log = ot.emd(w, w, cost, numItermax=num_iter_max, log=True)
        if log.get("result_code", 1) != 1:
            raise RuntimeError(f"ot.emd did not converge on a batch of {n} ({log.get('warning')}); "
                               f"raise num_iter_max (now {num_iter_max}) or use solver='scipy'")
        perm = plan.argmax(axis=1)
        if not (np.bincount(perm, minlength=n) == 1).all():  # an optimal vertex of the Birkhoff polytope
            raise RuntimeError("ot.emd returned a plan that is not a permutation")
    return torch.from_numpy(perm).to(x.device)


def gc_mask(batch: int, mu: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Bernoulli(mu) mask of GC rows, bool (batch,). mu = 0 gives all False and mu = 1 all True exactly."""
    mu = check_mu(mu)
    u = torch.rand(batch, generator=generator, device=generator.device if generator is not None else "cpu")
    return (u < mu).to(device)


class Coupling:
    """A rule pairing a data batch with noise: subclass it, implement ``pair``, register it under a flow name.

    ``coupling(x, z, sigma=..., predictor=..., generator=..., ot_perm=...)`` checks that x and z have one shape
    and returns ``self.pair(...)``, a ``Pairs`` keeping the module's contract. The keywords a coupling may use:
    ``sigma`` (B,) the lower level of each row's pair; ``predictor(x_noisy, sigma) -> x^`` the endpoint predictor
    (given only when ``needs_predictor``); ``generator`` the stream of the coupling's own random draws (the GC
    mask stream of ``gclib.rng.Streams``); ``ot_perm`` a pairing solved ahead for this batch (``gclib.prefetch``).
    A coupling ignores the ones it does not use. Its settings (OT's solver, GC's mu) are constructor arguments;
    ``build(**options)`` makes one from a config's options, passing each the keywords its ``__init__`` names.

    What it does, read by the rest of gclib instead of its flow name (``capabilities``):
    ``needs_predictor``: the training step resolves the predictor (EMA, online, frozen) only then, and the
    config's ``predictor`` is part of the run's identity only then; ``permutes_noise``: the returned noise rows may
    be in another order than z's, so the endpoint paired with a given noise row is read from the returned pairs
    (``gclib.coupling_paths``); ``solves_ahead``: the pairing depends on (x, z) alone and ``solve(x, z)`` gives
    it as a permutation of z's rows, which the training loop solves on a worker thread while the previous step
    runs (``gclib.prefetch``) and hands back as ``ot_perm``; ``log_columns``: its own metrics.csv columns, one
    value each from ``log_values(batch=...)``; ``settings``: the names of the options it is built from, either
    config fields of the coupling section (``CONFIG_OPTIONS``: mu, ot_solver, predict_all) or its own settings,
    which a config gives in ``coupling_options`` (None: the parameters of its ``__init__`` but ``predictor``).
    """
    needs_predictor: ClassVar[bool] = False   # the training step resolves the predictor (EMA, online) only then
    # whether a row's pair depends on the other rows of its batch (OT): under DDP each rank pairs its own share, so
    # the number of processes changes the experiment and enters the run's identity (gclib.config.config_hash)
    per_batch: ClassVar[bool] = False
    permutes_noise: ClassVar[bool] = False    # the returned noise rows may be a permutation of z's rows
    solves_ahead: ClassVar[bool] = False      # ``solve(x, z)`` gives the pairing ahead of the step (gclib.prefetch)
    log_columns: ClassVar[tuple] = ()         # its own metrics.csv columns (values: ``log_values``)
    settings: ClassVar[tuple | None] = None   # the options it is built from; None: its __init__'s parameters

    def __call__(self, x: torch.Tensor, z: torch.Tensor, *, sigma: torch.Tensor | None = None,
                 predictor: Predictor | None = None, generator: torch.Generator | None = None,
                 ot_perm: torch.Tensor | None = None) -> Pairs:
        check_same_shape("x", x, "z", z)
        return self.pair(x, z, sigma=sigma, predictor=predictor, generator=generator, ot_perm=ot_perm)

    def pair(self, x: torch.Tensor, z: torch.Tensor, *, sigma, predictor, generator, ot_perm) -> Pairs:
        raise NotImplementedError(f"{type(self).__name__} must implement pair(x, z, *, sigma, predictor, "
                                  f"generator, ot_perm) -> Pairs")

    def solve(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The pairing of (x, z) as a permutation of z's rows (int64 (B,)), for a coupling that ``solves_ahead``."""
        raise NotImplementedError(f"{type(self).__name__} does not solve its pairing ahead (solves_ahead is False)")

    def log_values(self, *, batch: int) -> tuple:
        """The values of ``log_columns`` for one step that paired ``batch`` rows (this process's batch)."""
        return ()

    def describe(self) -> str:
        """Its settings in a few words for the run's status line (e.g. GC's "mu 0.5"); "" when there is nothing
        to say."""
        return ""

    @classmethod
    def build(cls, **options) -> "Coupling":
        """An instance from options (a config's mu, ot_solver, predict_all and its ``coupling_options``): the
        keywords that ``__init__`` names are passed, the others ignored."""
        if cls.__init__ is object.__init__:   # no settings
            return cls()
        params = inspect.signature(cls).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return cls(**options)
        return cls(**{k: v for k, v in options.items() if k in params})

    @classmethod
    def options(cls) -> tuple | None:
        """The names of the options it is built from: ``settings`` when the class declares them, else the
        parameters of its ``__init__`` except ``predictor`` (which the training step passes at each call);
        None for an ``__init__`` that takes any keyword."""
        if cls.settings is not None:
            return tuple(cls.settings)
        if cls.__init__ is object.__init__:
            return ()
        params = inspect.signature(cls).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return None
        return tuple(k for k, p in params.items() if k != "predictor" and p.kind is not p.VAR_POSITIONAL)

    @classmethod
    def config_fields(cls) -> tuple:
        """The config fields of the coupling section it reads (the others do not change what it trains):
        those of ``CONFIG_OPTIONS`` it is built from, and ``predictor`` when it ``needs_predictor``."""
        names = cls.options()
        read = CONFIG_OPTIONS if names is None else tuple(k for k in CONFIG_OPTIONS if k in names)
        return read + (("predictor",) if cls.needs_predictor else ())

    @classmethod
    def own_settings(cls) -> tuple | None:
        """The names of its own settings, given by a config's ``coupling_options`` (not config fields); None:
        any name (an ``__init__`` taking any keyword)."""
        names = cls.options()
        return None if names is None else tuple(k for k in names if k not in CONFIG_OPTIONS)

    @classmethod
    def capabilities(cls) -> dict:
        """What the coupling does, as the rest of gclib reads it (see the class docstring)."""
        return {"needs_predictor": cls.needs_predictor, "permutes_noise": cls.permutes_noise,
                "solves_ahead": cls.solves_ahead, "log_columns": tuple(cls.log_columns),
                "config_fields": cls.config_fields(), "own_settings": cls.own_settings()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _no_gc(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)


class IC(Coupling):
    """Independent coupling: (x, z) as drawn."""

    def pair(self, x, z, **_) -> Pairs:
        return Pairs(x, z, _no_gc(x))


class OT(Coupling):
    """Exact minibatch OT: z permuted to solve the assignment problem with x (``ot_permutation``); a pairing
    solved ahead (``ot_perm``) is used as given. Logs the batch it matched (``ot_batch``: per process under DDP)."""
    per_batch = True
    permutes_noise = True
    solves_ahead = True
    log_columns = ("ot_batch",)
    settings = ("ot_solver",)

    def __init__(self, solver: str = "auto"):
        self.solver = check_choice("ot_solver", solver, OT_SOLVERS)

    @classmethod
    def build(cls, ot_solver: str = "auto", **_) -> "OT":
        return cls(ot_solver)

    def solve(self, x, z) -> torch.Tensor:
        return ot_permutation(x, z, self.solver)

    def log_values(self, *, batch: int) -> tuple:
        return (batch,)

    def pair(self, x, z, *, ot_perm=None, **_) -> Pairs:
        perm = self.solve(x, z) if ot_perm is None else ot_perm.to(z.device)
        return Pairs(x, z[perm], _no_gc(x))


class GC(Coupling):
    """Generator-augmented coupling: each row is a GC row with probability mu (drawn from ``generator``); a GC
    row with sigma > 0 takes the predictor's endpoint at its lower level, the same z kept. ``predictor`` given
    to the call replaces the one given here."""
    needs_predictor = True

    def __init__(self, mu: float = 0.5, predictor: Predictor | None = None, predict_all: bool = False):
        self.mu = check_mu(mu)
        self.predictor = predictor
        self.predict_all = bool(predict_all)

    def describe(self) -> str:
        return f"mu {self.mu}"

    def pair(self, x, z, *, sigma=None, predictor=None, generator=None, **_) -> Pairs:
        predictor = predictor if predictor is not None else self.predictor
        if sigma is None or predictor is None:
            raise ValueError("flow='gc' needs sigma (the lower level of each pair, shape (B,)) and a predictor")
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma has shape {tuple(sigma.shape)}; expected ({x.shape[0]},)")
        mask = gc_mask(x.shape[0], self.mu, generator, x.device)
        live = mask & (sigma > 0)  # GC rows at level 0 keep x: f(x, 0) = x
        if not live.any():
            return Pairs(x, z, mask)
        with torch.no_grad():
            if self.predict_all:  # level-0 rows run at the smallest positive level; their output is not used
                s_in = sigma.clamp(min=torch.finfo(sigma.dtype).tiny)
                x_hat = predictor(x + pad_dims(sigma, x) * z, s_in)[live]
            else:
                xm, zm, sm = x[live], z[live], sigma[live]
                x_hat = predictor(xm + pad_dims(sm, xm) * zm, sm)
        x_new = x.clone()
        x_new[live] = x_hat.to(x.dtype)
        return Pairs(x_new, z, mask)


REGISTRY: dict[str, type[Coupling]] = {}
FLOWS.bind(REGISTRY)  # gclib.checks.FLOWS (and check_flow) read the registry's names live


def register_coupling(name: str, cls: type[Coupling], *, replace: bool = False) -> type[Coupling]:
    """Register the ``Coupling`` subclass ``cls`` as flow ``name`` (then ``flow: name`` in a config, in
    ``couple`` and in the notebooks' flow checks); a name already there is refused unless ``replace``."""
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"coupling name {name!r} must be a non-empty identifier (it is a config value)")
    if not (isinstance(cls, type) and issubclass(cls, Coupling)):
        raise TypeError(f"register_coupling takes a subclass of gclib.couplings.Coupling, not {cls!r}")
    if name in REGISTRY and REGISTRY[name] is not cls and not replace:
        raise ValueError(f"coupling {name!r} is already registered ({REGISTRY[name].__name__}); pass replace=True "
                         f"to replace it")
    REGISTRY[name] = cls
    return cls


def unregister_coupling(name: str) -> None:
    """Remove a coupling added by ``register_coupling`` (e.g. at the end of a test)."""
    REGISTRY.pop(name, None)


register_coupling("ic", IC)
register_coupling("ot", OT)
register_coupling("gc", GC)


def make_coupling(name: str, **settings) -> Coupling:
    """The coupling registered as ``name``, built from its settings (``Coupling.build``), e.g.
    ``make_coupling("gc", mu=0.3, ot_solver="auto")`` -> ``GC(mu=0.3)``; ``make_coupling(**coupling_settings(cfg))``
    builds a configuration's coupling from its section."""
    return REGISTRY[check_flow(name)].build(**settings)


def coupling_settings(cfg) -> dict:
    """The settings a configuration's coupling is built from (the coupling section, EDM-style): ``name`` (the flow),
    the config fields a coupling may read (``CONFIG_OPTIONS``) and its own ``coupling_options``. ``cfg``: a
    ``gclib.config.Config`` or anything with its fields; ``gclib.config.part(cfg, "coupling")`` gives the same."""
    options = {k: getattr(cfg, k) for k in CONFIG_OPTIONS}
    return {"name": cfg.flow, **options, **dict(getattr(cfg, "coupling_options", None) or {})}


def coupling_of(cfg) -> Coupling:
    """The coupling of a configuration (a ``gclib.config.Config`` or anything with its fields): the registered
    ``cfg.flow`` built from its section's settings (``coupling_settings``)."""
    return make_coupling(**coupling_settings(cfg))


def couple(flow: str | Coupling, x: torch.Tensor, z: torch.Tensor, *, sigma: torch.Tensor | None = None, mu: float = 0.5,
           predictor: Predictor | None = None, generator: torch.Generator | None = None,
           ot_solver: str = "auto", predict_all: bool = False, ot_perm: torch.Tensor | None = None) -> Pairs:
    """Couple a data batch x (B, ...) with noise z (B, ...) according to the registered coupling ``flow``
    ("ic", "ot", "gc" or one added by ``register_coupling``): ``make_coupling(flow, mu=mu, ot_solver=ot_solver,
    predict_all=predict_all)(x, z, sigma=sigma, predictor=predictor, generator=generator, ot_perm=ot_perm)``;
    ``flow`` may also be a ``Coupling`` instance, called as it is (``mu``, ``ot_solver``, ``predict_all`` unused).

    For "gc": ``sigma`` (B,) is the lower level sigma_i of each row's pair, ``mu`` the probability of a GC row,
    ``predictor(x_noisy, sigma) -> x^`` the endpoint predictor (EMA, online or frozen model; run under
    no_grad here), ``generator`` drives the Bernoulli draws.
    For "ot": ``ot_solver`` in {"auto", "emd", "scipy"} (all exact; "auto" picks the faster for the batch size);
    ``ot_perm`` (int64 (B,)), when given, is ``ot_permutation(x, z, ot_solver)`` solved ahead of time
    (``gclib.prefetch``) and is used instead of solving again.
    For "gc", rows with sigma == 0 keep x (f(x, 0) = x) and the predictor is not run on them.
    """
    c = flow if isinstance(flow, Coupling) else make_coupling(flow, mu=mu, ot_solver=ot_solver, predict_all=predict_all)
    return c(x, z, sigma=sigma, predictor=predictor, generator=generator, ot_perm=ot_perm)
