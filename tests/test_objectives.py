"""Loss objects (gclib.objectives): one factory from the config, a schedule hook, the same numbers as the keyword
form of a step, and a training loop that knows no objective or schedule by name (tests/test_training_pinned.py
pins the trained bits)."""
import inspect
import re

import pytest
import torch

import gclib.train as gtrain
from conftest import tiny_config
from gclib import schedules as S
from gclib.config import as_config
from gclib.couplings import GC, IC, OT, make_coupling
from gclib.ema import EMA
from gclib.nets import MLP
from gclib.objectives import (LOSSES, ConsistencyLoss, DenoisingLoss, ECTLoss, Loss, loss_name, make_loss,
                              prefetches_ot, register_loss)
from gclib.precond import ConsistencyModel
from gclib.rng import Streams
from gclib.step import denoising_loss, step_loss, train_step


def _model(seed=0):
    torch.manual_seed(seed)
    return ConsistencyModel(MLP(dim=2, hidden=16, depth=1, emb_dim=8), sigma_min=0.002, sigma_max=80.0)


def test_make_loss_picks_the_objective_and_its_settings(tmp_path):
    ict = make_loss(as_config(tiny_config(tmp_path, flow="gc", mu=0.3, total_steps=40)))
    assert type(ict) is ConsistencyLoss and isinstance(ict.coupling, GC) and ict.coupling.mu == 0.3
    assert (ict.distance, ict.s0, ict.s1, ict.total_steps, ict.predictor) == ("l2", 2, 8, 40, "ema")
    ect = make_loss(as_config(tiny_config(tmp_path, schedule="ect", flow="ot")), predictor="online")
    assert type(ect) is ECTLoss and isinstance(ect.coupling, OT) and ect.distance == "l2_norm"
    assert ect.predictor == "online" and ect.r_floor == 0.0 and prefetches_ot(ect) and not prefetches_ot(ict)
    earlier = make_loss(as_config(tiny_config(tmp_path, schedule="ect", ect_r_clip="sigma_min", ect_distance=None)))
    assert earlier.distance == "l2" and earlier.r_floor == 0.002 and isinstance(earlier.coupling, IC)
    den = make_loss(as_config(tiny_config(tmp_path, objective="denoising", sigma_data=0.4)))
    assert type(den) is DenoisingLoss and den.sigma_data == 0.4 and den.coupling is None and den.num_points == 0
    assert loss_name(as_config(tiny_config(tmp_path, objective="denoising", schedule="ect"))) == "denoising"
    given = make_coupling("gc", mu=0.9)
    assert make_loss(as_config(tiny_config(tmp_path)), given).coupling is given


def test_update_schedule_is_the_curriculum_and_ects_stage():
    loss = ConsistencyLoss("ic", total_steps=100, s0=10, s1=80, sigma_min=0.002, sigma_max=80.0)
    for k in (0, 24, 25, 60, 99):
        loss.update_schedule(k)
        n = S.num_points(k, 100, 10, 80)
        assert loss.num_points == n and torch.equal(loss.sigmas, S.karras_sigmas(n, 0.002, 80.0))
    fixed = ConsistencyLoss("ic", sigmas=S.karras_sigmas(11))
    fixed.update_schedule(99)
    assert fixed.num_points == 11 and len(fixed.sigmas) == 11
    ect = ECTLoss("ic", total_steps=80, stages=8)
    for k in (0, 9, 10, 79):
        ect.update_schedule(k)
        r, t = ect.draw_pairs(64, torch.Generator().manual_seed(k))
        r_ref, t_ref = S.ect_pairs(64, k, 80, torch.Generator().manual_seed(k))
        assert torch.equal(r, r_ref) and torch.equal(t, t_ref) and ect.num_points == 0


