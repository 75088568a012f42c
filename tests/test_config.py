"""Run configuration: YAML + overrides, validation messages, hashing, params/train files."""
from pathlib import Path

import pytest
import yaml

from gclib.config import Config, ConfigError, config_hash, from_dict, load_config, parse_overrides, run_dir_for

PARAMS = Path(__file__).resolve().parents[1] / "params" / "train"


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError, match=r"unknown configuration key 'batchsize'.*'batch_size'"):
        from_dict({"batchsize": 4})
    with pytest.raises(ConfigError, match="'lerning_rate'"):
        load_config(None, ["lerning_rate=1"])


@pytest.mark.parametrize("key,value,pattern", [
    ("batch_size", "abc", r"batch_size='abc' has the wrong type; expected int"),
    ("batch_size", 0, r"batch_size=0 is out of range; allowed: >= 1"),
    ("mu", 1.5, r"mu=1.5 is out of range; allowed: \[0, 1\]"),
    ("flow", "xx", r"flow='xx' is not valid; allowed values: 'ic', 'ot', 'gc'"),
    ("optimizer", "sgd", r"'adam', 'radam', 'lion'"),
    ("sigma_max", 0.001, r"sigma_max=0.001 is out of range"),
    ("resume", "maybe", r"resume='maybe' has the wrong type; expected bool"),
    ("predictor", "teacher", r"predictor='teacher' is not valid"),
    ("dropout", 1.0, r"dropout=1.0 is out of range"),
])
def test_bad_values_are_named(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        from_dict({key: value})


def test_overrides_are_coerced(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\nlr: 1.0e-3\nflow: ic\n")
    cfg = load_config(p, ["lr=1e-4", "flow=gc", "mu=0.3", "channel_mult=1,2,2", "resume=false",
                          "eval_metrics=w2,nn_dist", "betas=[0.9, 0.95]", "run_dir=null", "total_steps=2e3"])
    assert cfg.lr == 1e-4 and cfg.flow == "gc" and cfg.mu == 0.3 and cfg.total_steps == 2000
    assert cfg.channel_mult == [1, 2, 2] and cfg.resume is False and cfg.eval_metrics == ["w2", "nn_dist"]
    assert cfg.betas == [0.9, 0.95] and cfg.run_dir is None
    assert load_config(p, {"flow": "ot"}).flow == "ot"  # notebook parameters
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])


def test_model_dataset_mismatch():
    with pytest.raises(ConfigError, match="model='unet_digits' needs an image dataset"):
        from_dict({"dataset": "moons", "model": "unet_digits"})


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_hash_tracks_training_settings_only():
    a = Config(name="a", total_steps=10)
    assert config_hash(a) == config_hash(a.replace(name="b", progress=False, checkpoint_every=3, runs_dir="x"))
    assert config_hash(a) != config_hash(a.replace(lr=2e-4))
    assert config_hash(a) != config_hash(a.replace(flow="gc"))
    assert run_dir_for(a) == Path("runs") / f"a-{config_hash(a)}"
    assert run_dir_for(a.replace(run_dir="here")) == Path("here")


def test_params_train_files_load_and_differ_only_in_flow():
    allowed = {"name", "flow", "mu", "predictor", "dropout"}
    for family in ("toy", "digits", "cifar10"):
        cfgs = {f: yaml.safe_load((PARAMS / f"{family}_{f}.yaml").read_text()) for f in ("ic", "ot", "gc")}
        for f, d in cfgs.items():
            cfg = load_config(PARAMS / f"{family}_{f}.yaml")
            assert cfg.flow == f
        keys = set().union(*cfgs.values())
        differing = {k for k in keys if len({repr(c.get(k)) for c in cfgs.values()}) > 1}
        assert differing <= allowed, (family, differing)
        if family != "cifar10":
            assert "dropout" not in differing
    c = load_config(PARAMS / "cifar10_gc.yaml")
    assert (c.batch_size, c.optimizer, c.lr, c.total_steps, c.model, c.ema_decay, c.ema_every, c.s0, c.s1,
            c.distance, c.mu, c.predictor, c.dropout) == (512, "lion", 1e-4, 100_000, "unet_cifar10", 0.9999, 5,
                                                           10, 1280, "pseudo_huber", 0.5, "ema", 0.0)
    assert load_config(PARAMS / "cifar10_ic.yaml").dropout == 0.3
    t = load_config(PARAMS / "toy_gc.yaml")
    assert (t.dataset, t.sigma_max, t.s1, t.distance, t.optimizer, t.lr, t.batch_size, t.mu) == \
        ("two_gaussians", 5.0, 100, "l2", "adam", 5e-5, 256, 1.0)
