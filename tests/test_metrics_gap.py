"""gclib.metrics.gap: the scaled CT/CD gap of a fixed model converges to its predicted limit (Theorem 1)."""
import numpy as np
import pytest
import torch

from gclib.metrics import ct_cd_gap
from gclib.nets import MLP
from gclib.precond import ConsistencyModel


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    model = ConsistencyModel(MLP(dim=2, hidden=32, depth=2, emb_dim=16), sigma_max=2.0).double()
    data = torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.5
    return model, data


def _check_convergence(res, rel_final):
    tab = res.table
    err = (tab.scaled_gap - res.limit_paired).abs().to_numpy()
    assert err[-1] < rel_final * res.limit_paired
    assert err[0] > 10 * err[-1]  # O(1/N) convergence over N = 10 .. 1280
    assert err[3] > 2 * err[-1] and err[1] > err[3]  # decreasing (up to Monte Carlo wiggles)
    # the plain R estimator agrees within Monte Carlo error
    se = np.hypot(res.limit_stderr, tab.scaled_gap_stderr.iloc[-1])
    assert abs(tab.scaled_gap.iloc[-1] - res.limit) < 4 * se


def test_scaled_gap_l2_inverse_step_weights(model_and_data):
    model, data = model_and_data
    res = ct_cd_gap(model, data, T=1.0, n=1000, distance="l2")
    assert list(res.table.N) == [10, 20, 40, 80, 160, 320, 640, 1280]
    assert res.exponent == 1 and res.C == 1.0 and res.limit > 0.05
    assert np.allclose(res.table.gap, res.table.L_CT - res.table.L_CD, rtol=1e-10)
    _check_convergence(res, 0.01)
    # with lambda = 1/h, N^2 (L_CT - L_CD) grows like N: it does not converge
    assert res.table.N2_gap.iloc[-1] > 50 * res.table.N2_gap.iloc[0]
    assert model.training


def test_scaled_gap_fixed_weight_function(model_and_data):
    model, data = model_and_data
    res = ct_cd_gap(model, data, T=1.0, n=1000, distance="l2", weight=lambda t: 1.0 + t)
    assert res.exponent == 2
    assert np.allclose(res.table.scaled_gap, res.table.N2_gap)
    _check_convergence(res, 0.01)


def test_scaled_gap_pseudo_huber(model_and_data):
    model, data = model_and_data
    c = 0.25
    l2 = ct_cd_gap(model, data, T=1.0, n=1000, distance="l2", Ns=[1280])
    res = ct_cd_gap(model, data, T=1.0, n=1000, distance="pseudo_huber", c=c)
    assert res.C == pytest.approx(1 / (2 * c))
    assert res.limit_paired == pytest.approx(2.0 * l2.limit_paired, rel=1e-9)  # same samples, C = 1/(2c) = 2
    _check_convergence(res, 0.01)


def test_gap_vanishes_for_a_deterministic_coupling(model_and_data):
    """One data point: v_t(x_t) = (x_t - x0)/t = z exactly, so CT and CD targets coincide and R = 0."""
    model, _ = model_and_data
    point = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    res = ct_cd_gap(model, point, T=1.0, n=200, Ns=[10, 160])
    assert np.allclose(res.table.gap, 0.0, atol=1e-9)
    assert res.limit == pytest.approx(0.0, abs=1e-9)


def test_several_distances_from_one_pass_equal_separate_calls(model_and_data):
    """ct_cd_gaps shares the network evaluations between distances: each result is exactly ct_cd_gap's."""
    from gclib.metrics.gap import ct_cd_gaps
    model, data = model_and_data
    both = ct_cd_gaps(model, data, [("l2", None), ("pseudo_huber", 0.25)], T=1.0, n=300, Ns=[10, 160])
    for r, (dist, c) in zip(both, [("l2", None), ("pseudo_huber", 0.25)]):
        one = ct_cd_gap(model, data, T=1.0, n=300, Ns=[10, 160], distance=dist, c=c)
        assert r.table.equals(one.table)
        assert (r.limit, r.limit_paired, r.C) == (one.limit, one.limit_paired, one.C)
        assert np.array_equal(r.per_sample["scaled_gap_N_max"], one.per_sample["scaled_gap_N_max"])


def test_curve_on_fewer_samples_and_a_second_teacher_without_limit(model_and_data):
    """n_curve: the smaller N on the first n_curve draws, the largest N and the limit on all n (the same numbers
    as without n_curve); limit=False: the same losses, the limit left out (NaN)."""
    model, data = model_and_data
    full = ct_cd_gap(model, data, T=1.0, n=400, Ns=[10, 640])
    part = ct_cd_gap(model, data, T=1.0, n=400, Ns=[10, 640], n_curve=100)
    assert list(part.table.n) == [100, 400]
    assert part.table.iloc[-1].equals(full.table.iloc[-1]) and part.limit == full.limit
    assert part.table.gap.iloc[0] != full.table.gap.iloc[0]
    nolim = ct_cd_gap(model, data, T=1.0, n=400, Ns=[10, 640], limit=False)
    assert nolim.table.equals(full.table) and np.isnan(nolim.limit) and np.isnan(nolim.per_sample["plain"]).all()
    with pytest.raises(ValueError, match="n_curve"):
        ct_cd_gap(model, data, n=10, n_curve=11)
