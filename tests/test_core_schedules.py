"""Schedules against the numbers in docs/method.md section 2."""
import math

import pytest
import torch

from gclib import schedules as S

GRID_11 = [0.002, 0.0167, 0.0851, 0.3183, 0.9654, 2.5152, 5.8389, 12.3816, 24.4083, 45.3137, 80.0]
PROBS_11 = [0.0626, 0.1817, 0.2455, 0.2135, 0.1424, 0.0806, 0.0411, 0.0196, 0.0089, 0.0040]


def test_karras_grid_n11_matches_method():
    s = S.karras_sigmas(11)
    assert s.dtype == torch.float64 and s.shape == (11,)
    assert s[0].item() == 0.002 and s[-1].item() == 80.0
    assert torch.allclose(s, torch.tensor(GRID_11, dtype=torch.float64), atol=1e-4, rtol=0)
    assert (s[1:] > s[:-1]).all()


def test_karras_grid_closed_form_any_n():
    n, smin, smax, rho = 37, 0.01, 5.0, 7.0
    s = S.karras_sigmas(n, smin, smax, rho)
    for i in (0, 5, 17, 36):
        want = (smin ** (1 / rho) + i / (n - 1) * (smax ** (1 / rho) - smin ** (1 / rho))) ** rho
        assert math.isclose(s[i].item(), want, rel_tol=1e-12)


def test_interval_probs_n11_match_method():
    p = S.interval_probs(S.karras_sigmas(11))
    assert p.shape == (10,)
    assert math.isclose(p.sum().item(), 1.0, rel_tol=1e-12)
    assert torch.allclose(p, torch.tensor(PROBS_11, dtype=torch.float64), atol=1e-4, rtol=0)


def test_num_points_curriculum_boundaries_k100k():
    K = 100_000
    assert S.num_points(0, K) == 11
    assert S.num_points(12_499, K) == 11
    assert S.num_points(12_500, K) == 21
    assert S.num_points(25_000, K) == 41
    assert S.num_points(87_499, K) == 641
    assert S.num_points(87_500, K) == 1281
    assert S.num_points(99_999, K) == 1281
    assert S.num_points(10, 100, s0=10, s1=100) == 11  # the 2-D toy curriculum
    assert S.num_points(99, 100, s0=10, s1=100) == 101


def test_sample_intervals_follow_probs():
    s = S.karras_sigmas(11)
    g = torch.Generator().manual_seed(0)
    idx = S.sample_intervals(s, 200_000, g)
    assert idx.min() >= 0 and idx.max() <= 9 and idx.dtype == torch.int64
    freq = torch.bincount(idx, minlength=10).double() / idx.numel()
    assert torch.allclose(freq, S.interval_probs(s), atol=3e-3)


def test_loss_weights_are_inverse_gaps():
    s = S.karras_sigmas(11)
    w = S.loss_weights(s)
    assert w.shape == (10,)
    assert torch.allclose(w * (s[1:] - s[:-1]), torch.ones(10, dtype=torch.float64))


def test_ema_decay_warmup_values():
    assert S.ema_decay(0) == 0.0
    for k in (1, 10, 1000, 54_321):
        assert math.isclose(S.ema_decay(k), 1 - (1 + k) ** (-2 / 3), rel_tol=1e-15)
    # docs/method.md: "about 0.99 at 1k steps, 0.998 at 10k, 0.9995 at 100k"
    assert round(S.ema_decay(1000), 2) == 0.99
    assert round(S.ema_decay(10_000), 3) == 0.998
    assert round(S.ema_decay(100_000), 4) == 0.9995
    assert S.ema_decay(10 ** 9) == 0.9999


@pytest.mark.parametrize("kw", [dict(n=1), dict(n=11, sigma_min=1.0, sigma_max=1.0), dict(n=11, sigma_min=5.0, sigma_max=1.0)])
def test_bad_grid_raises_naming_parameter(kw):
    with pytest.raises(ValueError, match="sigma|n="):
        S.karras_sigmas(**kw)
