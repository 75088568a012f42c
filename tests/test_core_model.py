"""Preconditioning boundary condition, shapes and dtypes, network presets."""
import math

import pytest
import torch

from gclib import ConsistencyModel, nets
from gclib.sampling import sample


@pytest.fixture(scope="module")
def digits_model():
    torch.manual_seed(0)
    return ConsistencyModel(nets.unet_digits(dropout=0.1))


def test_boundary_condition_is_exact_mlp():
    torch.manual_seed(0)
    net = nets.MLP(2)
    for p in net.parameters():  # make F far from zero so the test can fail
        torch.nn.init.normal_(p, std=1.0)
    m = ConsistencyModel(net)
    x = torch.randn(64, 2)
    assert torch.equal(m(x, 0.002), x)
    assert not torch.allclose(m(x, 1.0), x)


def test_boundary_condition_is_exact_unet(digits_model):
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(digits_model.eval()(x, torch.full((5,), 0.002)), x)


def test_coefficients_closed_form():
    m = ConsistencyModel(nets.MLP(2), sigma_min=0.002, sigma_data=0.5)
    s = torch.tensor([0.002, 1.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = m.coefficients(s)
    for k, sig in enumerate(s.tolist()):
        assert math.isclose(c_skip[k].item(), 0.25 / ((sig - 0.002) ** 2 + 0.25), rel_tol=1e-12)
        assert math.isclose(c_out[k].item(), 0.5 * (sig - 0.002) / math.sqrt(0.25 + sig ** 2), rel_tol=1e-12, abs_tol=0)
        assert math.isclose(c_in[k].item(), 1 / math.sqrt(0.25 + sig ** 2), rel_tol=1e-12)
        assert math.isclose(c_noise[k].item(), math.log(sig) / 4, rel_tol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes_preserved(dtype):
    m = ConsistencyModel(nets.MLP(3)).to(dtype)
    x = torch.randn(7, 3, dtype=dtype)
    out = m(x, torch.rand(7, dtype=dtype) + 0.5)
    assert out.shape == x.shape and out.dtype == dtype


@pytest.mark.parametrize("res,mult", [(8, (1, 2)), (16, (1, 2, 2)), (32, (1, 2, 2)), (64, (1, 1, 2, 2))])
def test_unet_resolutions(res, mult):
    net = nets.UNet(in_channels=3, resolution=res, channels=8, channel_mult=mult, num_blocks=1,
                    attn_resolutions=(res // 2,))
    x = torch.randn(2, 3, res, res)
    assert net(x, torch.zeros(2)).shape == x.shape


def test_presets_sizes():
    n_cifar = nets.count_parameters(nets.unet_cifar10())
    n_digits = nets.count_parameters(nets.unet_digits())
    assert 30e6 < n_cifar < 40e6, n_cifar  # "about 35M" in the paper
    assert n_digits < 1e6, n_digits


def test_unet_rejects_wrong_shape():
    with pytest.raises(ValueError, match="UNet expects"):
        nets.unet_digits()(torch.randn(2, 3, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="resolution"):
        nets.UNet(resolution=128)


def test_sigma_shape_checked():
    m = ConsistencyModel(nets.MLP(2))
    with pytest.raises(ValueError, match="sigma has shape"):
        m(torch.randn(4, 2), torch.ones(3))


def test_bad_sigma_range_raises():
    with pytest.raises(ValueError, match="sigma_min"):
        ConsistencyModel(nets.MLP(2), sigma_min=1.0, sigma_max=0.5)


def test_sampling_one_and_multistep_signature(digits_model):
    m = digits_model.eval()
    z = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    one = sample(m, z)
    assert torch.allclose(one, m(80.0 * z, 80.0))
    two_a = sample(m, z, (80.0, 0.821), generator=torch.Generator().manual_seed(2))
    two_b = sample(m, z, (80.0, 0.821), generator=torch.Generator().manual_seed(2))
    assert two_a.shape == z.shape and torch.equal(two_a, two_b)
    with pytest.raises(ValueError, match="decreasing"):
        sample(m, z, (1.0, 5.0))


def test_ema_follows_the_decay_schedule_every_k_steps():
    from gclib import EMA
    from gclib.schedules import ema_decay
    torch.manual_seed(0)
    model = nets.MLP(2)
    ema = EMA(model, every=5)
    shadow = [p.detach().clone() for p in model.parameters()]
    for step in range(1, 13):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        d = ema.update(model, step)
        if step % 5:
            assert d is None
        else:
            assert d == ema_decay(step)
            shadow = [d * s + (1 - d) * p.detach() for s, p in zip(shadow, model.parameters())]
        for s, e in zip(shadow, ema.model.parameters()):
            assert torch.allclose(s, e, atol=1e-6)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
