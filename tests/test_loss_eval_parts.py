"""The loss and the in-training evaluation built from their own config sections (issue 32, item 2): ``loss: {name:
ect, ect_q: 3}`` is the flat ``schedule: ect, ect_q: 3`` (one config, one hash, the same bits); a registered loss
declares its settings and gets its own ones from its section (``loss: {name: mine, gamma: 3}``); a typo is one line
naming the closest; ``make_evaluation(**part(cfg, "eval"), ...)`` is the evaluation train.py ran before."""
from pathlib import Path

import pandas as pd
import pytest
import torch

from gclib import train as gtrain
from gclib.checks import ConfigError
from gclib.config import config_hash, load_config, part, run_dir_for
from gclib.couplings import GC, coupling_of
from gclib.evaluation import Evaluation, evaluate_model, make_evaluation
from gclib.objectives import (LOSSES, ConsistencyLoss, DenoisingLoss, ECTLoss, Loss, build_loss, loss_settings,
                              make_loss, register_loss)

from conftest import tiny_config

TINY = {k: v for k, v in tiny_config(Path("unused")).items() if k != "runs_dir"}


def _weights(result):
    ckpt = torch.load(result.checkpoint, weights_only=False)
    return {k: ckpt[k] for k in ("model", "ema")}


def _same_weights(a, b) -> bool:
    return all(a[k].keys() == b[k].keys() and all(torch.equal(a[k][n], b[k][n]) for n in a[k]) for k in a)


def test_a_sectioned_loss_yaml_is_its_flat_twin_and_trains_the_same_bits(tmp_path):
    rest = dict(TINY)
    loss = {k: rest.pop(k) for k in ("sigma_max", "s0", "s1", "distance")}
    flat = "\n".join(f"{k}: {v}" for k, v in {**rest, **loss}.items()).replace("False", "false")
    ect = "ect_q: 3.0\nect_stages: 2\nect_distance: null\n"
    (tmp_path / "flat.yaml").write_text(flat + f"\nschedule: ect\n{ect}runs_dir: {tmp_path / 'b'}\n")
    (tmp_path / "sec.yaml").write_text(
        "\n".join(f"{k}: {v}" for k, v in rest.items()).replace("False", "false") + f"\nruns_dir: {tmp_path / 'a'}\n"
        + "loss: {name: ect, " + ", ".join(f"{k}: {v}" for k, v in loss.items())
        + ", ect_q: 3.0, ect_stages: 2, ect_distance: null}\n")
    a, b = load_config(tmp_path / "sec.yaml"), load_config(tmp_path / "flat.yaml")
    assert (a.objective, a.schedule, a.ect_q, a.distance) == ("consistency", "ect", 3.0, "l2")
    assert a.replace(runs_dir="x") == b.replace(runs_dir="x") and config_hash(a) == config_hash(b)
    assert run_dir_for(a).name == run_dir_for(b).name
    # the section's settings reach the loss: ECT's keywords, ect_distance null -> distance
    assert part(a, "loss") == {"name": "ect", "distance": "l2", "sigma_min": 0.002, "sigma_max": 5.0, "p_mean": -1.1,
                               "p_std": 2.0, "q": 3.0, "stages": 2, "k": 8.0, "b": 1.0, "stage_offset": 1,
                               "r_clip": "zero"}
    ra, rb = gtrain.train(a), gtrain.train(b)
    assert _same_weights(_weights(ra), _weights(rb))
    rows = lambda r: pd.read_csv(r.metrics_csv)[["step", "loss", "num_points", "lr", "gc_fraction"]]
    assert rows(ra).equals(rows(rb)) and len(rows(ra)) == 30
    # loss: {name: ict} and {name: consistency} are the default objective: the flat default config's hash
    plain = load_config(None, TINY)
    for name in ("ict", "consistency"):
        assert config_hash(load_config(None, {**TINY, "loss": {"name": name}})) == config_hash(plain)


