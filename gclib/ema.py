"""Exponential moving average of a model's weights with the iCT warm-up decay (docs/method.md section 2)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .schedules import ema_decay


@torch.no_grad()
def blend(ema_params, params, ema_buffers, buffers, step: int, every: int, max_decay: float = 0.9999,
          power: float = 2.0 / 3.0) -> float | None:
    """The EMA step on lists of tensors (a model's, or a stack's (K, ...) ones: ``gclib.stack``): at steps divisible
    by ``every``, ema <- lerp(ema, param, 1 - ema_decay(step)) and buffers copied; returns the decay (None if
    skipped)."""
    if step % every:
        return None
    d = ema_decay(step, max_decay, power)
    # one call for every tensor (on CUDA a few kernels instead of one per tensor; the same arithmetic as lerp_)
    torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - d)
    for e, b in zip(ema_buffers, buffers):
        e.copy_(b)
    return d


class EMA:
    """Shadow copy of ``model`` updated every ``every`` steps with decay ``ema_decay(step)``.

    ``ema.model`` is in eval mode with gradients off: use it for evaluation and as the GC predictor.
    """

    def __init__(self, model: nn.Module, every: int = 5, max_decay: float = 0.9999, power: float = 2.0 / 3.0):
        if every < 1:
            raise ValueError(f"ema every={every} must be >= 1")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.every, self.max_decay, self.power = every, max_decay, power

    def update(self, model: nn.Module, step: int) -> float | None:
        """Blend at steps divisible by ``every``; returns the decay used (None when skipped)."""
        return blend(list(self.model.parameters()), list(model.parameters()), list(self.model.buffers()),
                     list(model.buffers()), step, self.every, self.max_decay, self.power)

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        self.model.load_state_dict(state)
