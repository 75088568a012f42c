"""Each part built from its own config section (issue 32, item 2): ``coupling: {name: gc, mu: 0.5}`` is the coupling
built from that section, one config and one hash with the flat ``flow: gc, mu: 0.5``; a coupling's own setting
written in its section reaches its constructor; ``config.part`` gives a section's builder settings."""
from pathlib import Path

import pytest
import torch

from gclib.checks import ConfigError
from gclib.config import config_hash, load_config, part, run_dir_for
from gclib.couplings import Coupling, Pairs, coupling_of, make_coupling, register_coupling, unregister_coupling
from gclib.optim import make_optimizer
from gclib.train import train

from conftest import tiny_config

TINY = tiny_config(Path("unused"))
FLAT_KEYS = {k: v for k, v in TINY.items() if k != "runs_dir"}


def _yaml(path, text):
    path.write_text(text)
    return path


def _sectioned_yaml(tmp_path):
    """The tiny config written by section, each part named by ``name``."""
    return _yaml(tmp_path / "sectioned.yaml", f"""\
run: {{name: t, progress: false, checkpoint_every: 10, keep_checkpoints: 2, runs_dir: {tmp_path / 'a'}}}
data: {{name: two_gaussians, num_data: 512}}
network: {{name: mlp, hidden: 16, depth: 1, emb_dim: 8}}
coupling: {{name: gc, mu: 0.3}}
loss: {{name: consistency, sigma_max: 5.0, s0: 2, s1: 8, distance: l2}}
optim: {{name: adam, lr: 1.0e-3, batch_size: 32, total_steps: 30, ema_every: 1}}
""")


def _flat_yaml(tmp_path):
    lines = [f"{k}: {v}" for k, v in FLAT_KEYS.items()] + ["flow: gc", "mu: 0.3", f"runs_dir: {tmp_path / 'b'}"]
    return _yaml(tmp_path / "flat.yaml", "\n".join(lines).replace("False", "false") + "\n")


def test_a_sectioned_yaml_is_its_flat_config_and_trains_the_same_bits(tmp_path):
    sectioned, flat = load_config(_sectioned_yaml(tmp_path)), load_config(_flat_yaml(tmp_path))
    assert (sectioned.flow, sectioned.mu, sectioned.model, sectioned.optimizer) == ("gc", 0.3, "mlp", "adam")
    assert sectioned.replace(runs_dir="x") == flat.replace(runs_dir="x")
    assert config_hash(sectioned) == config_hash(flat)
    assert run_dir_for(sectioned).name == run_dir_for(flat).name and run_dir_for(sectioned) != run_dir_for(flat)
    a, b = train(sectioned), train(flat)
    wa, wb = torch.load(a.checkpoint, weights_only=False), torch.load(b.checkpoint, weights_only=False)
    for k in ("model", "ema"):
        assert wa[k].keys() == wb[k].keys()
        assert all(torch.equal(wa[k][n], wb[k][n]) for n in wa[k])
    rows = lambda r: [line.split(",")[:5] for line in (r.run_dir / "metrics.csv").read_text().splitlines()]
    assert rows(a) == rows(b) and len(rows(a)) == 31


def test_name_in_a_section_is_mapped_in_one_place(tmp_path):
    assert load_config(None, ["coupling.name=ot"]).flow == "ot"
    assert load_config(None, {"optim": {"name": "radam"}}).optimizer == "radam"
    assert load_config(None, {"run": {"name": "mine"}}).name == "mine"     # the run's name stays the run's name
    with pytest.raises(ConfigError, match=r"key 'flow' is given twice, in section 'coupling' \(as name\) and in "
                                          r"section 'coupling'"):
        load_config(None, {"coupling": {"name": "gc", "flow": "gc"}})
    with pytest.raises(ConfigError, match="flow='nope'"):
        load_config(None, {"coupling": {"name": "nope"}})


class Widened(Coupling):
    """IC with the noise multiplied by its own setting ``width`` (a plugin-like test coupling); records every
    ``width`` it was built with."""
    built: list = []

    def __init__(self, width: float = 1.0, mu: float = 0.5):
        if not width > 0:
            raise ValueError(f"width={width!r} must be > 0")
        self.width, self.mu = float(width), mu
        Widened.built.append(self.width)

    def pair(self, x, z, **_):
        return Pairs(x, self.width * z, torch.zeros(x.shape[0], dtype=torch.bool, device=x.device))


@pytest.fixture
def widened():
    register_coupling("widened", Widened)
    Widened.built = []
    yield Widened
    unregister_coupling("widened")


