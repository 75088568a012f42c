"""Training objectives as small objects: one call per step, one hook for the schedule (docs/extending.md).

A ``Loss`` holds everything a training step needs besides the model and the batch: the coupling, the predictor,
the distance, the noise-level distribution and the schedule. The training loop (``gclib.train``) knows only

    loss = make_loss(cfg, coupling, predictor=...)      # once, from the configuration
    loss.update_schedule(k)                             # before step k (0-based): the curriculum's state at k
    value, result = loss(model, x, generator=streams, ema=ema)   # (loss tensor, gclib.objectives.StepResult)
    loss.num_points                                     # the grid size at k (metrics.csv's num_points; 0 if none)

The objectives (``LOSSES``, ``register_loss``):

- ``ConsistencyLoss`` ("ict"): improved consistency training on a Karras grid. The hook sets the iCT curriculum's
  grid N(k) (``schedules.num_points``); a call draws interval indices i ~ ``schedules.sample_intervals``
  (lognormal p_mean, p_std), then z, couples, and returns lambda_i D(sg f(x_lo, sigma_i), f(x_hi, sigma_{i+1})).
- ``ECTLoss`` ("ect"): easy consistency tuning's continuous-time pairs (``schedules.ect_pairs``); the hook sets the
  step (hence ECT's stage); weight 1 / (t - r); rows with r = 0 take the data as the target
  (``data_at_level_zero``).
- ``DenoisingLoss`` ("denoising"): EDM-weighted denoising of the same network (diffusion pre-training for ECT).

Random draws come from ``generator``: a ``gclib.rng.Streams`` (levels, noise and GC mask each from its own stream)
or one ``torch.Generator`` for all; the levels are drawn first, then z, then the coupling's draws. ``update_schedule``
depends on k only (no history), so a resumed run sets the same schedule as an uninterrupted one.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from .checks import check_choice
from .couplings import Coupling, couple, coupling_of, make_coupling
from .ema import EMA
from .losses import cd_points, consistency_loss, ct_points, get_distance
from .precond import pad_dims
from .rng import split
from .schedules import (denoising_sigmas, denoising_weights, ect_pairs, karras_sigmas, loss_weights, num_points,
                        sample_intervals)

__all__ = ["Loss", "ConsistencyLoss", "ECTLoss", "DenoisingLoss", "StepResult", "LOSSES", "register_loss",
           "loss_name", "make_loss", "build_loss", "loss_settings", "FROM_PARTS", "prefetches_ot", "resolve_predictor",
           "data_at_level_zero", "draw_noise"]


@dataclass
class StepResult:
    """What one step did: loss (float), per-row interval indices, sigma pairs and GC mask (all (B,))."""
    loss: float
    indices: torch.Tensor
    sigma_lo: torch.Tensor
    sigma_hi: torch.Tensor
    gc_mask: torch.Tensor
    num_points: int = 0

    @property
    def gc_fraction(self) -> float:
        return float(self.gc_mask.float().mean()) if self.gc_mask.numel() else 0.0


def resolve_predictor(predictor, model: nn.Module, ema: EMA | None) -> Callable:
    """"ema" -> the EMA network (eval mode), "online" -> the online model, else a frozen model/callable."""
    if isinstance(predictor, str):
        check_choice("predictor", predictor, ("ema", "online"))
        if predictor == "ema":
            if ema is None:
                raise ValueError("predictor='ema' needs an EMA (pass ema=EMA(model)) or choose predictor='online'")
            return ema.model
        return model
    if not callable(predictor):
        raise ValueError(f"predictor={predictor!r}: use 'ema', 'online', or a model/callable f(x, sigma)")
    return predictor


def data_at_level_zero(model: Callable, sigma_floor: float = 1.0) -> Callable:
    """``model`` with the boundary condition f(x, 0) = x applied to rows at level 0 (ECT's pairs with r = 0 take
    the data as the target). The whole batch still runs through the network, the level-0 rows at ``sigma_floor``
    (any valid level: their output is discarded), so every row keeps the dropout mask the student draws; then the
    level-0 rows are replaced by x exactly. Batches without a level-0 row are passed straight to ``model``."""
    def f(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        zero = sigma <= 0
        if not bool(zero.any()):
            return model(x, sigma)
        out = model(x, torch.where(zero, torch.full_like(sigma, sigma_floor), sigma))
        return torch.where(pad_dims(zero, x), x, out)
    return f


def draw_noise(shape, generator, device, dtype) -> torch.Tensor:
    """Standard normal noise of ``shape`` from ``generator`` (on its own device), moved to ``device``."""
    gdev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gdev, dtype=dtype).to(device)


def _core(model):
    return getattr(model, "module", model)  # DDP wraps the ConsistencyModel


class Loss:
    """A training objective: ``loss(model, x, *, generator, ema, ...) -> (loss tensor, StepResult)``.

    Subclasses implement ``__call__``; those with a schedule override ``update_schedule(step)`` (called by the
    training loop before each step, with the 0-based step k) and ``num_points`` (the grid size it logs). ``coupling``
    is the pairing the loss trains on (None for objectives without one).

    Its settings, EDM-style (``build``, ``make_loss``): ``config_settings`` maps a constructor keyword to the config
    field of the loss section it is filled from (a tuple of fields: the first that is not null); its own settings
    (``own_settings``: not config fields) come from the loss section too, as ``loss: {name: mine, width: 3}`` (the
    config's ``loss_options``). What it takes from other parts is passed explicitly, when its ``__init__`` names it
    (``FROM_PARTS``): the coupling object, the resolved predictor and the optimiser section's ``total_steps``.
    ``from_config(cfg, coupling, predictor)`` builds one from a whole configuration; its default is built from the
    declared settings, and a subclass that overrides it (a plugin written before the sections) is still called.
    """
    coupling: Coupling | None = None
    config_settings: ClassVar[dict] = {}      # constructor keyword -> config field (or fields: the first not null)
    OWN_SETTINGS: ClassVar[tuple | None] = None   # None: its __init__'s other keywords (see own_settings)

    def update_schedule(self, step: int) -> None:
        """Set the schedule for 0-based training step ``step`` (a function of the step alone)."""

    @property
    def num_points(self) -> int:
        """The number of grid points at the current step (0 for continuous-time objectives)."""
        return 0

    def __call__(self, model: nn.Module, x: torch.Tensor, **kw):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(model, x, *, generator, ema, ...)")

    @classmethod
    def takes(cls) -> tuple:
        """The parts of other sections it is built around (``FROM_PARTS`` that its ``__init__`` names)."""
        params = inspect.signature(cls.__init__).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return FROM_PARTS
        return tuple(k for k in FROM_PARTS if k in params)

    @classmethod
    def own_settings(cls) -> tuple | None:
        """The names of its own settings (given in the loss section, the config's ``loss_options``), from the
        nearest class of its MRO that sets ``OWN_SETTINGS`` or defines ``__init__``: that ``OWN_SETTINGS`` if set
        (not None), else the keywords of its ``__init__`` that are neither ``config_settings`` nor parts of other
        sections (``FROM_PARTS``); None: any name (an ``__init__`` taking any keyword). So a subclass that adds a
        keyword to its ``__init__`` has it as its own setting without restating ``OWN_SETTINGS``."""
        owner = next(c for c in cls.__mro__ if "OWN_SETTINGS" in vars(c) or "__init__" in vars(c))
        if vars(owner).get("OWN_SETTINGS") is not None:
            return tuple(owner.OWN_SETTINGS)
        params = inspect.signature(cls.__init__).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return None
        return tuple(k for k, p in params.items() if k != "self" and p.kind is not p.VAR_POSITIONAL
                     and k not in cls.config_settings and k not in FROM_PARTS)

    @classmethod
    def settings_of(cls, cfg) -> dict:
        """{keyword: value} of its ``config_settings`` read from the configuration ``cfg``."""
        out = {}
        for keyword, names in cls.config_settings.items():
            names = (names,) if isinstance(names, str) else tuple(names)
            values = [getattr(cfg, n) for n in names]
            out[keyword] = next((v for v in values if v is not None), values[-1])
        return out

    @classmethod
    def build(cls, *, coupling: Coupling | None = None, predictor=None, total_steps: int | None = None,
              **settings) -> "Loss":
        """An instance from its section's settings (keywords of its ``__init__``) and the parts of other sections it
        takes (``takes``; those given as None are left at the constructor's defaults)."""
        parts = {"coupling": coupling, "predictor": predictor, "total_steps": total_steps}
        return cls(**{k: parts[k] for k in cls.takes() if parts[k] is not None}, **settings)

    @classmethod
    def from_config(cls, cfg, coupling: Coupling | None = None, predictor=None) -> "Loss":
        """The loss of configuration ``cfg`` (a ``gclib.config.Config`` or anything with its fields), built from its
        declared settings (``loss_settings``) around ``coupling`` (default: the config's) and ``predictor``
        (default: ``cfg.predictor``), with the optimiser section's ``total_steps``."""
        settings = {k: v for k, v in loss_settings(cfg, cls).items() if k != "name"}
        return cls.build(**settings, coupling=_coupling_of(cfg, coupling), predictor=_predictor_of(cfg, predictor),
                         total_steps=getattr(cfg, "total_steps", None))

    @classmethod
    def builds_itself(cls) -> bool:
        """Whether it overrides ``from_config`` (a loss written before the sections): ``make_loss`` then calls it,
        and it reads no ``loss_options``."""
        return cls.from_config.__func__ is not Loss.from_config.__func__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items() if k[0] != '_')})"