def test_loss_name_ect_means_the_ect_schedule_everywhere():
    flat = load_config(None, {"schedule": "ect"})
    assert load_config(None, {"loss": {"name": "ect"}}) == flat
    assert load_config(None, ["loss.name=ect"]) == flat
    assert load_config(None, {"loss": {"name": "denoising"}}).objective == "denoising"
    with pytest.raises(ConfigError, match="key 'schedule' is given twice"):
        load_config(None, {"loss": {"name": "ect", "schedule": "ict"}})
    with pytest.raises(ConfigError, match="key 'objective' is given twice"):
        load_config(None, {"objective": "denoising", "loss": {"name": "ect"}})
    for given, closest in (({"loss": {"name": "ectt"}}, "did you mean 'ect'"),
                           (["loss.name=denoisng"], "did you mean 'denoising'"),
                           ({"objective": "ect"}, "write loss: {name: ect} or schedule: ect")):
        with pytest.raises(ConfigError) as e:
            load_config(None, given)
        assert closest in str(e.value) and "\n" not in str(e.value)


def test_built_in_losses_are_built_from_their_declared_settings_as_before():
    """make_loss gives exactly the objects the former from_config built from the config's fields."""
    g = load_config(None, {"flow": "gc", "mu": 0.3, "distance": "l2", "s0": 3, "rho": 6.0, "total_steps": 77})
    old = ConsistencyLoss(coupling_of(g), predictor=g.predictor, distance=g.distance, p_mean=g.p_mean, p_std=g.p_std,
                          total_steps=g.total_steps, s0=g.s0, s1=g.s1, sigma_min=g.sigma_min, sigma_max=g.sigma_max,
                          rho=g.rho)
    for e in (g.replace(schedule="ect", ect_distance=None, ect_q=3.0), g.replace(schedule="ect", ect_r_clip="sigma_min")):
        old_e = ECTLoss(coupling_of(e), predictor=e.predictor, distance=e.ect_distance or e.distance,
                        total_steps=e.total_steps, sigma_min=e.sigma_min, sigma_max=e.sigma_max, p_mean=e.p_mean,
                        p_std=e.p_std, q=e.ect_q, stages=e.ect_stages, k=e.ect_k, b=e.ect_b,
                        stage_offset=e.ect_stage_offset, r_clip=e.ect_r_clip)
        assert repr(make_loss(e)) == repr(old_e) == repr(ECTLoss.from_config(e))
    assert make_loss(g.replace(schedule="ect", ect_distance=None)).distance == "l2"
    assert repr(make_loss(g)) == repr(old) == repr(ConsistencyLoss.from_config(g))
    assert torch.equal(make_loss(g).sigmas, old.sigmas) and isinstance(make_loss(g).coupling, GC)
    d = load_config(None, {"objective": "denoising", "sigma_data": 0.7, "p_mean": -1.0})
    assert repr(make_loss(d)) == repr(DenoisingLoss(sigma_data=0.7, p_mean=-1.0, p_std=d.p_std))
    # the coupling and predictor given to make_loss are the loss's; build_loss is the same from part()
    c, marker = coupling_of(g.replace(mu=0.9)), object()
    built = build_loss(**part(g, "loss"), coupling=c, predictor=marker, total_steps=g.total_steps)
    assert built.coupling is c and built.predictor is marker and repr(built) == repr(make_loss(g, c, predictor=marker))
    assert ConsistencyLoss.own_settings() == () and ConsistencyLoss.takes() == ("coupling", "predictor", "total_steps")
    assert DenoisingLoss.takes() == ()

    class Scaled(ConsistencyLoss):   # a subclass adding a keyword has it as its own setting
        def __init__(self, coupling="ic", *, scale: float = 1.0, **settings):
            super().__init__(coupling, **settings)
            self.scale = scale

    class Restated(Scaled):
        OWN_SETTINGS = ("scale",)

    class Same(ConsistencyLoss):
        pass
    assert Scaled.own_settings() is None and Restated.own_settings() == ("scale",) and Same.own_settings() == ()
    assert Restated.build(scale=2.0, **Restated.settings_of(g)).scale == 2.0


