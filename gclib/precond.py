"""Consistency parameterisation around any network (docs/method.md section 1).

f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)), with
c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2), c_out = sd (sigma - sigma_min) / sqrt(sd^2 + sigma^2),
c_in = 1 / sqrt(sd^2 + sigma^2), c_noise = log(sigma) / 4. Hence f(x, sigma_min) == x exactly.
"""
from __future__ import annotations

import torch
from torch import nn

from .checks import check_sigma_range
from .schedules import SIGMA_DATA, SIGMA_MAX, SIGMA_MIN


def as_batch_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    """Turn a float, 0-d or (B,) sigma into a float tensor of shape (B,) on x's device and dtype."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise ValueError(f"sigma has shape {tuple(s.shape)}; expected a scalar or shape ({x.shape[0]},) for x of shape {tuple(x.shape)}")
    return s


def pad_dims(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a (B,) tensor as (B, 1, ..., 1) to broadcast against x."""
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


class ConsistencyModel(nn.Module):
    """f_theta(x, sigma) around a network ``net(x_in, c_noise) -> F`` of x's shape.

    x: (B, ...) float; sigma: float or (B,) -> (B, ...) same dtype as x.
    """

    def __init__(self, net: nn.Module, sigma_min: float = SIGMA_MIN, sigma_data: float = SIGMA_DATA,
                 sigma_max: float = SIGMA_MAX):
        super().__init__()
        check_sigma_range(sigma_min, sigma_max)
        if sigma_data <= 0:
            raise ValueError(f"sigma_data={sigma_data!r} must be > 0")
        self.net = net
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: torch.Tensor):
        """(c_skip, c_out, c_in, c_noise), each of sigma's shape."""
        sd, smin = self.sigma_data, self.sigma_min
        c_skip = sd ** 2 / ((sigma - smin) ** 2 + sd ** 2)
        c_out = sd * (sigma - smin) / torch.sqrt(sd ** 2 + sigma ** 2)
        c_in = 1.0 / torch.sqrt(sd ** 2 + sigma ** 2)
        c_noise = torch.log(sigma) / 4.0
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = as_batch_sigma(sigma, x)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        F = self.net(pad_dims(c_in, x) * x, c_noise)
        return pad_dims(c_skip, x) * x + pad_dims(c_out, x) * F.to(x.dtype)
