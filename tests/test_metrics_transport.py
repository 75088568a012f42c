"""gclib.metrics.transport: coupling costs, minibatch and exact OT against brute force, c(t)."""
import itertools
import math

import numpy as np
import pytest
import torch

from gclib.metrics import coupling_cost, exact_ot_cost, minibatch_ot_cost, transport_cost_curve
from gclib.nets import MLP
from gclib.precond import ConsistencyModel


pytestmark = pytest.mark.usefixtures("one_thread")


def brute_assignment_cost(x, y):
    """min over permutations of (1/n) sum ||x_k - y_perm(k)||^2."""
    c = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    n = len(x)
    return min(c[np.arange(n), list(p)].mean() for p in itertools.permutations(range(n)))


def test_coupling_cost_matches_numpy():
    rng = np.random.default_rng(0)
    x, z = rng.normal(size=(7, 2, 3)), rng.normal(size=(7, 2, 3))
    expect = ((x - z) ** 2).reshape(7, -1).sum(1).mean()
    assert coupling_cost(x, z) == pytest.approx(expect, rel=1e-12)
    assert coupling_cost(torch.from_numpy(x).float(), torch.from_numpy(z).float()) == pytest.approx(expect, rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        coupling_cost(x, z[:6])


def test_exact_ot_cost_equals_brute_force():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 2)) + 1.0
    res = exact_ot_cost(x, y)
    assert res.converged and res.result_code == 1
    assert res.cost == pytest.approx(brute_assignment_cost(x, y), rel=1e-10)
    assert float(res) == res.cost
    # unequal sizes: weights 1/3 vs 1/6 is the assignment of each x twice
    x3 = rng.normal(size=(3, 2))
    assert exact_ot_cost(x3, y).cost == pytest.approx(brute_assignment_cost(np.repeat(x3, 2, 0), y), rel=1e-10)


def test_exact_ot_cost_reports_non_convergence():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    with pytest.raises(RuntimeError, match="num_iter_max"):
        exact_ot_cost(x, y, num_iter_max=2)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        res = exact_ot_cost(x, y, num_iter_max=2, on_fail="warn")
    assert not res.converged and res.result_code != 1
    with pytest.raises(ValueError, match="max_pairs"):
        exact_ot_cost(x, y, max_pairs=100)


def test_minibatch_ot_cost_against_brute_force():
    rng = np.random.default_rng(3)
    x, z = rng.normal(size=(14, 2)) * 0.5 + 1.0, rng.normal(size=(14, 2))
    for solver in ("emd", "scipy"):
        res = minibatch_ot_cost(x, z, batch_size=5, solver=solver)  # 2 batches, the remainder 4 dropped
        per = [brute_assignment_cost(x[a:a + 5], z[a:a + 5]) for a in (0, 5)]
        assert res["n_batches"] == 2
        assert res["cost"] == pytest.approx(np.mean(per), rel=1e-10)
        assert res["stderr"] == pytest.approx(np.std(per, ddof=1) / math.sqrt(2), rel=1e-8)
        assert res["ic_cost"] == pytest.approx(np.mean([((x[a:a + 5] - z[a:a + 5]) ** 2).sum(1).mean() for a in (0, 5)]))
    # one batch of everything is the exact OT cost between the samples, below the IC cost
    full = minibatch_ot_cost(x, z, batch_size=14)
    assert full["cost"] == pytest.approx(exact_ot_cost(x, z).cost, rel=1e-10)
    assert full["cost"] < full["ic_cost"]
    g = torch.Generator().manual_seed(0)
    shuffled = minibatch_ot_cost(x, z, batch_size=7, generator=g)
    assert shuffled["n_batches"] == 2 and shuffled["cost"] < shuffled["ic_cost"]
    assert full["cost"] <= shuffled["cost"] + 1e-12  # bigger batches match better (here: the full sample)
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_ot_cost(x, z, batch_size=15)


def test_transport_cost_curve_endpoints_and_values():
    torch.manual_seed(0)
    model = ConsistencyModel(MLP(dim=2, hidden=16, depth=1, emb_dim=8), sigma_max=5.0).double()
    data = torch.randn(9, 2, dtype=torch.float64)
    n, seed = 300, 4
    ts = [0.0, model.sigma_min, 0.7]
    df = transport_cost_curve(model, data, ts, n=n, batch_size=128, seed=seed)
    assert list(df.columns) == ["t", "cost", "stderr"] and list(df.t) == ts
    # the documented draws: x rows uniform with replacement, then z ~ N(0, I) in float64
    g = torch.Generator().manual_seed(seed)
    x = data[torch.randint(0, 9, (n,), generator=g)]
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert df.cost[0] == pytest.approx(coupling_cost(x, z), rel=1e-12)  # c(0) = E||x - z||^2, the IC cost
    per0 = ((x - z) ** 2).sum(1)
    assert df.stderr[0] == pytest.approx(float(per0.std() / math.sqrt(n)), rel=1e-10)
    # f(x, sigma_min) = identity: c(sigma_min) = E||x + sigma_min z - z||^2
    assert df.cost[1] == pytest.approx(coupling_cost(x + model.sigma_min * z, z), rel=1e-10)
    with torch.no_grad():
        f = model(x + 0.7 * z, 0.7)
    assert df.cost[2] == pytest.approx(coupling_cost(f, z), rel=1e-10)
    assert model.training  # mode restored
    with pytest.raises(ValueError, match="sigma_min"):
        transport_cost_curve(model, data, [0.001], n=10)