class _PairLoss(Loss):
    """What consistency objectives share: a coupling, a predictor for it, a distance and (for CD) a velocity."""

    def __init__(self, coupling: Coupling | str = "ic", *, predictor="ema", distance="pseudo_huber",
                 velocity: Callable | None = None):
        self.coupling = coupling if isinstance(coupling, Coupling) else make_coupling(coupling)
        if isinstance(distance, str):
            get_distance(distance)
        self.predictor, self.distance, self.velocity = predictor, distance, velocity

    def _pair_loss(self, model, x, z, sigma_lo, sigma_hi, weight, *, ema, mask_gen, ot_perm, level_zero: bool):
        """Couple (x, z), build the two points of each row's pair and return the weighted consistency loss and the
        coupling's GC mask. ``level_zero``: rows with sigma_lo = 0 take the endpoint itself as the target."""
        pred_fn = resolve_predictor(self.predictor, model, ema) if self.coupling.needs_predictor else None
        c = couple(self.coupling, x, z, sigma=sigma_lo, predictor=pred_fn, generator=mask_gen, ot_perm=ot_perm)
        if self.velocity is None:
            x_lo, x_hi = ct_points(c.x, c.z, sigma_lo, sigma_hi)
        else:
            x_lo, x_hi = cd_points(c.x, c.z, sigma_lo, sigma_hi, self.velocity)
        target_model = model
        if level_zero and bool((sigma_lo <= 0).any()):
            target_model = data_at_level_zero(model, float(getattr(_core(model), "sigma_min", 1.0)))
        return consistency_loss(target_model, x_lo, x_hi, sigma_lo, sigma_hi, weight, self.distance), c.gc_mask


