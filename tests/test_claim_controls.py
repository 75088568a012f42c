"""The three kinds of model behind every theory row (gclib.experiments.references) and the checks that let a row
fail: the exact flow against closed forms, the controls, Lemma 1's formula against an exact derivative, the wrong
teacher of Theorem 1, the deterministic coupling, and the equivalence verdict."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gclib.experiments import references as R
from gclib.experiments import transport_cost as tc
from gclib.metrics.gap import ct_cd_gap, ct_cd_gradients
from gclib.precond import ConsistencyModel

SMIN = 0.002


def test_ideal_flow_of_one_point_is_the_closed_form():
    """For data made of one point x1, the PF-ODE is dx/dt = (x - x1)/t, so f(y, t) = x1 + (sigma_min / t)(y - x1)."""
    x1 = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    y = torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor([0.01, 0.1, 1.0, 5.0, 80.0], dtype=torch.float64)
    f = R.IdealFlow(x1, 8)(y, t)
    expect = x1 + (SMIN / t)[:, None] * (y - x1)
    assert torch.allclose(f, expect, rtol=1e-6, atol=1e-9)
    # the Jacobian-vector product goes through the solver: J w = (sigma_min / t) w
    from torch.func import jvp
    w = torch.randn_like(y)
    _, jw = jvp(lambda a: R.IdealFlow(x1, 8)(a, t), (y,), (w,))
    assert torch.allclose(jw, (SMIN / t)[:, None] * w, rtol=1e-6, atol=1e-12)
    err = R.solver_error(x1, y, 5.0, 8)
    assert err["rms_rel"] < 1e-6


def test_controls_are_what_they_say():
    data = torch.randn(50, 3, dtype=torch.float64)
    c = R.controls(data)
    x = torch.randn(7, 3, dtype=torch.float64)
    s = torch.full((7,), 2.0, dtype=torch.float64)
    assert torch.allclose(c["collapsed"](x, s), data.mean(0).expand(7, 3))
    assert torch.equal(c["identity"](x, s), x)

    class Zero(nn.Module):
        def forward(self, x, c_noise):
            return torch.zeros_like(x)
    assert torch.allclose(c["untrained"](x, s), ConsistencyModel(Zero()).double()(x, s))
    assert torch.equal(R.zero_velocity(x, s), torch.zeros_like(x))


def test_ideal_outputs_are_cached_and_reused(tmp_path):
    data = torch.randn(20, 2, dtype=torch.float64)
    x, z = data[:6].clone(), torch.randn(6, 2, dtype=torch.float64)
    a = R.ideal_outputs(data, x, z, [SMIN, 0.5, 2.0], 8, cache=tmp_path)
    assert len(list((tmp_path / "ideal_flow").glob("*.pt"))) == 2  # sigma_min is the identity: not stored
    b = R.ideal_outputs(data, x, z, [0.5, 2.0], 8, cache=tmp_path)
    assert all(torch.equal(a[t], b[t]) for t in (0.5, 2.0))
    assert torch.equal(a[SMIN], x + SMIN * z)
    p = R.Precomputed(a, x, z, "ideal")
    assert torch.equal(p(x + 0.5 * z, 0.5), a[0.5])
    with pytest.raises(ValueError, match="no outputs at level 1"):
        p(x + z, 1.0)


class Linear(nn.Module):
    """f(x, t) = a(t) x with a(t) = 1 / (1 + t): every derivative in closed form."""
    sigma_min = SMIN

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        return x / (1.0 + t)


def test_lemma1_formula_is_the_exact_derivative():
    data = torch.randn(30, 4, dtype=torch.float64)
    x, z = tc.draws(data, 64, 0)
    t = 0.7
    r = tc.lemma1_terms(Linear(), x, z, t, 1e-4)
    a, da = 1 / (1 + t), -1 / (1 + t) ** 2
    f = a * (x + t * z)
    exact = (2 * (f - z) * (da * (x + t * z) + a * z)).sum(1).numpy()
    assert np.allclose(r["formula"], exact, rtol=1e-10)
    assert np.allclose(r["fd"], exact, rtol=1e-6)
    # the Jacobian-is-identity shortcut replaces a z by z: wrong whenever a(t) != 1
    short = (2 * (f - z) * (da * (x + t * z) + z)).sum(1).numpy()
    assert np.allclose(r["shortcut"], short, rtol=1e-10) and not np.allclose(short, exact, rtol=0.05)


class _Small(nn.Module):
    sigma_min = SMIN

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1)
        h = torch.tanh(self.lin(torch.cat([x, torch.log(t)[:, None]], 1)))
        c = 0.25 / ((t - SMIN) ** 2 + 0.25)
        return c[:, None] * x + (1 - c)[:, None] * h


def test_wrong_teacher_moves_the_gap_but_not_the_limit():
    torch.manual_seed(0)
    model = _Small().double()
    data = torch.tensor([[0.0, 0.5], [0.0, -0.5], [0.4, 0.0]], dtype=torch.float64)
    good = ct_cd_gap(model, data, T=1.0, Ns=[2560], n=2000)
    bad = ct_cd_gap(model, data, T=1.0, Ns=[2560], n=2000, teacher=R.zero_velocity)
    assert bad.limit == good.limit and bad.table.scaled_gap.iloc[0] != pytest.approx(good.table.scaled_gap.iloc[0],
                                                                                    rel=0.2)
    assert np.mean(good.per_sample["plain"]) == pytest.approx(good.limit, rel=1e-10)
    assert np.mean(good.per_sample["scaled_gap_N_max"]) == pytest.approx(good.table.scaled_gap.iloc[0], rel=1e-10)


def test_deterministic_coupling_has_no_gap_and_equal_gradients():
    torch.manual_seed(0)
    model = _Small().double()
    one = torch.tensor([[0.2, -0.1]], dtype=torch.float64)
    r = ct_cd_gap(model, one, T=1.0, Ns=[10, 640], n=500)
    assert abs(r.R) < 1e-20 and np.abs(r.table.gap).max() < 1e-12
    g = ct_cd_gradients(model, one, T=1.0, Ns=[640], n=300, alpha=1)
    assert abs(g.rel.iloc[0]) < 1e-8


def test_gradient_limits_for_alpha_2_and_1():
    """alpha = 2: the CT and CD gradient limits coincide (linear in w); alpha = 1: they differ."""
    torch.manual_seed(1)
    model = _Small().double()
    data = torch.tensor([[0.0, 0.5], [0.0, -0.5]], dtype=torch.float64)
    g2 = ct_cd_gradients(model, data, T=1.0, Ns=[5120], n=4000, alpha=2)
    g1 = ct_cd_gradients(model, data, T=1.0, Ns=[5120], n=4000, alpha=1)
    assert tc.equivalence_verdict(g2.rel_lo.iloc[0], g2.rel_hi.iloc[0], 0.1) == "holds"
    assert abs(g1.rel.iloc[0]) > abs(g2.rel.iloc[0])


@pytest.mark.parametrize("lo, hi, expected", [(-0.05, 0.05, "holds"), (0.2, 0.4, "refuted"), (-0.4, -0.2, "refuted"),
                                              (-0.05, 0.2, "inconclusive"), (np.nan, 0.0, "inconclusive")])
def test_equivalence_verdict(lo, hi, expected):
    assert tc.equivalence_verdict(lo, hi, 0.1) == expected


def test_unmatched_batches_do_not_fall_with_batch_size():
    data = torch.randn(100, 3, dtype=torch.float64)
    models = {"trained": R.Identity(), "ideal": R.Untrained(), "collapsed": R.Collapsed(data.mean(0))}
    costs = tc.transport_costs(models, data, [0.5], n=256, batch_sizes=(16, 64), ot_n=64)
    v, _ = tc.ot_batch_verdict(costs, "unmatched batches")
    assert v != "holds" and tc.ot_batch_verdict(costs, "minibatch OT")[0] == "holds"


@pytest.mark.parametrize("notebook", ["toy_flows", "ct_cd_gap", "transport_cost"])
def test_committed_rows_reject_their_controls(notebook):
    """The committed CPU results: every row names its controls, shows trained / ideal / control values and its
    power; no control verdict is "holds", and a row holds only when every control is refuted."""
    import json
    from gclib.report import project_root
    m = json.loads((project_root() / "results" / notebook / "cpu" / "metrics.json").read_text())
    assert m["claims"]
    for c in m["claims"]:
        assert c["control"] and c["control_verdict"] != "holds", c
        assert "controls:" in c["measured"] and c["power"], c
        assert c["verdict"] != "holds" or (c["unrejected"] == [] and set(c["controls"].values()) == {"refuted"}), c
