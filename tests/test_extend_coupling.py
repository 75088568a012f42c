"""Adding a coupling is one class and one registration: a coupling defined in this file ("norm_sorted") trains end
to end through the config and through a notebook driver (fid_curves.train_sweep) with no other file changed, and
every registered coupling keeps the couplings' contract (gclib/couplings.py's docstring):

- the returned noise rows are a permutation of z's rows (the noise marginal is kept: never a resampling);
- an endpoint outside ``gc_mask`` is one of x's rows, each used at most once; with no generated row the endpoints
  are a permutation of x's rows (the data marginal is kept);
- a generated endpoint (row k in ``gc_mask``) is the predictor's output at x_k + sigma_k z'_k (z' the returned
  noise), or x_k itself where sigma_k = 0;
- the draws come only from ``generator``: the same seed gives the same pairs.

Per coupling: IC returns (x, z) unchanged; OT keeps x and permutes z; GC keeps z and generates the endpoints of its
Bernoulli(mu) rows; norm_sorted keeps x and permutes z so that norms are matched by rank.
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from conftest import tiny_config
from gclib import checks
from gclib.models import load_model
from gclib.checks import ConfigError
from gclib.config import as_config
from gclib.couplings import (REGISTRY, Coupling, Pairs, couple, make_coupling, register_coupling,
                             unregister_coupling)
from gclib.train import train

NAME = "norm_sorted"


class NormSorted(Coupling):
    """Pairs the data row of rank k in norm with the noise row of rank k in norm (the 1-D monotone transport of
    the norms): a deterministic permutation of the noise, no random draw, no setting."""

    def pair(self, x, z, **_) -> Pairs:
        n = x.shape[0]
        rank_x = x.reshape(n, -1).norm(dim=1).argsort()
        rank_z = z.reshape(n, -1).norm(dim=1).argsort()
        perm = torch.empty_like(rank_x)
        perm[rank_x] = rank_z
        return Pairs(x, z[perm], torch.zeros(n, dtype=torch.bool, device=x.device))


BUILT_IN = dict(REGISTRY)


@pytest.fixture(scope="module", autouse=True)
def norm_sorted():
    """Register the coupling for this module's tests; afterwards the registry is the built-in one again."""
    assert NAME not in REGISTRY
    register_coupling(NAME, NormSorted)
    yield NormSorted
    unregister_coupling(NAME)
    assert REGISTRY == BUILT_IN and NAME not in checks.FLOWS


def _rows_match(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) bool: row i of a equals row j of b exactly."""
    return (a.reshape(len(a), 1, -1) == b.reshape(1, len(b), -1)).all(-1)


def check_contract(x, z, sigma, predictor, pairs: Pairs) -> None:
    """Raise AssertionError where ``pairs`` breaks the couplings' contract for the input (x, z, sigma)."""
    b = x.shape[0]
    assert pairs.x.shape == x.shape and pairs.z.shape == z.shape
    assert pairs.gc_mask.dtype == torch.bool and pairs.gc_mask.shape == (b,)
    zm = _rows_match(pairs.z, z)
    assert (zm.sum(1) == 1).all() and (zm.sum(0) == 1).all(), "noise rows are not a permutation of z's rows"
    kept = ~pairs.gc_mask
    xm = _rows_match(pairs.x[kept], x)
    assert (xm.sum(1) == 1).all(), "an endpoint outside gc_mask is not a row of x"
    assert (xm.sum(0) <= 1).all(), "a data row is used twice (a resampling, not a selection)"
    gen = pairs.gc_mask.nonzero().flatten()
    if len(gen):
        s = sigma[gen].reshape(-1, *([1] * (x.dim() - 1)))
        want = torch.where(s > 0, predictor(x[gen] + s * pairs.z[gen], sigma[gen]), x[gen])
        torch.testing.assert_close(pairs.x[gen], want, rtol=1e-6, atol=1e-6)


