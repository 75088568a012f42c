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


# ------------------------------------------------------------------ the exact flow of a finite set (issue 30)
TWO = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)   # two points in 1-D: the basins' boundary is y = 0


def _gl(a: float, b: float, m: int):
    x, w = np.polynomial.legendre.leggauss(m)
    return torch.tensor((a + b) / 2 + (b - a) / 2 * x), torch.tensor((b - a) / 2 * w)


def _phi(z):
    return torch.exp(-z ** 2 / 2) / np.sqrt(2 * np.pi)


def _exact_scaled_gap(f, N: int, s: float, T: float = 1.0, m: int = 48) -> float:
    """E[N (L_CT - L_CD)] (iCT weights 1/h, squared L2) of the flow map ``f`` of TWO by quadrature: the draws x = +-1
    are symmetric, so x = 1; per interval i the integral over z is cut where the CT point 1 + t_i z or the upper
    point 1 + t_{i+1} z crosses the boundary (z = -1 / t_i, -1 / t_{i+1}) and done by Gauss-Legendre on each piece."""
    from gclib.exact import velocity
    h, tot = (T - s) / N, 0.0
    for i in range(N):
        lo, hi = s + i * h, s + (i + 1) * h
        cuts = sorted(c for c in (-1 / lo, -1 / hi) if -12 < c < 12)
        edges = [-12.0, *cuts, 12.0]
        z, w = (torch.cat(q) for q in zip(*[_gl(a, b, m) for a, b in zip(edges[:-1], edges[1:])]))
        y = (1 + hi * z)[:, None]
        f_hi = f(y, hi)
        cd = y - h * velocity(y, TWO, torch.full((len(z),), hi, dtype=torch.float64))
        d_ct, d_cd = (f_hi - f(1 + lo * z[:, None], lo)) ** 2, (f_hi - f(cd, lo)) ** 2
        tot += float((w * _phi(z) * (d_ct - d_cd)[:, 0]).sum()) / h
    return tot


def test_exact_flow_of_two_points_jumps_so_its_gap_grows_like_n():
    """The exact flow of a finite set jumps across the boundary between two points' basins (Theorem 1's smooth f
    fails there): the CT step crosses it with a chance ~ h, and such a draw's scaled gap is N jump^2 / h, so
    E[N (L_CT - L_CD)] grows like N, as (T - s)^-1 Phi(-1) jump^2 N (a closed form; quadrature, no sampling), and
    the plain limit's integrand, restricted to |y| > eps, grows like 1 / eps (the derivative near the jump is about
    1 / |y|) down to float rounding: Theorem 1's limit is infinite for this f, and a sample of the plain terms sees
    only its draws' closest approach.
    A smooth f's gap converges instead (the control), and ct_cd_gap's Monte Carlo estimate agrees with the
    quadrature (the code against an exact computation, at an N where crossings are common enough to sample)."""
    from scipy import stats
    from torch.func import jvp
    from gclib.experiments.references import IdealFlow, Untrained
    ideal = IdealFlow(TWO, 32)   # the digits profile's solver
    s = ideal.sigma_min
    f = lambda y, t: ideal(y, torch.full((len(y),), t, dtype=torch.float64))  # noqa: E731
    g10, g40 = _exact_scaled_gap(f, 10, s), _exact_scaled_gap(f, 40, s)
    assert 3.8 < g40 / g10 < 4.2
    jump = float(f(torch.tensor([[1e-3]]), 0.5) - f(torch.tensor([[-1e-3]]), 0.5))
    closed = stats.norm.cdf(-1.0) * jump ** 2 / (1 - s)
    assert g10 / 10 == pytest.approx(closed, rel=0.08) and g40 / 40 == pytest.approx(closed, rel=0.08)
    # control: a smooth f (the untrained consistency model c_skip(t) y) has a gap that converges, not one that grows
    smooth = Untrained()
    fs = lambda y, t: smooth(y, torch.full((len(y),), t, dtype=torch.float64))  # noqa: E731
    assert _exact_scaled_gap(fs, 40, s) / _exact_scaled_gap(fs, 10, s) < 1.5  # (0.74: converging from above)

    def r_eps(eps, t=1.0):  # int_{|y| > eps} J^2 ((D - x) / t)^2 p(y | x = 1) dy, J by forward AD through the solver
        edges = np.r_[np.logspace(np.log10(eps), 0, 40), np.linspace(1, 1 + 10 * t, 12)[1:]]
        y, w = (torch.cat(q) for q in zip(*[_gl(a, b, 16) for a, b in zip(edges[:-1], edges[1:])]))
        y, w = torch.cat([y, -y]), torch.cat([w, w])
        _, J = jvp(lambda a: f(a[:, None], t)[:, 0], (y,), (torch.ones_like(y),))
        return float((w * J ** 2 * ((torch.tanh(y / t ** 2) - 1) / t) ** 2 * _phi((y - 1) / t) / t).sum())
    r = [r_eps(e) for e in (1e-3, 1e-5, 1e-7, 1e-9)]
    assert all(b > 20 * a for a, b in zip(r, r[1:])), r  # ~ 100 per factor 100 in eps

    res = ct_cd_gap(ideal, TWO, T=1.0, Ns=[10], n=20000, seed=3, limit=False)
    est, se = float(res.table.scaled_gap.iloc[0]), float(res.table.scaled_gap_stderr.iloc[0])
    assert abs(est - g10) < 4 * se and se < 0.15 * g10


