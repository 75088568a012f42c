"""One consistency-training step for any flow (docs/method.md sections 2-4).

The objectives are loss objects (``gclib.objectives``: ``ConsistencyLoss``, ``ECTLoss``, ``DenoisingLoss``, built
from a configuration by ``make_loss``); ``train_step(model, optimizer, x, loss, ...)`` adds backward, optimiser and
EMA to one call of a loss. ``step_loss`` and ``denoising_loss`` are the keyword forms of one call (kept for scripts,
tests and benchmarks): they build the loss object from their keywords and call it.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .couplings import Coupling, couple, make_coupling  # noqa: F401  (couple: gclib.step's public face)
from .ema import EMA
from .objectives import (ConsistencyLoss, DenoisingLoss, ECTLoss, Loss, StepResult, data_at_level_zero,
                         resolve_predictor)
from .rng import Streams

__all__ = ["NonFiniteLossError", "StepResult", "step_loss", "denoising_loss", "train_step", "resolve_predictor",
           "data_at_level_zero"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


def step_loss(model: nn.Module, x: torch.Tensor, sigmas: torch.Tensor, *, flow: str | Coupling = "ic", mu: float = 0.5,
              predictor="ema", ema: EMA | None = None, distance="pseudo_huber", generator: Streams | torch.Generator | None = None,
              velocity: Callable | None = None, ot_solver: str = "auto", predict_all: bool = False,
              p_mean: float = -1.1, p_std: float = 2.0, z: torch.Tensor | None = None,
              indices: torch.Tensor | None = None, sigma_pairs: tuple | None = None,
              ot_perm: torch.Tensor | None = None):
    """Loss of one consistency step on data x (B, ...) over the grid ``sigmas`` (ascending, (N,)): the keyword form
    of ``ConsistencyLoss(coupling, sigmas=sigmas, ...)(model, x, ...)`` (or, with ``sigma_pairs``, of
    ``ECTLoss(coupling, ...)(model, x, pairs=sigma_pairs, ...)``).

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
    if sigma_pairs is None:
        loss = ConsistencyLoss(coupling, sigmas=sigmas, predictor=predictor, distance=distance, velocity=velocity,
                               p_mean=p_mean, p_std=p_std)
        return loss(model, x, generator=generator, ema=ema, z=z, indices=indices, ot_perm=ot_perm)
    loss = ECTLoss(coupling, predictor=predictor, distance=distance, velocity=velocity)
    value, result = loss(model, x, generator=generator, ema=ema, z=z, pairs=sigma_pairs, ot_perm=ot_perm)
    result.num_points = len(sigmas)
    return value, result


def denoising_loss(model: nn.Module, x: torch.Tensor, *, generator=None, sigma_data: float = 0.5,
                   p_mean: float = -1.1, p_std: float = 2.0, **_ignored):
    """The keyword form of ``DenoisingLoss(sigma_data=..., p_mean=..., p_std=...)(model, x, generator=...)``
    (other keywords ignored): EDM-weighted denoising with the consistency parameterisation kept.
    Returns (loss tensor, StepResult) with sigma_lo = sigma_hi = sigma."""
    return DenoisingLoss(sigma_data=sigma_data, p_mean=p_mean, p_std=p_std)(model, x, generator=generator)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, loss: Loss | torch.Tensor, *,
               step: int = 0, ema: EMA | None = None, objective: str = "consistency", **kw) -> StepResult:
    """One full step: ``loss(model, x, ema=ema, **kw)`` (a ``gclib.objectives.Loss``; ``kw`` its call's keywords:
    generator, z, ot_perm, ...), backward, optimiser step, EMA update.

    The keyword form of before still works: ``loss`` a sigma grid (N,) and ``kw`` ``step_loss``'s keywords
    (``objective="denoising"`` trains ``denoising_loss`` instead).
    Raises NonFiniteLossError naming the step, before the weights are touched, if the loss is NaN/inf.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    if isinstance(loss, Loss):
        value, result = loss(model, x, ema=ema, **kw)
    elif objective == "denoising":
        value, result = denoising_loss(model, x, **kw)
    else:
        value, result = step_loss(model, x, loss, ema=ema, **kw)
    if not torch.isfinite(value):
        raise NonFiniteLossError(f"loss is {value.item()} at step {step}; the weights were not updated")
    value.backward()
    optimizer.step()
    if ema is not None:
        ema.update(model, step + 1)
    result.loss = float(value.detach())
    return result