def _batch(b=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, z = torch.randn(b, 3, 2, generator=g), torch.randn(b, 3, 2, generator=g)
    sigma = torch.rand(b, generator=g) * 2.0
    sigma[:8] = 0.0  # ECT's pairs with r = 0
    return x, z, sigma


def _predictor(x_noisy, sigma):
    return 0.5 * x_noisy + sigma.reshape(-1, *([1] * (x_noisy.dim() - 1)))


@pytest.mark.parametrize("name", [*BUILT_IN, NAME])
def test_every_registered_coupling_keeps_the_contract(name):
    assert name in REGISTRY
    x, z, sigma = _batch()
    coupling = make_coupling(name)   # default settings (GC: mu = 0.5, so some rows are generated)
    pairs = coupling(x, z, sigma=sigma, predictor=_predictor, generator=torch.Generator().manual_seed(3))
    check_contract(x, z, sigma, _predictor, pairs)
    if name == "gc":   # the generated rows were checked, at positive levels and at level 0
        assert (pairs.gc_mask & (sigma > 0)).any() and (pairs.gc_mask & (sigma == 0)).any() and (~pairs.gc_mask).any()
    if not pairs.gc_mask.any():   # no generated row: the data marginal is exactly kept
        assert (_rows_match(pairs.x, x).sum(0) == 1).all()
    again = coupling(x, z, sigma=sigma, predictor=_predictor, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip((pairs.x, pairs.z, pairs.gc_mask), (again.x, again.z, again.gc_mask)))


@pytest.mark.parametrize("broken", ["resampled noise", "duplicated data", "wrong endpoint"])
def test_the_contract_check_fails_on_a_broken_coupling(broken):
    x, z, sigma = _batch()
    if broken == "resampled noise":
        pairs = Pairs(x, z[torch.randint(0, len(z), (len(z),), generator=torch.Generator().manual_seed(0))],
                      torch.zeros(len(x), dtype=torch.bool))
    elif broken == "duplicated data":
        pairs = Pairs(torch.cat([x[:1], x[1:-1], x[:1]]), z, torch.zeros(len(x), dtype=torch.bool))
    else:
        mask = sigma > 0
        pairs = Pairs(torch.where(mask.reshape(-1, 1, 1), x + 1.0, x), z, mask)
    with pytest.raises(AssertionError):
        check_contract(x, z, sigma, _predictor, pairs)


def test_norm_sorted_matches_norms_by_rank():
    x, z, _ = _batch(32, seed=1)
    pairs = couple(NAME, x, z)
    nx, nz = x.reshape(32, -1).norm(dim=1), pairs.z.reshape(32, -1).norm(dim=1)
    assert torch.equal(nx.argsort(), nz.argsort())
    assert not torch.equal(pairs.z, z)  # the pairing did change


def test_registry_refuses_a_taken_name_and_a_non_coupling():
    with pytest.raises(ValueError, match="already registered"):
        register_coupling("ot", NormSorted)
    with pytest.raises(TypeError, match="subclass of gclib.couplings.Coupling"):
        register_coupling("plain", object)
    assert NAME in checks.FLOWS and checks.check_flow(NAME) == NAME


def test_config_accepts_a_registered_coupling_only(tmp_path):
    assert as_config(tiny_config(tmp_path, flow=NAME)).flow == NAME
    with pytest.raises(ConfigError, match=f"flow='sorted'.*'{NAME}'"):
        as_config(tiny_config(tmp_path, flow="sorted"))


def test_trains_end_to_end_through_the_config(tmp_path, one_thread):
    new = train(tiny_config(tmp_path, flow=NAME, name="ns"))
    ic = train(tiny_config(tmp_path, flow="ic", name="ic"))
    model, _, cfg = load_model(new.checkpoint)
    assert cfg.flow == NAME and new.step == 30
    ic_state = load_model(ic.checkpoint)[0].state_dict()
    assert not all(torch.equal(v, ic_state[k]) for k, v in model.state_dict().items())  # the pairing mattered


def test_trains_through_a_notebook_driver(tmp_path, one_thread):
    from gclib.experiments.fid_curves import Run, train_sweep
    base = tiny_config(tmp_path, eval_every=10, eval_metrics=["w2"], eval_n=64, total_steps=20)
    curves = train_sweep(base, [Run("IC", 0, {"flow": "ic"}, "flow"), Run("norm sorted", 0, {"flow": NAME}, "flow")])
    assert isinstance(curves, pd.DataFrame) and set(curves.label) == {"IC", "norm sorted"}
    ns = curves[curves.label == "norm sorted"].sort_values("step")
    assert list(ns.step) == [10, 20] and ns.w2.notna().all()
    ic = curves[curves.label == "IC"].sort_values("step")
    assert not (ns.w2.to_numpy() == ic.w2.to_numpy()).all()
