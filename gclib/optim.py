"""Optimisers for training: Adam and RAdam (torch) and Lion (own code, Chen et al. 2023, "Symbolic Discovery
of Optimization Algorithms"), the paper's optimiser.

Lion, per parameter p with gradient g and momentum m (zero at start):
    c = b1 m + (1 - b1) g;   p <- p - lr (sign(c) + wd p);   m <- b2 m + (1 - b2) g.
"""
from __future__ import annotations

import torch

from .checks import ConfigError, check_choice

OPTIMIZERS = ("adam", "radam", "lion")
DEFAULT_BETAS = {"adam": (0.9, 0.999), "radam": (0.9, 0.999), "lion": (0.9, 0.99)}


class Lion(torch.optim.Optimizer):
    """Lion: sign of an interpolated momentum, decoupled weight decay (see module docstring)."""

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"lr={lr} must be > 0")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas={betas} must be in [0, 1)")
        if weight_decay < 0:
            raise ValueError(f"weight_decay={weight_decay} must be >= 0")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                c = m.mul(b1).add_(g, alpha=1.0 - b1)
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.add_(c.sign_(), alpha=-lr)
                m.mul_(b2).add_(g, alpha=1.0 - b2)
        return loss


# The config fields of the optim section an optimiser is built from (``gclib.config.part(cfg, "optim")``, with
# ``name`` its ``optimizer``); the section's other fields (batch, steps, EMA) are the training loop's.
SETTINGS = ("lr", "betas", "weight_decay", "eps")


def make_optimizer(name: str, params, lr: float, betas=None, weight_decay: float = 0.0, eps: float = 1e-8):
    """'adam' | 'radam' | 'lion' with the given hyper-parameters (betas None: the optimiser's default);
    ``make_optimizer(params=..., **part(cfg, "optim"))`` builds a configuration's from its section."""
    check_choice("optimizer", name, OPTIMIZERS, error=ConfigError)
    betas = tuple(betas) if betas is not None else DEFAULT_BETAS[name]
    if name == "adam":
        params = list(params)
        # on CUDA one fused kernel updates every tensor (a step of a small network is launch-bound there); on the
        # CPU torch's own per-tensor loop, whose results the pinned runs fix bit for bit
        fused = bool(params) and all(isinstance(p, torch.Tensor) and p.is_cuda for p in params)
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                **({"fused": True} if fused else {}))
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    return Lion(params, lr=lr, betas=betas, weight_decay=weight_decay)