def test_loss_objects_equal_the_keyword_form():
    model, x = _model(), torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    ema = EMA(model)
    s = S.karras_sigmas(9)
    for flow in ("ic", "ot", "gc"):
        kw = dict(mu=0.5) if flow == "gc" else {}
        old, r_old = step_loss(model, x, s, flow=flow, ema=ema, generator=Streams.from_seed(3), distance="l2", **kw)
        obj = ConsistencyLoss(make_coupling(flow, **kw), sigmas=s, distance="l2")
        new, r_new = obj(model, x, generator=Streams.from_seed(3), ema=ema)
        assert torch.equal(old, new) and torch.equal(r_old.indices, r_new.indices)
        assert torch.equal(r_old.gc_mask, r_new.gc_mask)
    ect = ECTLoss("gc", total_steps=16)
    ect.update_schedule(5)
    new, r_new = ect(model, x, generator=Streams.from_seed(4), ema=ema)
    pairs = S.ect_pairs(32, 5, 16, Streams.from_seed(4).intervals)
    old, r_old = step_loss(model, x, s, flow="gc", ema=ema, distance="l2_norm", sigma_pairs=pairs,
                           generator=Streams.from_seed(4))
    assert torch.equal(old, new) and torch.equal(r_old.sigma_lo, r_new.sigma_lo) and r_old.num_points == 9
    old, _ = denoising_loss(model, x, generator=torch.Generator().manual_seed(5), sigma_data=0.4)
    new, _ = DenoisingLoss(sigma_data=0.4)(model, x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(old, new)


def test_train_step_takes_a_loss_object_or_the_old_keywords():
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(2))
    s = S.karras_sigmas(9)
    states = []
    for use_object in (True, False):
        model = _model()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        ema = EMA(model, every=1)
        for k in range(3):
            if use_object:
                train_step(model, opt, x, ConsistencyLoss("gc", sigmas=s), step=k, ema=ema,
                           generator=torch.Generator().manual_seed(k))
            else:
                train_step(model, opt, x, s, step=k, ema=ema, flow="gc", generator=torch.Generator().manual_seed(k))
        states.append(ema.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_the_training_step_names_no_objective_or_schedule():
    src = inspect.getsource(gtrain._train_step) + inspect.getsource(gtrain._loop)
    for word in (r"cfg\.objective", r"cfg\.schedule", r"\bdenoising\b", r"\bect\b", r"\bict\b", r"ect_pairs",
                 r"\bnum_points\(", r"karras_sigmas"):
        assert not re.search(word, src), word


class HalfLoss(Loss):
    """A registered objective: half the iCT consistency loss, recording its schedule calls."""
    steps: list = []

    def __init__(self, inner):
        self.inner, self.coupling = inner, inner.coupling

    @classmethod
    def from_config(cls, cfg, coupling=None, predictor=None):
        return cls(ConsistencyLoss.from_config(cfg, coupling, predictor))

    def update_schedule(self, step):
        self.steps.append(step)
        self.inner.update_schedule(step)

    @property
    def num_points(self):
        return self.inner.num_points

    def __call__(self, model, x, **kw):
        value, result = self.inner(model, x, **kw)
        return 0.5 * value, result


def test_a_registered_loss_trains_through_the_loop(tmp_path, monkeypatch, one_thread):
    import pandas as pd
    monkeypatch.setitem(LOSSES, "ict", HalfLoss)   # the config names objectives and schedules only
    half = gtrain.train(tiny_config(tmp_path, name="half", total_steps=6))
    monkeypatch.setitem(LOSSES, "ict", ConsistencyLoss)
    full = gtrain.train(tiny_config(tmp_path, name="full", total_steps=6))
    assert HalfLoss.steps == list(range(6))
    a, b = (pd.read_csv(r.metrics_csv) for r in (half, full))
    assert a["loss"][0] == pytest.approx(0.5 * b["loss"][0], rel=1e-6)  # the same first step, half the loss
    assert a["num_points"].tolist() == b["num_points"].tolist()
    with pytest.raises(ValueError, match="already registered"):
        register_loss("ect", HalfLoss)
    with pytest.raises(TypeError):
        register_loss("x", object)


def test_a_registered_loss_is_a_valid_objective():
    """config validates ``objective`` against the loss registry: a loss registered by a user is accepted by
    load_config, and unregistered again it is refused with the valid names."""
    from gclib.config import ConfigError, load_config
    from gclib.objectives import LOSSES, DenoisingLoss, register_loss
    with pytest.raises(ConfigError, match="objective='my_denoiser'"):
        load_config(None, {"objective": "my_denoiser"})

    class MyDenoiser(DenoisingLoss):
        pass
    register_loss("my_denoiser", MyDenoiser)
    try:
        assert load_config(None, {"objective": "my_denoiser"}).objective == "my_denoiser"
    finally:
        del LOSSES["my_denoiser"]
    with pytest.raises(ConfigError, match="objective='my_denoiser'"):
        load_config(None, {"objective": "my_denoiser"})
