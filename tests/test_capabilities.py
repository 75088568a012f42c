"""The registry entries say what they do, and gclib reads that instead of flow or metric names (issue 32, item 1).

The two numbers that lists outside the entries got silently wrong are checked against exact computations:
- Fig. 1's endpoints of a coupling that permutes the noise (a reverse-OT coupling, pairing x with -z by OT): the
  mean squared length of its pairs is the MAXIMUM assignment cost of each minibatch (minimising ||x + z||^2 is
  maximising ||x - z||^2), not IC's cost, which the endpoints x0 would give;
- a model of a left-right flipped digits set is scored by FD_digits against the flipped set it was trained on,
  not against the unflipped digits.
"""
import threading

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from gclib.checks import ConfigError
from gclib.config import config_hash, load_config
from gclib.couplings import (GC, IC, OT, Coupling, Pairs, coupling_of, ot_permutation, register_coupling,
                             unregister_coupling)


class ReverseOT(Coupling):
    """Pairs x with -z by exact OT: z permuted to minimise sum ||x_k + z_perm(k)||^2."""
    permutes_noise = True

    def pair(self, x, z, **_):
        perm = ot_permutation(x, -z, "scipy")
        return Pairs(x, z[perm], torch.zeros(x.shape[0], dtype=torch.bool))


class FreshNoise(Coupling):
    """Breaks the contract: returns noise rows that are not z's rows."""
    permutes_noise = True

    def pair(self, x, z, **_):
        return Pairs(x, z + 1.0, torch.zeros(x.shape[0], dtype=torch.bool))


@pytest.fixture
def registered():
    names = []

    def add(name, cls):
        register_coupling(name, cls)
        names.append(name)
    yield add
    for n in names:
        unregister_coupling(n)


def test_builtin_couplings_say_what_they_do():
    assert IC.capabilities() == {"needs_predictor": False, "permutes_noise": False, "solves_ahead": False,
                                 "log_columns": (), "config_fields": (), "own_settings": ()}
    assert OT.capabilities() == {"needs_predictor": False, "permutes_noise": True, "solves_ahead": True,
                                 "log_columns": ("ot_batch",), "config_fields": ("ot_solver",), "own_settings": ()}
    assert GC.capabilities() == {"needs_predictor": True, "permutes_noise": False, "solves_ahead": False,
                                 "log_columns": (), "config_fields": ("mu", "predict_all", "predictor"),
                                 "own_settings": ()}
    assert GC(mu=0.3).describe() == "mu 0.3" and OT().describe() == IC().describe() == ""
    assert OT().log_values(batch=64) == (64,) and IC().log_values(batch=64) == ()


