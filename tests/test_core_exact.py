"""The ideal denoiser, velocity and flow map of a finite point set."""
import math

import pytest
import torch

from gclib.exact import flow_map, ideal_denoiser, velocity


def _tweedie(x, data, sigma):
    """D*(x) = x + sigma^2 grad log p_sigma(x), p_sigma the Gaussian mixture (independent check via autograd)."""
    x = x.clone().double().requires_grad_(True)
    d2 = ((x[:, None, :] - data[None].double()) ** 2).sum(-1)
    logp = torch.logsumexp(-d2 / (2 * sigma ** 2), dim=1).sum()
    (g,) = torch.autograd.grad(logp, x)
    return (x + sigma ** 2 * g).detach()


@pytest.mark.parametrize("sigma", [0.05, 0.7, 20.0])
def test_denoiser_matches_tweedie(sigma):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(50, 3, generator=g, dtype=torch.float64)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64) * (1 + sigma)
    assert torch.allclose(ideal_denoiser(x, data, sigma), _tweedie(x, data, sigma), atol=1e-9)


def test_denoiser_monte_carlo_binning_1d():
    """E[x0 | x_t near q] estimated from samples of the forward process."""
    g = torch.Generator().manual_seed(1)
    data = torch.tensor([[-1.0], [0.3], [2.0]], dtype=torch.float64)
    sigma, n = 0.8, 4_000_000
    x0 = data[torch.randint(0, 3, (n,), generator=g)]
    xt = x0 + sigma * torch.randn(n, 1, generator=g, dtype=torch.float64)
    for q in (-0.5, 0.4, 1.5):
        sel = (xt[:, 0] - q).abs() < 0.01
        mc = x0[sel, 0].mean().item()
        se = x0[sel, 0].std().item() / math.sqrt(sel.sum().item())
        exact = ideal_denoiser(torch.tensor([[q]], dtype=torch.float64), data, sigma).item()
        assert abs(mc - exact) < 4 * se + 5e-3, (q, mc, exact, se)


def test_denoiser_chunking_is_exact_and_stable():
    g = torch.Generator().manual_seed(2)
    data = torch.randn(10_000, 4, generator=g)
    x = torch.randn(1000, 4, generator=g)
    full = ideal_denoiser(x, data, 0.3, chunk_elems=2 ** 40)
    chunked = ideal_denoiser(x, data, 0.3, chunk_elems=50_000)
    assert torch.allclose(full, chunked, atol=1e-6)
    tiny = ideal_denoiser(x[:5] * 100, data, 1e-3)  # huge logits: log-sum-exp keeps it finite
    assert torch.isfinite(tiny).all()


def test_per_row_sigma_and_shapes():
    data = torch.randn(7, 1, 2, 2)
    x = torch.randn(5, 1, 2, 2)
    s = torch.tensor([0.1, 0.5, 1.0, 2.0, 50.0])
    d = ideal_denoiser(x, data, s)
    assert d.shape == x.shape
    for k in range(5):
        assert torch.allclose(d[k:k + 1], ideal_denoiser(x[k:k + 1], data, s[k].item()), atol=1e-6)
    with pytest.raises(ValueError, match="sample shape"):
        ideal_denoiser(torch.randn(5, 4), data, 1.0)


def test_velocity_of_single_point_is_z():
    a = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    z = torch.randn(10, 2, dtype=torch.float64)
    for t in (0.01, 1.0, 80.0):
        assert torch.allclose(velocity(a + t * z, a, t), z, atol=1e-10)


def test_flow_map_single_dirac_closed_form():
    a = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    z = torch.randn(100, 2, dtype=torch.float64)
    out = flow_map(a + 80.0 * z, a, 80.0, n_steps=16)
    # the path is x_t = a + t z exactly, so x_{sigma_min} = a + sigma_min z
    assert torch.allclose(out, a + 0.002 * z, atol=1e-9)


def test_flow_map_splits_two_diracs_along_bisector():
    data = torch.tensor([[0.0, 0.5], [0.0, -0.5]], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(500, 2, generator=g, dtype=torch.float64)
    x_T = 80.0 * z
    out = flow_map(x_T, data, 80.0, n_steps=128)
    side = torch.where(x_T[:, 1:] > 0, data[0], data[1])
    assert torch.allclose(out, side, atol=0.01)
    assert (torch.sign(out[:, 1]) == torch.sign(x_T[:, 1])).all()


def test_flow_map_at_sigma_min_is_identity():
    data = torch.randn(4, 2)
    x = torch.randn(3, 2)
    assert torch.allclose(flow_map(x, data, 0.002, n_steps=4), x)
