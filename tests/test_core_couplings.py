"""The flows: OT against brute force, GC's contract (mu, rows, same z), errors."""
import itertools

import pytest
import torch

from gclib import couple
from gclib.couplings import gc_mask, ot_permutation


def _cost(x, z):
    return ((x - z) ** 2).reshape(len(x), -1).sum(1).sum().item()


@pytest.mark.parametrize("solver", ["emd", "scipy"])
@pytest.mark.parametrize("n,seed", [(3, 0), (5, 1), (6, 2), (7, 3)])
def test_ot_is_optimal_permutation_against_brute_force(n, seed, solver):
    g = torch.Generator().manual_seed(seed)
    x, z = torch.randn(n, 2, 3, generator=g), torch.randn(n, 2, 3, generator=g)
    perm = ot_permutation(x, z, solver=solver)
    assert sorted(perm.tolist()) == list(range(n))
    best = min(_cost(x, z[list(p)]) for p in itertools.permutations(range(n)))
    assert abs(_cost(x, z[perm]) - best) < 1e-9
    assert _cost(x, z[perm]) <= _cost(x, z) + 1e-12


def test_ot_coupling_permutes_noise_never_resamples():
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(256, 5, generator=g), torch.randn(256, 5, generator=g)
    c = couple("ot", x, z)
    assert torch.equal(c.x, x)
    assert torch.equal(torch.sort(c.z, dim=0).values, torch.sort(z, dim=0).values)
    assert len({tuple(r) for r in c.z.tolist()}) == 256
    assert _cost(c.x, c.z) < _cost(x, z)


def test_ic_is_identity():
    x, z = torch.randn(8, 2), torch.randn(8, 2)
    c = couple("ic", x, z)
    assert c.x is x and c.z is z and not c.gc_mask.any()


class RecordingPredictor:
    """f(x, sigma) = 0.5 x, recording which rows it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma):
        self.calls.append((x.clone(), sigma.clone()))
        return 0.5 * x


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g), torch.rand(n, generator=g) * 5 + 0.01


def test_gc_mu0_is_exactly_ic_and_never_calls_predictor():
    x, z, s = _batch()
    pred = RecordingPredictor()
    c = couple("gc", x, z, sigma=s, mu=0.0, predictor=pred, generator=torch.Generator().manual_seed(1))
    assert torch.equal(c.x, x) and torch.equal(c.z, z) and not c.gc_mask.any()
    assert pred.calls == []


def test_gc_mu1_replaces_every_row_with_prediction_at_lower_level():
    x, z, s = _batch()
    pred = RecordingPredictor()
    c = couple("gc", x, z, sigma=s, mu=1.0, predictor=pred, generator=torch.Generator().manual_seed(1))
    assert c.gc_mask.all()
    assert torch.allclose(c.x, 0.5 * (x + s[:, None] * z))
    assert torch.equal(c.z, z)  # the same noise is kept


def test_gc_predictor_sees_only_gc_rows():
    x, z, s = _batch(200, seed=3)
    pred = RecordingPredictor()
    c = couple("gc", x, z, sigma=s, mu=0.3, predictor=pred, generator=torch.Generator().manual_seed(4))
    m = c.gc_mask
    assert 0 < m.sum() < 200 and len(pred.calls) == 1
    seen_x, seen_s = pred.calls[0]
    assert seen_x.shape[0] == m.sum()
    assert torch.allclose(seen_x, x[m] + s[m, None] * z[m])
    assert torch.equal(seen_s, s[m])
    assert torch.equal(c.x[~m], x[~m])
    assert torch.allclose(c.x[m], 0.5 * (x[m] + s[m, None] * z[m]))


def test_gc_predict_all_variant_gives_same_coupling():
    x, z, s = _batch(50, seed=5)
    a = couple("gc", x, z, sigma=s, mu=0.5, predictor=RecordingPredictor(), generator=torch.Generator().manual_seed(6))
    pred = RecordingPredictor()
    b = couple("gc", x, z, sigma=s, mu=0.5, predictor=pred, generator=torch.Generator().manual_seed(6),
               predict_all=True)
    assert pred.calls[0][0].shape[0] == 50
    assert torch.equal(a.gc_mask, b.gc_mask) and torch.allclose(a.x, b.x)


@pytest.mark.parametrize("mu", [0.3, 0.5, 0.7])
def test_gc_fraction_close_to_mu(mu):
    m = gc_mask(100_000, mu, torch.Generator().manual_seed(0))
    assert abs(m.float().mean().item() - mu) < 0.01


def test_gc_no_gradient_through_predictor():
    x, z, s = _batch(16)
    w = torch.nn.Parameter(torch.tensor(2.0))
    c = couple("gc", x, z, sigma=s, mu=1.0, predictor=lambda a, b: w * a)
    assert not c.x.requires_grad


@pytest.mark.parametrize("kw,match", [
    (dict(flow="icc"), "flow='icc'.*'ic', 'ot', 'gc'"),
    (dict(flow="gc", mu=1.5), "mu=1.5 is outside"),
    (dict(flow="gc", mu=-0.1), "mu=-0.1 is outside"),
    (dict(flow="gc", mu=0.5), "needs sigma"),
])
def test_bad_input_raises(kw, match):
    x, z, _ = _batch(8)
    flow = kw.pop("flow")
    with pytest.raises(ValueError, match=match):
        couple(flow, x, z, **kw)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="x has shape .* z has shape"):
        couple("ic", torch.randn(4, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="ot_solver"):
        ot_permutation(torch.randn(4, 2), torch.randn(4, 2), solver="hungarian")