# ------------------------------------------------------------------------------------- Fig. 1's endpoints
def _draw(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.tensor([[0.0, 0.5], [0.0, -0.5]], dtype=torch.float64)
    return data, data[torch.randint(0, 2, (n,), generator=g)], torch.randn(n, 2, generator=g, dtype=torch.float64)


def _assignment_cost(x, z, batch, maximize):
    """Mean ||x_k - z_perm(k)||^2 of the exact min / max assignment of each minibatch (scipy, independent of gclib)."""
    total = 0.0
    for a in range(0, len(x), batch):
        c = torch.cdist(x[a:a + batch], z[a:a + batch]).pow(2).numpy()
        rows, cols = linear_sum_assignment(c, maximize=maximize)
        total += float(c[rows, cols].sum())
    return total / len(x)


def test_a_coupling_that_permutes_the_noise_is_measured_as_the_pairs_it_makes(registered):
    from gclib.coupling_paths import coupled_endpoints
    registered("reverse_ot", ReverseOT)
    data, x0, z = _draw(512)
    cost = {f: float(((coupled_endpoints(f, x0, z, data, ot_batch=64) - z) ** 2).sum(1).mean())
            for f in ("ic", "ot", "reverse_ot")}
    ic_cost = float(((x0 - z) ** 2).sum(1).mean())
    assert cost["ic"] == pytest.approx(ic_cost, rel=1e-12)
    assert cost["ot"] == pytest.approx(_assignment_cost(x0, z, 64, maximize=False), rel=1e-9)
    assert cost["reverse_ot"] == pytest.approx(_assignment_cost(x0, z, 64, maximize=True), rel=1e-9)
    # the numbers are far apart, so keeping only the endpoints x0 (IC's cost) cannot pass for reverse OT
    assert cost["ot"] < 0.8 * ic_cost and cost["reverse_ot"] > 1.2 * ic_cost
    # each row's endpoint is still a data point, and reverse OT sends the noise to the far Dirac
    e = coupled_endpoints("reverse_ot", x0, z, data, ot_batch=len(x0))
    assert (torch.sign(e[:, 1]) != torch.sign(z[:, 1])).float().mean() > 0.9


def test_noise_rows_that_are_not_z_rows_are_refused(registered):
    from gclib.coupling_paths import coupled_endpoints
    registered("fresh_noise", FreshNoise)
    data, x0, z = _draw(16)
    with pytest.raises(ValueError, match="not a permutation of z's rows"):
        coupled_endpoints("fresh_noise", x0, z, data, ot_batch=8)


# ------------------------------------------------------------------------------------- metric entries
def test_a_metric_entry_says_which_data_sets_it_accepts():
    from gclib.evaluation import REGISTRY
    assert REGISTRY["fd_digits"].accepts("digits") and not REGISTRY["fd_digits"].accepts("mnist")
    assert not REGISTRY["fd_digits"].accepts("moons") and REGISTRY["w2"].accepts("moons")
    assert REGISTRY["fid"].accepts("cifar10") and not REGISTRY["fid"].accepts("two_gaussians")
    assert "8x8 digits" in REGISTRY["fd_digits"].refusal("mnist")
    data = torch.arange(10.0)[:, None]
    assert torch.equal(REGISTRY["fd_digits"].reference(data, 4), data)          # the whole set
    ref = REGISTRY["w2"].reference(data, 4, seed=3)                              # n rows, seeded
    assert ref.shape == (4, 1) and torch.equal(ref, REGISTRY["w2"].reference(data, 4, seed=3))
    assert len(set(ref[:, 0].tolist())) == 4 and torch.equal(REGISTRY["w2"].reference(data, 20), data)


@pytest.fixture
def flipped_digits():
    from gclib.data import DataSet, digits, register_dataset, unregister_dataset
    x = digits().flip(-1).contiguous()
    register_dataset(DataSet("digits_flipped", lambda root, download, n, seed: x, (1, 8, 8), model="unet_digits",
                             metric="fd_digits", requires=("sklearn",)))
    yield x
    unregister_dataset("digits_flipped")


def test_a_flipped_digits_set_is_scored_against_itself(flipped_digits):
    from gclib.data import digits
    from gclib.evaluation import generate
    from gclib.experiments.common import model_quality
    from gclib.metrics import fd_digits
    from gclib.nets import UNet
    from gclib.precond import ConsistencyModel
    torch.manual_seed(0)
    net = UNet(in_channels=1, resolution=8, channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=())
    ema = ConsistencyModel(net, sigma_min=0.002, sigma_data=0.5, sigma_max=5.0).eval()
    out = model_quality(ema, flipped_digits, n=64, dataset="digits_flipped")
    samples = generate(ema, 64, (1, 8, 8), ema.sigma_max, seed=0)
    right, wrong = fd_digits(samples, flipped_digits), fd_digits(samples, digits())
    assert out == {"metric": "FD_digits", "value": right, "n": 64}
    assert abs(right - wrong) > 1e-3 * right     # scoring against the unflipped digits would be seen
    # the digits data set itself is scored as before: FD_digits against the whole digits set
    assert model_quality(ema, digits(), n=64, dataset="digits")["value"] == wrong


def test_config_validation_asks_the_metric_entry(flipped_digits):
    cfg = load_config(None, dict(dataset="digits_flipped", model="unet_digits", eval_metrics=["fd_digits", "fid"]))
    assert cfg.eval_metrics == ["fd_digits", "fid"]
    with pytest.raises(ConfigError, match=r"'fd_digits' cannot score dataset='moons': it needs 8x8 digits .*"
                                          r"metrics that accept it: w2, w2sq, nn_dist"):
        load_config(None, dict(dataset="moons", eval_metrics=["fd_digits"]))
    with pytest.raises(ConfigError, match=r"'fd_digits' cannot score dataset='mnist'"):
        load_config(None, dict(dataset="mnist", model="unet", eval_metrics=["fd_digits"]))


# ------------------------------------------------------------------------------------- a coupling's own settings
class Scaled(Coupling):
    """IC with the noise scaled by its own setting ``scale`` (a test coupling; it breaks the noise marginal)."""

    def __init__(self, mu: float = 0.5, scale: float = 1.0):
        if not scale > 0:
            raise ValueError(f"scale={scale!r} must be > 0")
        self.mu, self.scale = mu, scale

    def pair(self, x, z, **_):
        return Pairs(x, self.scale * z, torch.zeros(x.shape[0], dtype=torch.bool))


def test_a_couplings_own_settings_reach_it_from_the_config(registered):
    from gclib.objectives import make_loss
    registered("scaled", Scaled)
    assert Scaled.config_fields() == ("mu",) and Scaled.own_settings() == ("scale",)
    cfg = load_config(None, {"flow": "scaled", "mu": 0.25, "coupling": {"coupling_options": {"scale": 2.0}}})
    c = make_loss(cfg).coupling
    assert isinstance(c, Scaled) and (c.scale, c.mu) == (2.0, 0.25) and coupling_of(cfg).scale == 2.0
    assert load_config(None, ["flow=scaled", "coupling_options={scale: 3}"]).coupling_options == {"scale": 3}
    assert config_hash(cfg) != config_hash(cfg.replace(coupling_options={"scale": 3.0}))
    with pytest.raises(ConfigError, match=r"flow 'scaled' has no setting 'width'; its own settings: scale "
                                          r"\(config fields it reads: mu\)"):
        load_config(None, {"flow": "scaled", "coupling_options": {"width": 2}})
    with pytest.raises(ConfigError, match=r"flow='scaled' does not build .*scale=-1 must be > 0"):
        load_config(None, {"flow": "scaled", "coupling_options": {"scale": -1}})
    with pytest.raises(ConfigError, match=r"flow 'ot' has no setting 'scale'; its own settings: none"):
        load_config(None, {"flow": "ot", "coupling_options": {"scale": 2.0}})
    with pytest.raises(ConfigError, match="coupling_options=3 has the wrong type"):
        load_config(None, {"coupling_options": 3})


# ------------------------------------------------------------------------------------- the loop reads the entry
class SortedAhead(Coupling):
    """Pairs the k-th smallest data norm with the k-th smallest noise norm, solved ahead of the step, and logs how
    many rows it paired."""
    permutes_noise = True
    solves_ahead = True
    log_columns = ("rows_paired",)
    threads: list = []

    def solve(self, x, z):
        SortedAhead.threads.append(threading.current_thread().name)
        n = x.shape[0]
        perm = torch.empty(n, dtype=torch.long)
        perm[x.reshape(n, -1).norm(dim=1).argsort()] = z.reshape(n, -1).norm(dim=1).argsort()
        return perm

    def log_values(self, *, batch):
        return (batch,)

    def pair(self, x, z, *, ot_perm=None, **_):
        perm = self.solve(x, z) if ot_perm is None else ot_perm
        return Pairs(x, z[perm], torch.zeros(x.shape[0], dtype=torch.bool))


def test_the_training_loop_reads_the_coupling_entry(registered, tmp_path):
    import pandas as pd
    from gclib.train import train
    registered("sorted_ahead", SortedAhead)
    base = dict(flow="sorted_ahead", hidden=16, depth=1, emb_dim=8, batch_size=32, total_steps=6, s0=2, s1=4,
                sigma_max=5.0, checkpoint_every=0, eval_metrics=[], progress=False, device="cpu", log_every=0)
    SortedAhead.threads.clear()
    ahead = train({**base, "run_dir": str(tmp_path / "ahead")})
    assert any(name.startswith("gclib-ot") for name in SortedAhead.threads)   # solved on the prefetch thread
    SortedAhead.threads.clear()
    inline = train({**base, "ot_prefetch": False, "run_dir": str(tmp_path / "inline")})
    assert SortedAhead.threads and not any(name.startswith("gclib-ot") for name in SortedAhead.threads)
    m = pd.read_csv(ahead.metrics_csv)
    assert list(m.columns)[-1] == "rows_paired" and (m.rows_paired == 32).all() and len(m) == 6
    w_ahead, w_inline = (r.load()[1].state_dict() for r in (ahead, inline))
    assert all(torch.equal(w_ahead[k], w_inline[k]) for k in w_ahead)          # the same pairs either way
    assert not np.isnan(m.loss).any()
