"""ct_cd_gap.plugin_proxies: R~_t = E||z - E[z | y]||^2 per coupling. IC's value against a closed form (two points
+-a in 1-D, E[x | y] = a tanh(a y / t^2), integrated by quadrature); every estimate is an upper bound (the Bayes
risk is the smallest over all predictors of z); the plug-in is exact for a deterministic coupling; the estimator
for GC is chosen on draws other than those it is measured on."""
import numpy as np
import pytest
import torch

from gclib.experiments import ct_cd_gap as gap, references


def _quad_ic(a: float, t: float) -> float:
    """R~_IC for data {-a, +a} (1-D): E over x = +-a, z ~ N(0, 1) of (x - a tanh(a (x + t z) / t^2))^2 / t^2."""
    zs, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    x = a  # symmetric: x = -a gives the same value
    post = a * np.tanh(a * (x + t * zs) / t ** 2)
    return float((w * (x - post) ** 2).sum() / t ** 2)


def test_ic_proxy_is_exact_and_gc_estimates_are_upper_bounds():
    a = 0.7
    data = torch.tensor([[-a], [a]], dtype=torch.float64)
    ts = [0.3, 1.0, 3.0]
    ctr = references.controls(data, 0.002, 80.0)
    p = gap.plugin_proxies(data, ts, {"collapsed": ctr["collapsed"], "identity": ctr["identity"]}, n=20000,
                           ot_batch=50, seed=0)
    for t in ts:
        ic = p[(p.coupling == "IC") & (p.t == t)].iloc[0]
        assert abs(ic.proxy - _quad_ic(a, t)) < 4 * ic.stderr, (t, ic.proxy, _quad_ic(a, t))
        col = p[(p.coupling == "GC collapsed") & (p.t == t)].iloc[0]
        # a constant predictor makes y = c + t z determine z: the plug-in is exact (0) and is the one chosen
        assert col.estimator == "plug-in" and col.proxy < 1e-20 and col.n == 10000
        idt = p[(p.coupling == "GC identity") & (p.t == t)].iloc[0]
        # identity: y = x + 2 t z; the plug-in h = (y - y) / t = 0 predicts nothing (E||z||^2 = 1); the estimate
        # kept is the better of the two, measured on the other half of the draws
        assert idt.plug_in == pytest.approx(1.0, abs=0.05)
        assert abs(idt.proxy - min(idt.plug_in, idt.data_velocity)) < 4 * idt.stderr
    # OT's coupling makes z more predictable than IC's (an upper bound below the exact IC value)
    assert (p[p.coupling == "OT"].proxy.to_numpy() <= p[p.coupling == "IC"].proxy.to_numpy() * 1.05).all()
