"""One consistency-training step for any flow (docs/method.md sections 2-4).

``step_loss`` draws noise and intervals, couples (ic | ot | gc), builds the pair of points (CT, or CD with a
velocity) and returns the loss with a ``StepResult``; ``train_step`` adds backward, optimiser and EMA.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .checks import check_choice, check_flow, check_mu
from .couplings import couple
from .ema import EMA
from .losses import cd_points, consistency_loss, ct_points
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


def _draw(shape, generator, device, dtype):
    gdev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gdev, dtype=dtype).to(device)


def step_loss(model: nn.Module, x: torch.Tensor, sigmas: torch.Tensor, *, flow: str = "ic", mu: float = 0.5,
              predictor="ema", ema: EMA | None = None, distance="pseudo_huber", generator: Streams | torch.Generator | None = None,
              velocity: Callable | None = None, ot_solver: str = "auto", predict_all: bool = False,
              p_mean: float = -1.1, p_std: float = 2.0, z: torch.Tensor | None = None,
              indices: torch.Tensor | None = None):
    """Loss of one consistency step on data x (B, ...) over the grid ``sigmas`` (ascending, (N,)).

    velocity=None trains CT (target x + sigma_i z); a velocity v(x, sigma) gives CD instead.
    ``generator``: a ``gclib.rng.Streams`` (noise, intervals and GC mask each from its own stream, so runs that
    differ only in the flow draw the same z and intervals), or one ``torch.Generator`` for all three.
    Returns (loss tensor, StepResult). ``z`` and ``indices`` may be given to evaluate fixed draws.
    """
    check_flow(flow)
    if flow == "gc":
        check_mu(mu)
    b = x.shape[0]
    noise_gen, interval_gen, mask_gen = split(generator)
    if indices is None:
        indices = sample_intervals(sigmas, b, interval_gen, p_mean, p_std)
    if z is None:
        z = _draw(x.shape, noise_gen, x.device, x.dtype)
    indices = indices.to(x.device)
    s = sigmas.to(device=x.device, dtype=torch.float64)
    sigma_lo, sigma_hi = s[indices].to(x.dtype), s[indices + 1].to(x.dtype)
    weight = loss_weights(s)[indices].to(x.dtype)
    pred_fn = resolve_predictor(predictor, model, ema) if flow == "gc" else None
    c = couple(flow, x, z, sigma=sigma_lo, mu=mu, predictor=pred_fn, generator=mask_gen,
               ot_solver=ot_solver, predict_all=predict_all)
    if velocity is None:
        x_lo, x_hi = ct_points(c.x, c.z, sigma_lo, sigma_hi)
    else:
        x_lo, x_hi = cd_points(c.x, c.z, sigma_lo, sigma_hi, velocity)
    loss = consistency_loss(model, x_lo, x_hi, sigma_lo, sigma_hi, weight, distance)
    return loss, StepResult(float("nan"), indices, sigma_lo, sigma_hi, c.gc_mask, len(sigmas))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, sigmas: torch.Tensor, *,
               step: int = 0, ema: EMA | None = None, **kw) -> StepResult:
    """One full step: loss (see ``step_loss`` for the keywords), backward, optimiser step, EMA update.

    Raises NonFiniteLossError naming the step, before the weights are touched, if the loss is NaN/inf.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss, result = step_loss(model, x, sigmas, ema=ema, **kw)
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"loss is {loss.item()} at step {step}; the weights were not updated")
    loss.backward()
    optimizer.step()
    if ema is not None:
        ema.update(model, step + 1)
    result.loss = float(loss.detach())
    return result