class ConsistencyLoss(_PairLoss):
    """Consistency training (CT, or CD with a ``velocity``) on a grid of noise levels with the iCT curriculum.

    ``sigmas``: a fixed ascending grid (N,) (``update_schedule`` then changes nothing), or None to follow the
    curriculum N(k) = ``num_points(k, total_steps, s0, s1)`` set by ``update_schedule`` (Karras grid of sigma_min,
    sigma_max, rho). A call draws interval indices
    (lognormal p_mean, p_std; or takes ``indices``), noise z (or takes ``z``) and an OT pairing solved ahead
    (``ot_perm``), and weights interval i by 1 / (sigma_{i+1} - sigma_i).
    """

    def __init__(self, coupling: Coupling | str = "ic", *, sigmas: torch.Tensor | None = None, predictor="ema",
                 distance="pseudo_huber", velocity: Callable | None = None, p_mean: float = -1.1, p_std: float = 2.0,
                 total_steps: int = 1, s0: int = 10, s1: int = 1280, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, rho: float = 7.0):
        super().__init__(coupling, predictor=predictor, distance=distance, velocity=velocity)
        self.p_mean, self.p_std = p_mean, p_std
        self.total_steps, self.s0, self.s1 = total_steps, s0, s1
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self._grids: dict = {}
        self._fixed = sigmas is not None
        self.sigmas = sigmas
        self._n = len(sigmas) if self._fixed else 0
        if not self._fixed:
            self.update_schedule(0)

    config_settings = {"distance": "distance", "p_mean": "p_mean", "p_std": "p_std", "s0": "s0", "s1": "s1",
                       "sigma_min": "sigma_min", "sigma_max": "sigma_max", "rho": "rho"}
    OWN_SETTINGS = ()   # sigmas and velocity are given in code (a fixed grid, consistency distillation)

    def update_schedule(self, step: int) -> None:
        """The iCT curriculum: the grid of N(step) points (cached per N); nothing for a fixed grid."""
        if self._fixed:
            return
        n = num_points(step, self.total_steps, self.s0, self.s1)
        if n not in self._grids:
            self._grids[n] = karras_sigmas(max(n, 2), self.sigma_min, self.sigma_max, self.rho)
        self._n, self.sigmas = n, self._grids[n]

    @property
    def num_points(self) -> int:
        return self._n

    def __call__(self, model: nn.Module, x: torch.Tensor, *, generator=None, ema: EMA | None = None,
                 z: torch.Tensor | None = None, indices: torch.Tensor | None = None,
                 ot_perm: torch.Tensor | None = None):
        sigmas, b = self.sigmas, x.shape[0]
        noise_gen, interval_gen, mask_gen = split(generator)
        if indices is None:
            indices = sample_intervals(sigmas, b, interval_gen, self.p_mean, self.p_std)
        if z is None:
            z = draw_noise(x.shape, noise_gen, x.device, x.dtype)
        indices = indices.to(x.device)
        s = sigmas.to(device=x.device, dtype=torch.float64)
        sigma_lo, sigma_hi = s[indices].to(x.dtype), s[indices + 1].to(x.dtype)
        weight = loss_weights(s)[indices].to(x.dtype)
        loss, mask = self._pair_loss(model, x, z, sigma_lo, sigma_hi, weight, ema=ema, mask_gen=mask_gen,
                                     ot_perm=ot_perm, level_zero=False)
        return loss, StepResult(float("nan"), indices, sigma_lo, sigma_hi, mask, len(sigmas))