# ------------------------------------------------------------------ a continuous density: one Gaussian N(mu, s^2 I)
class _GaussFlow(torch.nn.Module):
    """The exact consistency function of N(mu, s^2 I) in closed form: f(y, t) = mu + a(t) (y - mu),
    a = sqrt((s^2 + sigma_min^2) / (s^2 + t^2)); its velocity v_t(x) = t (x - mu) / (s^2 + t^2)."""
    sigma_min, sigma_max = 0.002, 80.0

    def __init__(self, mu, s):
        super().__init__()
        self.mu, self.s = torch.as_tensor(mu, dtype=torch.float64), float(s)

    def a(self, t):
        return torch.sqrt((self.s ** 2 + self.sigma_min ** 2) / (self.s ** 2 + t ** 2))

    def forward(self, y, t):
        t = torch.as_tensor(t, dtype=y.dtype).reshape(-1)
        return self.mu + self.a(t)[:, None] * (y - self.mu)

    def velocity(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1)
        return (t / (self.s ** 2 + t ** 2))[:, None] * (x - self.mu)

    def sample(self, n, g):
        return self.mu + self.s * torch.randn((n, len(self.mu)), generator=g, dtype=torch.float64)

    def limits(self, T=1.0):
        """Theorem 1's limit with iCT weights, int_s^T a^2 E||z - v||^2 dt = d s^2 (s^2 + sm^2) int dt / (s^2 + t^2)^2,
        and the wrong teacher v = 0's, int a^2 (E||z - v||^2 - E||v||^2) dt (its scaled gap tends to
        E||Jz||^2 - 2 E||Jv||^2: ct_cd_claims), with E||v||^2 = d t^2 / (s^2 + t^2): closed forms."""
        s, sm, d = self.s, self.sigma_min, len(self.mu)
        F2 = lambda t: t / (2 * s ** 2 * (s ** 2 + t ** 2)) + np.arctan(t / s) / (2 * s ** 3)  # int dt/(s^2+t^2)^2
        G = lambda t: np.arctan(t / s) / s - s ** 2 * F2(t)                                     # int t^2 dt/(..)^2
        lim = d * s ** 2 * (s ** 2 + sm ** 2) * (F2(T) - F2(sm))
        jv = d * (s ** 2 + sm ** 2) * (G(T) - G(sm))
        return lim, lim - jv


def test_gap_and_limit_of_a_gaussian_match_their_closed_forms():
    """On N(mu, s^2 I) (a continuous density: x drawn by ``sampler``, the density's own velocity) the closed-form flow
    map's N (L_CT - L_CD) and Theorem 1's plain limit both equal the closed-form limit (within 4 standard errors),
    the paired per-sample difference is tiny (the exact flow: d_t f + J v = 0), and the wrong teacher v = 0 tends to
    its own closed form, 25% below (a broken input the row must refute). The one-component GaussianMixtureFlow (the
    Heun solver, the limit row's ideal) gives the same limit through its Jacobian-vector products."""
    from gclib.experiments import references as R
    from gclib.experiments.ct_cd_gap import summarise_gap
    exact = _GaussFlow([0.3, -0.2], 0.3)
    lim, lim_v0 = exact.limits()
    kw = dict(T=1.0, Ns=[10, 2560], n=16384, seed=0, velocity=exact.velocity, sampler=exact.sample)
    r = ct_cd_gap(exact, exact.mu[None], **kw)
    assert abs(r.limit - lim) < 4 * r.limit_stderr and r.limit_stderr < 0.03 * lim
    big = r.table.iloc[-1]
    assert abs(big.scaled_gap - lim) < 4 * big.scaled_gap_stderr + 0.002 * lim
    row = summarise_gap(r, "l2", "gauss")
    assert abs(row["rel"]) < 1e-3 and row["rel_hi"] - row["rel_lo"] < 1e-2
    w = ct_cd_gap(exact, exact.mu[None], teacher=lambda x, t: torch.zeros_like(x), limit=False, **kw)
    assert lim_v0 < 0.8 * lim and abs(w.table.scaled_gap.iloc[-1] - lim_v0) < 4 * w.table.scaled_gap_stderr.iloc[-1]
    mix = R.GaussianMixtureFlow([[0.3, -0.2]], 0.3, n_steps=64)
    m = ct_cd_gap(mix, mix.means, Ns=[2560], n=16384, seed=0, velocity=mix.velocity, sampler=mix.sample)
    assert abs(m.limit - lim) < 4 * m.limit_stderr and m.limit_stderr < 0.03 * lim
    assert abs(summarise_gap(m, "l2", "mixture")["rel"]) < 1e-3
    with pytest.raises(ValueError, match="sampler needs velocity="):
        ct_cd_gap(exact, exact.mu[None], sampler=exact.sample)