def test_a_couplings_own_setting_in_its_section_reaches_its_constructor(tmp_path, widened):
    path = _yaml(tmp_path / "w.yaml", "coupling: {name: widened, width: 3, mu: 0.25}\n")
    cfg = load_config(path, tiny_config(tmp_path, total_steps=3))
    assert cfg.flow == "widened" and cfg.coupling_options == {"width": 3}
    assert part(cfg, "coupling") == {"name": "widened", "mu": 0.25, "ot_solver": "auto", "predict_all": False,
                                     "width": 3}
    assert config_hash(cfg) == config_hash(load_config(None, {**tiny_config(tmp_path, total_steps=3),
                                                              "flow": "widened", "mu": 0.25,
                                                              "coupling_options": {"width": 3}}))
    assert config_hash(cfg) != config_hash(cfg.replace(coupling_options={"width": 2}))
    c = make_coupling(**part(cfg, "coupling"))
    assert isinstance(c, Widened) and (c.width, c.mu) == (3.0, 0.25)
    Widened.built = []
    train(cfg)
    assert Widened.built and set(Widened.built) == {3.0}   # the training run's coupling was built with width 3
    # wrong settings are one line naming them, before any work
    with pytest.raises(ConfigError, match=r"flow 'widened' has no setting 'widht'; did you mean 'width'\?"):
        load_config(None, {"coupling": {"name": "widened", "widht": 3}})
    with pytest.raises(ConfigError, match=r"flow='widened' does not build .*width=-1 must be > 0"):
        load_config(None, {"coupling": {"name": "widened", "width": -1}})
    with pytest.raises(ConfigError, match="the coupling's setting 'width' is given twice"):
        load_config(None, {"flow": "widened", "coupling_options": {"width": 2}, "coupling": {"width": 3}})
    with pytest.raises(ConfigError, match="the coupling's setting 'width' is given twice"):
        load_config(None, {"coupling": {"name": "widened", "coupling_options": {"width": 2}, "width": 3}})
    with pytest.raises(ConfigError, match="key 'coupling_options' is given twice"):
        load_config(None, {"coupling_options": {}, "coupling": {"coupling_options": {}}})
    with pytest.raises(ConfigError, match="flow 'gc' has no setting 'width'"):
        load_config(None, {"coupling": {"name": "gc", "width": 3}})
    with pytest.raises(ConfigError, match="'lr' is in section 'coupling' but belongs to section 'optim'"):
        load_config(None, {"coupling": {"lr": 1.0e-3}})


def test_part_gives_the_builders_their_sections(tmp_path):
    cfg = load_config(None, tiny_config(tmp_path, flow="gc", mu=0.3, optimizer="radam", betas=[0.8, 0.9], eps=1e-6))
    assert part(cfg, "coupling") == {"name": "gc", "mu": 0.3, "ot_solver": "auto", "predict_all": False}
    assert repr(make_coupling(**part(cfg, "coupling"))) == repr(coupling_of(cfg))
    assert part(cfg, "optim") == {"name": "radam", "lr": 1e-3, "betas": [0.8, 0.9], "weight_decay": 0.0, "eps": 1e-6}
    p = torch.nn.Parameter(torch.zeros(2))
    opt = make_optimizer(params=[p], **part(cfg, "optim"))
    assert isinstance(opt, torch.optim.RAdam) and opt.defaults["betas"] == (0.8, 0.9) and opt.defaults["eps"] == 1e-6
    with pytest.raises(ConfigError, match="section 'run' has no part built from its settings alone"):
        part(cfg, "run")


def test_the_data_and_the_network_are_built_from_their_sections(tmp_path):
    from gclib.data import load_dataset
    from gclib.models import build_model, build_network
    flat = {k: v for k, v in tiny_config(tmp_path, seed=7).items() if k not in ("dataset", "num_data")}
    cfg = load_config(None, {**flat, "data": {"name": "moons", "num_data": 256, "data_root": "somewhere"}})
    assert part(cfg, "data") == {"name": "moons", "root": "somewhere", "download": False, "n": 256}
    assert torch.equal(load_dataset(**part(cfg, "data"), seed=cfg.seed), load_dataset("moons", n=256, seed=7))
    assert part(cfg, "network") == {"name": "mlp", "hidden": 16, "depth": 1, "emb_dim": 8, "channels": 64,
                                    "channel_mult": [1, 2], "num_blocks": 2, "attn_resolutions": [],
                                    "dropout": 0.0}
    torch.manual_seed(0)
    net = build_network((2,), **part(cfg, "network"))
    torch.manual_seed(0)
    model = build_model(cfg, (2,))
    assert net.state_dict().keys() == model.net.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), model.net.state_dict().values()))
    unet = load_config(None, {"dataset": "digits", "network": {"name": "unet", "channels": 8, "channel_mult": [1],
                                                               "num_blocks": 1}})
    assert build_network((1, 8, 8), **part(unet, "network")).__class__.__name__ == "UNet"
    with pytest.raises(ConfigError, match=r"model='unet_digits' is for images of shape \(1, 8, 8\); the data gives "
                                          r"\(3, 32, 32\)"):
        build_network((3, 32, 32), "unet_digits")
