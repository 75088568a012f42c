"""Coupled endpoints and path alignment (Fig. 1) against exact facts."""
import pytest
import torch

from gclib.metrics import proxy_exact_ic
from gclib.coupling_paths import coupled_endpoints, path_alignment

DIRACS = torch.tensor([[0.0, 0.5], [0.0, -0.5]], dtype=torch.float64)


def _draw(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DIRACS[torch.randint(0, 2, (n,), generator=g)], torch.randn(n, 2, generator=g, dtype=torch.float64)


def test_single_point_paths_follow_the_field_exactly():
    a = DIRACS[:1]
    x0, z = a.expand(500, 2), torch.randn(500, 2, dtype=torch.float64)
    df = path_alignment(x0, z, a, [0.1, 1.0, 5.0])
    assert torch.allclose(torch.tensor(df.cos.values), torch.ones(3, dtype=torch.float64), atol=1e-9)
    assert df.dev.abs().max() < 1e-12


def test_gc_exact_generator_sends_each_noise_to_its_side():
    x0, z = _draw(400)
    e = coupled_endpoints("gc", x0, z, DIRACS, t_pred=3.0)
    side = torch.where((x0[:, 1:] + 3.0 * z[:, 1:]) > 0, DIRACS[0], DIRACS[1])
    assert torch.allclose(e, side, atol=0.01)


def test_ot_endpoints_are_a_permutation_of_the_data():
    x0, z = _draw(300)
    e = coupled_endpoints("ot", x0, z, DIRACS, ot_batch=100)
    for a in range(0, 300, 100):
        assert sorted(e[a:a + 100, 1].tolist()) == sorted(x0[a:a + 100, 1].tolist())
    assert ((e - z) ** 2).sum() < ((x0 - z) ** 2).sum()


def test_ic_deviation_is_the_exact_proxy():
    x0, z = _draw(20000, seed=1)
    ts = [0.3, 1.0]
    dev = path_alignment(x0, z, DIRACS, ts)
    ref = proxy_exact_ic(DIRACS, ts, n=20000)
    for k in range(2):
        se = (dev.dev_se[k] ** 2 + ref.stderr[k] ** 2) ** 0.5
        assert abs(dev.dev[k] - ref.proxy[k]) < 5 * se + 1e-3


def test_unknown_flow_raises():
    x0, z = _draw(4)
    with pytest.raises(ValueError, match="flow='xx'"):
        coupled_endpoints("xx", x0, z, DIRACS)
