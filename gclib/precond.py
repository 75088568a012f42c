"""Consistency parameterisation around any network (docs/method.md section 1).

f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)), with
c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2), c_out = sd (sigma - sigma_min) / sqrt(sd^2 + sigma^2),
c_in = 1 / sqrt(sd^2 + sigma^2), c_noise = log(sigma) / 4. Hence f(x, sigma_min) == x exactly.

``train_boundary`` chooses c_skip and c_out while the module is in training mode (``model.train()``):
"shifted" (gclib's form, above, in both modes) or "edm" (EDM's c_skip = sd^2 / (sigma^2 + sd^2), c_out =
sd sigma / sqrt(sd^2 + sigma^2), with f(x, 0) = x, as locuslab/ect's ECMPrecond trains; the shifted form again in
eval mode, where sampling, evaluation and the GC predictor run). docs/method.md, Table 2.
"""
from __future__ import annotations

import torch
from torch import nn

from .checks import check_choice, check_sigma_range
from .schedules import SIGMA_DATA, SIGMA_MAX, SIGMA_MIN


TRAIN_BOUNDARIES = ("shifted", "edm")   # c_skip / c_out in training mode: gclib's shifted form, or EDM's (ECT)


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

    x: (B, ...) float; sigma: float or (B,) -> (B, ...) same dtype as x. ``train_boundary``: c_skip and c_out in
    training mode, "shifted" (default; the same form in both modes) or "edm" (see the module docstring).
    """

    def __init__(self, net: nn.Module, sigma_min: float = SIGMA_MIN, sigma_data: float = SIGMA_DATA,
                 sigma_max: float = SIGMA_MAX, train_boundary: str = "shifted"):
        super().__init__()
        check_sigma_range(sigma_min, sigma_max)
        if sigma_data <= 0:
            raise ValueError(f"sigma_data={sigma_data!r} must be > 0")
        check_choice("train_boundary", train_boundary, TRAIN_BOUNDARIES)
        self.net = net
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.sigma_data = float(sigma_data)
        self.train_boundary = train_boundary

    def coefficients(self, sigma: torch.Tensor, shifted: bool | None = None):
        """(c_skip, c_out, c_in, c_noise), each of sigma's shape. ``shifted``: the sigma_min-shifted c_skip / c_out
        (True) or EDM's (False); None: as the module's mode asks (EDM's only in training mode with
        train_boundary "edm")."""
        if shifted is None:
            shifted = not (self.training and self.train_boundary == "edm")
        sd, smin = self.sigma_data, (self.sigma_min if shifted else 0.0)
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
