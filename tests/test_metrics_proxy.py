"""gclib.metrics.proxy: exact IC proxy against quadrature; fitted proxy against the exact one."""
import numpy as np
import pytest
import torch

from gclib.metrics import coupling_pairs_fn, proxy_exact_ic, proxy_fitted


pytestmark = pytest.mark.usefixtures("one_thread")


def two_point_proxy(a, t):
    """Data {-a, +a} in 1-D: D*(y) = a tanh(a y / t^2), R~_t = E(D* - x)^2 / t^2 (by symmetry x = +a)."""
    z, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / w.sum()
    return float((w * (a - a * np.tanh(a * (a + t * z) / t ** 2)) ** 2).sum() / t ** 2)


def test_proxy_exact_ic_matches_quadrature():
    a, ts = 0.6, [0.2, 0.5, 1.0, 2.0]
    data = torch.tensor([[-a], [a]])
    df = proxy_exact_ic(data, ts, n=20000, seed=1)
    assert list(df.columns) == ["t", "proxy", "stderr"]
    for t, p, se in zip(df.t, df.proxy, df.stderr):
        assert abs(p - two_point_proxy(a, t)) < 4 * se + 1e-12
    # one point: the coupling is deterministic given x_t, R~ = 0
    assert np.allclose(proxy_exact_ic(torch.zeros(1, 2), ts, n=100).proxy, 0.0, atol=1e-20)


@pytest.fixture(scope="module")
def toy():
    data = torch.randn(5, 2, generator=torch.Generator().manual_seed(1)) * 0.7
    return data, [0.3, 1.0, 3.0]


def test_proxy_fitted_ic_approaches_exact(toy):
    data, ts = toy
    exact = proxy_exact_ic(data, ts, n=8192, seed=2)
    fit = proxy_fitted(coupling_pairs_fn("ic", data), ts, steps=1200, batch_size=256, n_eval=8192,
                       level_dependent=True, seed=0)
    for (_, e), (_, f) in zip(exact.iterrows(), fit.iterrows()):
        se = np.hypot(e.stderr, f.stderr)
        assert f.proxy > e.proxy - 4 * se  # the Bayes denoiser has the least MSE
        assert abs(f.proxy - e.proxy) < 0.06 * e.proxy + 4 * se
    assert np.allclose(fit.proxy, fit.mse / fit.t ** 2)


def test_proxy_fitted_orders_ot_below_ic(toy):
    """Fig. 2's ordering at large t: the OT process has a smaller proxy than IC (cheap fit, 400 steps)."""
    data, ts = toy
    exact = proxy_exact_ic(data, ts, n=8192, seed=2)
    ot = proxy_fitted(coupling_pairs_fn("ot", data), ts, steps=400, batch_size=128, n_eval=2048,
                      level_dependent=True, seed=0)
    assert (ot.proxy.to_numpy()[1:] < 0.5 * exact.proxy.to_numpy()[1:]).all()
