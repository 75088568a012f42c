"""gclib.metrics.wasserstein: exact W2 and sliced W2 against closed forms and POT."""
import numpy as np
import ot
import pytest
import scipy.linalg
import torch

from gclib.metrics import sliced_wasserstein, w2_exact


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_w2sq(m1, s1, m2, s2):
    r2 = scipy.linalg.sqrtm(s2)
    cross = scipy.linalg.sqrtm(r2 @ s1 @ r2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * cross))


def test_w2_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(50, 3))
    assert w2_exact(x, x) == pytest.approx(0.0, abs=1e-10)
    assert w2_exact(torch.from_numpy(x), torch.from_numpy(x[::-1].copy())) == pytest.approx(0.0, abs=1e-10)
    assert sliced_wasserstein(x, x[::-1].copy()) == pytest.approx(0.0, abs=1e-10)


def test_w2_and_sliced_in_1d_equal_sorted_matching():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=40), rng.normal(size=40) * 2 + 1
    expect = np.sqrt(np.mean((np.sort(a) - np.sort(b)) ** 2))
    assert w2_exact(a, b) == pytest.approx(expect, rel=1e-9)
    assert sliced_wasserstein(a, b, n_projections=3) == pytest.approx(expect, rel=1e-9)
    # unequal sizes: the 1-D quantile formula must agree with the exact LP
    c = rng.normal(size=25) + 0.5
    assert sliced_wasserstein(a, c, n_projections=2) == pytest.approx(w2_exact(a, c), rel=1e-9)


def test_w2_between_gaussian_samples_matches_closed_form():
    rng = np.random.default_rng(2)
    m1, s1 = np.array([0.0, 0.0]), np.diag([1.0, 0.25])
    m2, s2 = np.array([1.0, -0.5]), np.array([[0.5, 0.2], [0.2, 0.8]])
    truth = gaussian_w2sq(m1, s1, m2, s2)
    assert truth == pytest.approx(1.52, abs=0.01)
    n, est = 1000, []
    for seed in range(3):
        x = rng.multivariate_normal(m1, s1, size=n)
        y = rng.multivariate_normal(m2, s2, size=n)
        got = w2_exact(x, y) ** 2
        # exact inequality (Gelbrich): W2^2 >= the Gaussian formula on the samples' own means and covariances
        gel = gaussian_w2sq(x.mean(0), np.cov(x.T, bias=True), y.mean(0), np.cov(y.T, bias=True))
        assert gel <= got + 1e-9
        est.append(got)
    # sampling tolerance: sd of one estimate about 0.08 at n = 1000, upward bias O(log n / n)
    assert abs(np.mean(est) - truth) < 0.12
    # 1-D: W2^2 = (m1 - m2)^2 + (s1 - s2)^2
    a, b = rng.normal(0.0, 1.0, size=1500), rng.normal(2.0, 0.5, size=1500)
    assert w2_exact(a, b) ** 2 == pytest.approx(4.0 + 0.25, rel=0.03)


def test_sliced_wasserstein_matches_pot_with_the_same_projections():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 4)), rng.normal(size=(60, 4)) * 1.5 + 0.3
    proj = rng.normal(size=(4, 20))
    proj /= np.linalg.norm(proj, axis=0, keepdims=True)
    ref = ot.sliced_wasserstein_distance(x, y, n_projections=20, p=2, projections=proj)
    assert sliced_wasserstein(x, y, projections=proj) == pytest.approx(float(ref), rel=1e-9)
    y2 = y[:45]
    ref2 = ot.sliced_wasserstein_distance(x, y2, n_projections=20, p=2, projections=proj)
    assert sliced_wasserstein(x, y2, projections=proj) == pytest.approx(float(ref2), rel=1e-6)
    # seeded directions are reproducible and the estimate is below the exact W2 (projection is 1-Lipschitz)
    s1 = sliced_wasserstein(x, y, n_projections=64, generator=torch.Generator().manual_seed(5))
    s2 = sliced_wasserstein(x, y, n_projections=64, generator=torch.Generator().manual_seed(5))
    assert s1 == s2 and s1 <= w2_exact(x, y) + 1e-12