class ECTLoss(_PairLoss):
    """Easy consistency tuning (ECT): continuous-time pairs (r, t) from ``schedules.ect_pairs`` at the step set by
    ``update_schedule`` (its stage a = ``ect_stage(step, total_steps, stages)``), weight 1 / (t - r); rows with
    r = 0 take the endpoint itself as the target. A call may take the pairs (``pairs=(r, t)``, (B,) each) instead of
    drawing them. ``r_clip``: "zero" (ECT's) or "sigma_min" (r clipped there, gclib's earlier choice)."""

    def __init__(self, coupling: Coupling | str = "ic", *, predictor="ema", distance="l2_norm",
                 velocity: Callable | None = None, total_steps: int = 1, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, p_mean: float = -1.1, p_std: float = 2.0, q: float = 2.0, stages: int = 8,
                 k: float = 8.0, b: float = 1.0, stage_offset: int = 1, r_clip: str = "zero"):
        super().__init__(coupling, predictor=predictor, distance=distance, velocity=velocity)
        self.total_steps, self.sigma_min, self.sigma_max = total_steps, sigma_min, sigma_max
        self.p_mean, self.p_std, self.q, self.stages, self.k, self.b = p_mean, p_std, q, stages, k, b
        self.stage_offset = stage_offset
        self.r_floor = 0.0 if check_choice("r_clip", r_clip, ("zero", "sigma_min")) == "zero" else sigma_min
        self.step = 0

    # distance: ect_distance, or `distance` where it is null
    config_settings = {"distance": ("ect_distance", "distance"), "sigma_min": "sigma_min", "sigma_max": "sigma_max",
                       "p_mean": "p_mean", "p_std": "p_std", "q": "ect_q", "stages": "ect_stages", "k": "ect_k",
                       "b": "ect_b", "stage_offset": "ect_stage_offset", "r_clip": "ect_r_clip"}
    OWN_SETTINGS = ()   # velocity is given in code

    def update_schedule(self, step: int) -> None:
        """ECT's stage schedule: the pairs of later calls are those of 0-based step ``step``."""
        self.step = int(step)

    def draw_pairs(self, batch: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, t) of the current step, (batch,) float64 each."""
        return ect_pairs(batch, self.step, self.total_steps, generator, self.sigma_min, self.sigma_max, self.p_mean,
                         self.p_std, self.q, self.stages, self.k, self.b, self.stage_offset, self.r_floor)

    def __call__(self, model: nn.Module, x: torch.Tensor, *, generator=None, ema: EMA | None = None,
                 z: torch.Tensor | None = None, pairs: tuple | None = None, ot_perm: torch.Tensor | None = None):
        b = x.shape[0]
        noise_gen, interval_gen, mask_gen = split(generator)
        if pairs is None:
            pairs = self.draw_pairs(b, interval_gen)
        if z is None:
            z = draw_noise(x.shape, noise_gen, x.device, x.dtype)
        lo, hi = (torch.as_tensor(v, dtype=torch.float64, device=x.device) for v in pairs)
        if lo.shape != (b,) or hi.shape != (b,) or not bool((hi > lo).all() & (lo >= 0).all()):
            raise ValueError(f"sigma_pairs must be two ({b},) tensors with hi > lo >= 0")
        sigma_lo, sigma_hi, weight = lo.to(x.dtype), hi.to(x.dtype), (1.0 / (hi - lo)).to(x.dtype)
        indices = torch.full((b,), -1, dtype=torch.long, device=x.device)
        loss, mask = self._pair_loss(model, x, z, sigma_lo, sigma_hi, weight, ema=ema, mask_gen=mask_gen,
                                     ot_perm=ot_perm, level_zero=True)
        return loss, StepResult(float("nan"), indices, sigma_lo, sigma_hi, mask, 0)


class DenoisingLoss(Loss):
    """Denoising (diffusion) pre-training of the same network: mean over the batch of
    lambda(sigma) mean_d (f(x + sigma z, sigma) - x)^2, sigma ~ LogNormal(p_mean, p_std) clipped to the model's
    [sigma_min, sigma_max], lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (EDM). The consistency
    parameterisation is kept, so the trained denoiser is a valid starting point for consistency tuning (ECT).
    The result has sigma_lo = sigma_hi = sigma. No coupling, no schedule; ``ema`` and ``ot_perm`` are unused."""

    def __init__(self, *, sigma_data: float = 0.5, p_mean: float = -1.1, p_std: float = 2.0):
        self.sigma_data, self.p_mean, self.p_std = sigma_data, p_mean, p_std

    config_settings = {"sigma_data": "sigma_data", "p_mean": "p_mean", "p_std": "p_std"}

    def __call__(self, model: nn.Module, x: torch.Tensor, *, generator=None, ema: EMA | None = None,
                 z: torch.Tensor | None = None, ot_perm: torch.Tensor | None = None):
        noise_gen, level_gen, _ = split(generator)
        b = x.shape[0]
        core = _core(model)
        sigma64 = denoising_sigmas(b, level_gen, core.sigma_min, core.sigma_max, self.p_mean, self.p_std)
        sigma = sigma64.to(device=x.device, dtype=x.dtype)
        if z is None:
            z = draw_noise(x.shape, noise_gen, x.device, x.dtype)
        err = (model(x + pad_dims(sigma, x) * z, sigma) - x).pow(2).reshape(b, -1).mean(1)
        loss = (denoising_weights(sigma64, self.sigma_data).to(device=x.device, dtype=x.dtype) * err).mean()
        none = torch.zeros(b, dtype=torch.bool, device=x.device)
        return loss, StepResult(float("nan"), torch.full((b,), -1, dtype=torch.long), sigma, sigma, none, 0)


def _coupling_of(cfg, coupling):
    return coupling_of(cfg) if coupling is None else coupling


def _predictor_of(cfg, predictor):
    return cfg.predictor if predictor is None else predictor


# What a loss may take from the parts of other sections (``Loss.takes``): the coupling object (the coupling section's
# part), the resolved predictor (the coupling section's ``predictor``: "ema", the online network or a loaded frozen
# model) and the optimiser section's ``total_steps`` (the length of its schedule).
FROM_PARTS = ("coupling", "predictor", "total_steps")
LOSSES: dict[str, type[Loss]] = {}


def register_loss(name: str, cls: type[Loss], *, replace: bool = False) -> type[Loss]:
    """Register the ``Loss`` subclass ``cls`` under ``name`` (``loss_name``; ``loss: {name: ...}`` in a config): built
    from its declared settings (``Loss.config_settings``, its own settings from the loss section) or, for a class
    that overrides it, by its ``from_config``."""
    if not (isinstance(cls, type) and issubclass(cls, Loss)):
        raise TypeError(f"register_loss takes a subclass of gclib.objectives.Loss, not {cls!r}")
    if name in LOSSES and LOSSES[name] is not cls and not replace:
        raise ValueError(f"loss {name!r} is already registered ({LOSSES[name].__name__}); pass replace=True")
    LOSSES[name] = cls
    return cls


register_loss("ict", ConsistencyLoss)
register_loss("ect", ECTLoss)
register_loss("denoising", DenoisingLoss)


def loss_name(cfg) -> str:
    """The registered loss a configuration trains: its ``objective`` unless that is "consistency", then its
    ``schedule`` ("ict" or "ect")."""
    return cfg.schedule if cfg.objective == "consistency" else cfg.objective


def _registered(name: str) -> type[Loss]:
    if name not in LOSSES:
        raise ValueError(f"no loss is registered for {name!r}; registered: {sorted(LOSSES)}")
    return LOSSES[name]


def loss_settings(cfg, cls: type[Loss] | None = None) -> dict:
    """The settings a configuration's loss is built from (the loss section, EDM-style; ``gclib.config.part(cfg,
    "loss")`` gives the same): ``name`` (``loss_name``), the registered loss's ``config_settings`` read from the
    config and its own settings, the config's ``loss_options``. ``cls``: the loss class (default: the registered
    one)."""
    name = loss_name(cfg)
    cls = _registered(name) if cls is None else cls
    return {"name": name, **cls.settings_of(cfg), **dict(getattr(cfg, "loss_options", None) or {})}


def build_loss(name: str, *, coupling: Coupling | None = None, predictor=None, total_steps: int | None = None,
               **settings) -> Loss:
    """The loss registered as ``name`` built from its section's settings and the parts of other sections it takes
    (``Loss.build``), e.g. ``build_loss(**part(cfg, "loss"), coupling=..., predictor=..., total_steps=...)``."""
    return _registered(name).build(coupling=coupling, predictor=predictor, total_steps=total_steps, **settings)


def make_loss(cfg, coupling: Coupling | None = None, *, predictor=None) -> Loss:
    """The loss object of configuration ``cfg`` (a ``gclib.config.Config`` or anything with its fields): the
    registered ``loss_name(cfg)`` built from its section (``loss_settings``) around ``coupling`` (default: the
    registered ``cfg.flow`` built from its section, ``gclib.couplings.coupling_of``) and ``predictor`` (default:
    ``cfg.predictor``; the training loop passes the resolved one: "ema", the online network or a loaded frozen
    model), with the optimiser section's ``total_steps``. A loss that overrides ``from_config`` is built by it."""
    cls = _registered(loss_name(cfg))
    if cls.builds_itself():
        return cls.from_config(cfg, coupling, predictor)
    return build_loss(**loss_settings(cfg, cls), coupling=_coupling_of(cfg, coupling),
                      predictor=_predictor_of(cfg, predictor), total_steps=getattr(cfg, "total_steps", None))


def prefetches_ot(loss: Loss) -> bool:
    """Whether the loss's coupling solves its pairing ahead (``Coupling.solves_ahead``: exact minibatch OT among
    the built-in ones), so the training loop may solve step k+1's pairing while step k runs (``gclib.prefetch``)."""
    return bool(getattr(loss.coupling, "solves_ahead", False))
