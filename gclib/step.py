"""One consistency-training step for any flow (docs/method.md sections 2-4).

``step_loss`` draws noise and intervals, couples (a registered ``gclib.couplings.Coupling``: ic | ot | gc | ...),
builds the pair of points (CT, or CD with a velocity) and returns the loss with a ``StepResult``; ``train_step`` adds
backward, optimiser and EMA.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .checks import check_choice
from .couplings import Coupling, couple, make_coupling
from .ema import EMA
from .losses import cd_points, consistency_loss, ct_points
from .precond import pad_dims
from .rng import Streams, split
from .schedules import loss_weights, sample_intervals


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


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


def _draw(shape, generator, device, dtype):
    gdev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gdev, dtype=dtype).to(device)


def step_loss(model: nn.Module, x: torch.Tensor, sigmas: torch.Tensor, *, flow: str | Coupling = "ic", mu: float = 0.5,
              predictor="ema", ema: EMA | None = None, distance="pseudo_huber", generator: Streams | torch.Generator | None = None,
              velocity: Callable | None = None, ot_solver: str = "auto", predict_all: bool = False,
              p_mean: float = -1.1, p_std: float = 2.0, z: torch.Tensor | None = None,
              indices: torch.Tensor | None = None, sigma_pairs: tuple | None = None,
              ot_perm: torch.Tensor | None = None):
    """Loss of one consistency step on data x (B, ...) over the grid ``sigmas`` (ascending, (N,)).

    ``flow``: a registered coupling's name, built from ``mu``, ``ot_solver`` and ``predict_all``
    (``gclib.couplings.make_coupling``), or a ``Coupling`` instance (those three are then ignored).
    velocity=None trains CT (target x + sigma_i z); a velocity v(x, sigma) gives CD instead.
    ``generator``: a ``gclib.rng.Streams`` (noise, intervals and GC mask each from its own stream, so runs that
    differ only in the flow draw the same z and intervals), or one ``torch.Generator`` for all three.
    ``sigma_pairs=(lo, hi)`` ((B,) each) replaces the grid and its interval draws with given continuous-time pairs
    (ECT: ``schedules.ect_pairs``); the weight is then 1 / (hi - lo), and rows with lo = 0 take the endpoint itself
    as the target (f(x, 0) = x, ``data_at_level_zero``; for GC the predicted endpoint at level 0 is the data).
    Returns (loss tensor, StepResult). ``z`` and ``indices`` may be given to evaluate fixed draws; ``ot_perm`` is
    the exact OT permutation of (x, z) solved ahead of the step (``gclib.prefetch``), used by flow "ot" instead of
    solving it here.
    """
    coupling = flow if isinstance(flow, Coupling) else make_coupling(flow, mu=mu, ot_solver=ot_solver,
                                                                      predict_all=predict_all)
    b = x.shape[0]
    noise_gen, interval_gen, mask_gen = split(generator)
    if sigma_pairs is None and indices is None:
        indices = sample_intervals(sigmas, b, interval_gen, p_mean, p_std)
    if z is None:
        z = _draw(x.shape, noise_gen, x.device, x.dtype)
    if sigma_pairs is None:
        indices = indices.to(x.device)
        s = sigmas.to(device=x.device, dtype=torch.float64)
        sigma_lo, sigma_hi = s[indices].to(x.dtype), s[indices + 1].to(x.dtype)
        weight = loss_weights(s)[indices].to(x.dtype)
    else:
        lo, hi = (torch.as_tensor(v, dtype=torch.float64, device=x.device) for v in sigma_pairs)
        if lo.shape != (b,) or hi.shape != (b,) or not bool((hi > lo).all() & (lo >= 0).all()):
            raise ValueError(f"sigma_pairs must be two ({b},) tensors with hi > lo >= 0")
        sigma_lo, sigma_hi, weight = lo.to(x.dtype), hi.to(x.dtype), (1.0 / (hi - lo)).to(x.dtype)
        indices = torch.full((b,), -1, dtype=torch.long, device=x.device)
    pred_fn = resolve_predictor(predictor, model, ema) if coupling.needs_predictor else None
    c = couple(coupling, x, z, sigma=sigma_lo, predictor=pred_fn, generator=mask_gen, ot_perm=ot_perm)
    if velocity is None:
        x_lo, x_hi = ct_points(c.x, c.z, sigma_lo, sigma_hi)
    else:
        x_lo, x_hi = cd_points(c.x, c.z, sigma_lo, sigma_hi, velocity)
    target_model = model
    if sigma_pairs is not None and bool((sigma_lo <= 0).any()):
        core = getattr(model, "module", model)  # DDP wraps the ConsistencyModel
        target_model = data_at_level_zero(model, float(getattr(core, "sigma_min", 1.0)))
    loss = consistency_loss(target_model, x_lo, x_hi, sigma_lo, sigma_hi, weight, distance)
    return loss, StepResult(float("nan"), indices, sigma_lo, sigma_hi, c.gc_mask, len(sigmas))


def denoising_loss(model: nn.Module, x: torch.Tensor, *, generator=None, sigma_data: float = 0.5,
                   p_mean: float = -1.1, p_std: float = 2.0, **_ignored):
    """Denoising (diffusion) pre-training of the same network: mean over the batch of
    lambda(sigma) mean_d (f(x + sigma z, sigma) - x)^2, sigma ~ LogNormal(p_mean, p_std) clipped to the model's
    [sigma_min, sigma_max], lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (EDM). The consistency
    parameterisation is kept, so the trained denoiser is a valid starting point for consistency tuning (ECT).
    Returns (loss tensor, StepResult) with sigma_lo = sigma_hi = sigma."""
    from .precond import pad_dims
    from .schedules import denoising_sigmas, denoising_weights
    noise_gen, level_gen, _ = split(generator)
    b = x.shape[0]
    core = getattr(model, "module", model)  # DDP wraps the ConsistencyModel
    sigma64 = denoising_sigmas(b, level_gen, core.sigma_min, core.sigma_max, p_mean, p_std)
    sigma = sigma64.to(device=x.device, dtype=x.dtype)
    z = _draw(x.shape, noise_gen, x.device, x.dtype)
    err = (model(x + pad_dims(sigma, x) * z, sigma) - x).pow(2).reshape(b, -1).mean(1)
    loss = (denoising_weights(sigma64, sigma_data).to(device=x.device, dtype=x.dtype) * err).mean()
    none = torch.zeros(b, dtype=torch.bool, device=x.device)
    return loss, StepResult(float("nan"), torch.full((b,), -1, dtype=torch.long), sigma, sigma, none, 0)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, sigmas: torch.Tensor, *,
               step: int = 0, ema: EMA | None = None, objective: str = "consistency", **kw) -> StepResult:
    """One full step: loss (see ``step_loss`` for the keywords; ``objective="denoising"`` trains
    ``denoising_loss`` instead), backward, optimiser step, EMA update.

    Raises NonFiniteLossError naming the step, before the weights are touched, if the loss is NaN/inf.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    if objective == "denoising":
        loss, result = denoising_loss(model, x, **kw)
    else:
        loss, result = step_loss(model, x, sigmas, ema=ema, **kw)
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"loss is {loss.item()} at step {step}; the weights were not updated")
    loss.backward()
    optimizer.step()
    if ema is not None:
        ema.update(model, step + 1)
    result.loss = float(loss.detach())
    return result