class GammaLoss(Loss):
    """A plugin loss: the iCT loss times its own setting ``gamma``; reads sigma_max from the loss section."""
    config_settings = {"sigma_max": "sigma_max", "distance": "distance", "s0": "s0", "s1": "s1"}
    built: list = []

    def __init__(self, coupling=None, *, gamma: float = 1.0, total_steps: int = 1, sigma_max: float = 80.0,
                 distance: str = "l2", s0: int = 10, s1: int = 1280, predictor="ema"):
        if gamma <= 0:
            raise ValueError(f"gamma={gamma!r} must be > 0")
        self.gamma, self.total_steps, self.sigma_max = gamma, total_steps, sigma_max
        self.inner = ConsistencyLoss(coupling, predictor=predictor, total_steps=total_steps, sigma_max=sigma_max,
                                     distance=distance, s0=s0, s1=s1)
        self.coupling = self.inner.coupling
        GammaLoss.built.append(self)

    def update_schedule(self, step):
        self.inner.update_schedule(step)

    @property
    def num_points(self):
        return self.inner.num_points

    def __call__(self, model, x, **kw):
        value, result = self.inner(model, x, **kw)
        return self.gamma * value, result


@pytest.fixture
def gamma_loss():
    register_loss("gamma_loss", GammaLoss)
    GammaLoss.built.clear()
    yield GammaLoss
    del LOSSES["gamma_loss"]


def test_a_plugin_loss_gets_its_own_setting_from_its_section(tmp_path, gamma_loss, one_thread):
    assert GammaLoss.own_settings() == ("gamma",) and GammaLoss.takes() == ("coupling", "predictor", "total_steps")
    cfg = load_config(None, tiny_config(tmp_path, name="g", total_steps=6, flow="gc",
                                        loss={"name": "gamma_loss", "gamma": 0.5}))
    assert cfg.objective == "gamma_loss" and cfg.loss_options == {"gamma": 0.5}
    assert part(cfg, "loss") == {"name": "gamma_loss", "sigma_max": 5.0, "distance": "l2", "s0": 2, "s1": 8,
                                 "gamma": 0.5} == loss_settings(cfg)
    loss = make_loss(cfg)
    assert (loss.gamma, loss.total_steps, loss.sigma_max, type(loss.coupling)) == (0.5, 6, 5.0, GC)
    # its own setting is part of the run's identity; none given hashes as a config without the field
    assert config_hash(cfg) != config_hash(cfg.replace(loss_options={"gamma": 0.25}))
    assert config_hash(cfg.replace(loss_options={})) == config_hash(load_config(None, {
        **{k: v for k, v in cfg.to_dict().items() if k != "loss_options"}}))
    # it trains through the loop with gamma from its section: the first step's loss is half the iCT one
    half = gtrain.train(cfg)
    assert GammaLoss.built[-1].gamma == 0.5 and GammaLoss.built[-1].total_steps == 6
    full = gtrain.train(tiny_config(tmp_path, name="f", total_steps=6, flow="gc"))
    a, b = (pd.read_csv(r.metrics_csv) for r in (half, full))
    assert a["loss"][0] == pytest.approx(0.5 * b["loss"][0], rel=1e-6)
    # its own check of the value is one ConfigError before any work
    with pytest.raises(ConfigError, match=r"loss 'gamma_loss' does not build .*gamma=-1 must be > 0"):
        load_config(None, {"loss": {"name": "gamma_loss", "gamma": -1}})


