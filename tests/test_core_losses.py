"""Distances, the one consistency loss, CD against CT, the shared dropout mask, GC mu=0 equals IC."""
import math

import pytest
import torch
from torch import nn

import gclib
from gclib import ConsistencyModel, nets, schedules
from gclib.exact import velocity
from gclib.losses import cd_points, consistency_loss, ct_points, get_distance, pseudo_huber, pseudo_huber_c, squared_l2


def test_pseudo_huber_closed_form_and_c():
    assert math.isclose(pseudo_huber_c(3 * 32 * 32), 0.0299, abs_tol=5e-5)
    a, b = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    c = 0.00054 * math.sqrt(12)
    r2 = ((a - b) ** 2).sum((1, 2, 3))
    assert torch.allclose(pseudo_huber(a, b), torch.sqrt(r2 + c * c) - c)
    assert torch.allclose(squared_l2(a, b), r2)
    assert torch.equal(pseudo_huber(a, a), torch.zeros(4))
    with pytest.raises(ValueError, match="distance='l1'"):
        get_distance("l1")


def test_ct_points_share_z():
    x, z = torch.randn(5, 2), torch.randn(5, 2)
    lo, hi = torch.full((5,), 0.5), torch.full((5,), 2.0)
    a, b = ct_points(x, z, lo, hi)
    assert torch.allclose(a, x + 0.5 * z) and torch.allclose(b, x + 2.0 * z)


def test_cd_with_exact_velocity_of_single_point_equals_ct():
    """One data point: v_t(x_t) = z exactly, so the CD target point is the CT one and the losses agree."""
    torch.manual_seed(0)
    point = torch.tensor([[0.2, -0.4]], dtype=torch.float64)
    model = ConsistencyModel(nets.MLP(2)).double()
    s = schedules.karras_sigmas(21)
    g = torch.Generator().manual_seed(0)
    x = point.expand(128, 2)
    idx = schedules.sample_intervals(s, 128, g)
    z = torch.randn(128, 2, generator=g, dtype=torch.float64)
    v = lambda xt, t: velocity(xt, point, t)
    l_ct, _ = gclib.step_loss(model, x, s, flow="ic", z=z, indices=idx)
    l_cd, _ = gclib.step_loss(model, x, s, flow="ic", z=z, indices=idx, velocity=v)
    assert torch.allclose(l_ct, l_cd, rtol=1e-9)


def test_cd_point_is_one_euler_step():
    data = torch.randn(6, 2, dtype=torch.float64)
    x, z = data[:3], torch.randn(3, 2, dtype=torch.float64)
    lo, hi = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64), torch.tensor([0.2, 0.9, 3.0], dtype=torch.float64)
    x_lo, x_hi = cd_points(x, z, lo, hi, lambda a, t: velocity(a, data, t))
    assert torch.allclose(x_hi, x + hi[:, None] * z)
    assert torch.allclose(x_lo, x_hi + (lo - hi)[:, None] * velocity(x_hi, data, hi))


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x, c_noise):
        return self.drop(torch.ones_like(x))


def test_target_and_student_share_the_dropout_mask():
    model = ConsistencyModel(DropoutNet()).train()
    x = torch.randn(64, 8)
    s = torch.ones(64)
    # two plain passes draw different masks, so the test can fail...
    assert not torch.equal(model(x, s), model(x, s))
    # ...but the loss's target and student passes see the same one
    loss = consistency_loss(model, x, x, s, s, torch.ones(64), "l2")
    assert loss.item() == 0.0


def test_loss_gradient_flows_only_through_student():
    torch.manual_seed(0)
    model = ConsistencyModel(nets.MLP(2))
    x_lo, x_hi = torch.randn(8, 2), torch.randn(8, 2)
    lo, hi = torch.full((8,), 0.5), torch.full((8,), 1.0)
    loss = consistency_loss(model, x_lo, x_hi, lo, hi, torch.ones(8), "l2")
    loss.backward()
    g_auto = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with torch.no_grad():
        target = model(x_lo, lo)
    ((model(x_hi, hi) - target) ** 2).sum(1).mean().backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(g_auto, model.parameters()))


def test_gc_with_mu0_gives_the_ic_loss():
    torch.manual_seed(0)
    model = ConsistencyModel(nets.MLP(2))
    ema = gclib.EMA(model)
    s = schedules.karras_sigmas(11)
    x = torch.randn(64, 2)
    l_ic, r_ic = gclib.step_loss(model, x, s, flow="ic", generator=torch.Generator().manual_seed(3))
    l_gc, r_gc = gclib.step_loss(model, x, s, flow="gc", mu=0.0, ema=ema, generator=torch.Generator().manual_seed(3))
    assert l_ic.item() == l_gc.item() and not r_gc.gc_mask.any()
    _, r_gc1 = gclib.step_loss(model, x, s, flow="gc", mu=1.0, ema=ema, generator=torch.Generator().manual_seed(3))
    assert r_gc1.gc_mask.all() and r_gc1.gc_fraction == 1.0


def test_step_errors_are_clear():
    model = ConsistencyModel(nets.MLP(2))
    s = schedules.karras_sigmas(11)
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="flow='cd'"):
        gclib.step_loss(model, x, s, flow="cd")
    with pytest.raises(ValueError, match="mu=2"):
        gclib.step_loss(model, x, s, flow="gc", mu=2)
    with pytest.raises(ValueError, match="needs an EMA"):
        gclib.step_loss(model, x, s, flow="gc", mu=0.5)
    with pytest.raises(ValueError, match="predictor='emma'"):
        gclib.step_loss(model, x, s, flow="gc", mu=0.5, predictor="emma")


def test_nan_loss_stops_before_touching_weights():
    model = ConsistencyModel(nets.MLP(2))
    opt = torch.optim.Adam(model.parameters())
    before = [p.clone() for p in model.parameters()]
    x = torch.full((4, 2), float("nan"))
    with pytest.raises(gclib.NonFiniteLossError, match="at step 17"):
        gclib.train_step(model, opt, x, schedules.karras_sigmas(11), step=17)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