def test_a_typo_in_a_loss_setting_is_one_line_naming_the_closest(gamma_loss):
    cases = (({"loss": {"name": "gamma_loss", "gama": 3}}, "loss 'gamma_loss' has no setting 'gama'; did you mean "
                                                           "'gamma'?"),
             ({"loss": {"sigma_mn": 0.01}}, "loss 'ict' has no setting 'sigma_mn'; did you mean 'sigma_min'?"),
             ({"loss": {"name": "ect", "ect_qq": 3}}, "did you mean 'ect_q'?"),
             ({"loss": {"name": "gamma_loss", "gamma": 2, "rhoo": 7}}, "did you mean 'rho'?"))
    for given, message in cases:
        with pytest.raises(ConfigError) as e:
            load_config(None, given)
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(ConfigError, match="the loss's setting 'gamma' is given twice"):
        load_config(None, {"loss_options": {"gamma": 2}, "loss": {"name": "gamma_loss", "gamma": 3}})


def test_a_loss_that_builds_itself_is_still_called_and_reads_no_section_settings(monkeypatch):
    seen = []

    class Legacy(ConsistencyLoss):
        @classmethod
        def from_config(cls, cfg, coupling=None, predictor=None):
            seen.append(cfg.total_steps)
            return super().from_config(cfg, coupling, predictor)

    monkeypatch.setitem(LOSSES, "legacy", Legacy)
    cfg = load_config(None, {"objective": "legacy", "total_steps": 12})
    assert type(make_loss(cfg)) is Legacy and seen == [12] and Legacy.builds_itself()
    assert not ConsistencyLoss.builds_itself()
    with pytest.raises(ConfigError, match="loss 'legacy' is built by its own from_config"):
        load_config(None, {"loss": {"name": "legacy", "width": 2}})


def test_the_evaluation_part_is_what_train_built_before():
    from gclib.models import build_model
    cfg = load_config(None, {**TINY, "eval_metrics": ["nn_dist", "w2"], "eval_n": 64, "eval_every": 7, "seed": 5})
    assert part(cfg, "eval") == {"metrics": ["nn_dist", "w2"], "n": 64, "every": 7}
    ev = make_evaluation(**part(cfg, "eval"), seed=cfg.seed, sigma_max=cfg.sigma_max)
    assert ev == Evaluation(("nn_dist", "w2"), 64, 7, 5, 5.0)
    for c, extra in ((cfg, False), (cfg, True), (cfg.replace(eval_metrics=[]), True),
                     (cfg.replace(eval_metrics=[]), False), (cfg.replace(eval_every=0), False)):
        e = make_evaluation(**part(c, "eval"), seed=c.seed, sigma_max=c.sigma_max)
        for step in range(0, 30):
            for final in (False, True):   # train.py's former rule
                before = bool(extra or c.eval_metrics) and bool((c.eval_every and step % c.eval_every == 0) or final)
                assert e.due(step, final, extra) == before
    torch.manual_seed(0)
    model = build_model(cfg, (2,))
    data = torch.randn(300, 2, generator=torch.Generator().manual_seed(1))
    before = evaluate_model(model, data, cfg.eval_metrics, n=cfg.eval_n, seed=cfg.seed, sigma_max=cfg.sigma_max)
    assert ev(model, data) == before and set(before) == {"nn_dist", "w2"}
    assert make_evaluation(seed=1)(model, data) == {}
    with pytest.raises(ValueError, match="metric='nope'"):
        make_evaluation(metrics=["nope"])


def test_the_ect_preset_written_with_loss_name_ect_is_the_same_run(tmp_path):
    from gclib.config import PRESETS_DIR
    text = (PRESETS_DIR / "cifar10_ect.yaml").read_text()
    assert "\n  schedule: ect\n" in text
    (tmp_path / "flows").symlink_to(PRESETS_DIR / "flows")
    (tmp_path / "named.yaml").write_text(text.replace("\n  schedule: ect\n", "\n  name: ect\n"))
    for flow in ("ic", "gc"):
        preset = load_config("cifar10_ect", flow=flow)
        assert load_config(tmp_path / "named.yaml", flow=flow) == preset
        assert load_config("cifar10_ect", ["loss.name=ect"], flow=flow) == preset
        assert config_hash(load_config(tmp_path / "named.yaml", flow=flow)) == config_hash(preset)
        assert part(preset, "loss")["name"] == "ect" and type(make_loss(preset)) is ECTLoss
