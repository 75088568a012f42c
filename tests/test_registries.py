"""The data-set and metric registries: one list each, the old names derived from them, the quality metric chosen
by data set (never by image shape)."""
import pytest
import torch

from gclib import data, evaluation, models
from gclib.checks import ConfigError
from gclib.data import DataSet, get_dataset, register_dataset, unregister_dataset


@pytest.fixture
def fake8():
    """A registered 1x8x8 image set that is not digits, scored by exact W2."""
    x = torch.rand(64, 1, 8, 8) * 2 - 1
    ds = register_dataset(DataSet("fake8x8", lambda root, download, n, seed: x, (1, 8, 8), model="unet",
                                  metric="w2"))
    yield ds, x
    unregister_dataset("fake8x8")
    assert "fake8x8" not in data.REGISTRY and "fake8x8" not in data.IMAGE_SHAPES


def test_old_names_derive_from_the_registry():
    # the older names are the built-in entries, first in the registry (which may hold more: a plugin's)
    assert data.DATASETS == tuple(data.REGISTRY)[:len(data.DATASETS)] == data.TOYS + tuple(
        n for n in data.DATASETS if get_dataset(n).is_image)
    assert {"two_gaussians", "moons", "digits", "cifar10", "celeba64"} <= set(data.DATASETS)
    assert all(not get_dataset(n).is_image for n in data.TOYS)
    assert {n: get_dataset(n).metric for n in ("digits", "moons", "cifar10", "celeba64")} == \
        {"digits": "fd_digits", "moons": "w2", "cifar10": "fid", "celeba64": "fid"}
    # every default model is a model name, every quality metric a registered metric, every preset's shape the
    # shape of the data sets it is the default of
    from gclib.nets import MODELS
    for d in data.REGISTRY.values():
        assert d.model in MODELS and d.metric in evaluation.METRICS, d
        if d.model in models.PRESETS:
            assert models.PRESETS[d.model][1] == d.shape
    from gclib.experiments import common
    assert set(data.TOYS) | {"digits", "cifar10"} <= set(common.experiment_datasets())
    assert common.experiment_datasets() == tuple(n for n, d in data.REGISTRY.items() if d.experiments and d.family)


def test_a_registered_experiment_dataset_is_a_valid_notebook_dataset(fake8):
    import dataclasses

    from gclib.experiments import common
    with pytest.raises(ValueError, match="dataset='fake8x8' is not valid"):
        common.check_dataset("fake8x8")
    register_dataset(dataclasses.replace(fake8[0], experiments=True, family="digits"), replace=True)
    assert common.check_dataset("fake8x8") == "fake8x8"     # read live, not a list copied at import
    cfg = common.train_config("fake8x8", "gc", mu=0.3, runs_dir="runs")   # the digits preset, on this data set
    assert (cfg.dataset, cfg.flow, cfg.mu, cfg.model) == ("fake8x8", "gc", 0.3, "unet_digits")
    assert common.train_config("digits", "ic", mu=0.3, runs_dir="runs").mu == 0.5   # IC does not read mu


def test_registry_refuses_bad_entries(fake8):
    with pytest.raises(ValueError, match="'fake8x8' is already registered"):
        register_dataset(fake8[0])
    with pytest.raises(ValueError, match=r"shape=\(8, 8\) must be"):
        register_dataset(DataSet("bad", lambda *a: None, (8, 8), model="unet", metric="w2"))
    with pytest.raises(TypeError, match="takes a gclib.data.DataSet"):
        register_dataset({"name": "bad"})
    with pytest.raises(ConfigError, match=r"dataset='nope' is not valid; allowed values: 'two_diracs'"):
        data.load_dataset("nope")


def test_registered_dataset_loads_and_validates(fake8):
    ds, x = fake8
    assert data.load_dataset("fake8x8") is x and data.IMAGE_SHAPES["fake8x8"] == (1, 8, 8)
    from gclib.config import load_config
    cfg = load_config(None, dict(dataset="fake8x8", model="unet", channels=8, channel_mult=[1, 2], num_blocks=1,
                                 attn_resolutions=[]))
    assert models.data_shape(cfg) == (1, 8, 8)


def test_quality_metric_is_chosen_by_dataset_not_by_shape(fake8, monkeypatch):
    """A 1x8x8 data set that is not digits is NOT scored by the digits classifier."""
    import gclib.metrics as metrics
    from gclib.experiments.common import model_quality
    from gclib.nets import UNet
    from gclib.precond import ConsistencyModel

    def no_digits(*a, **k):
        raise AssertionError("the digits classifier scored a data set that is not digits")
    monkeypatch.setattr(metrics, "fd_digits", no_digits)
    torch.manual_seed(0)
    net = UNet(in_channels=1, resolution=8, channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=())
    ema = ConsistencyModel(net, sigma_min=0.002, sigma_data=0.5, sigma_max=5.0).eval()
    out = model_quality(ema, fake8[1], n=16, dataset="fake8x8")
    assert out["metric"] == "W2" and out["n"] == 16 and out["value"] > 0
    with pytest.raises(AssertionError, match="digits classifier"):   # the guard above can fail
        model_quality(ema, fake8[1], n=16, dataset="digits")


def test_metric_registry_is_the_one_list():
    from gclib.experiments import fid_curves
    from gclib.metrics import inception
    assert list(evaluation.METRICS) == list(evaluation.REGISTRY) == list(evaluation.NEEDS) == list(evaluation.LABELS)
    assert {"w2", "w2sq", "fd_digits", "kid_digits", "fid"} <= set(fid_curves.METRICS)
    assert fid_curves.METRICS == tuple(evaluation.CURVE_METRICS) == tuple(n for n, m in evaluation.REGISTRY.items()
                                                                           if m.curve)
    assert all(fid_curves.METRIC_LABELS[m] == evaluation.REGISTRY[m].label for m in fid_curves.METRICS)
    # what gclib.metrics.inception computes is exactly the registry's metrics that take the Inception weights
    assert set(inception.METRICS) == {"fid", "kid", "isc"} <= set(evaluation.INCEPTION_METRICS)
    assert evaluation.INCEPTION_METRICS == [n for n, m in evaluation.REGISTRY.items() if m.weights]
    assert {"w2", "w2sq"} <= set(evaluation.SAME_SIZE)
    assert evaluation.SAME_SIZE == [n for n, m in evaluation.REGISTRY.items() if m.same_size]


def test_registered_metric_is_accepted_everywhere():
    from gclib.experiments import fid_curves   # imported before the registration: it reads the registry live
    m = evaluation.Metric("mean_gap", lambda s, d: float((s.mean() - d.mean()).abs()), "mean gap", curve=True)
    evaluation.register_metric(m)
    try:
        with pytest.raises(ValueError, match="'mean_gap' is already registered"):
            evaluation.register_metric(m)
        assert evaluation.check_metrics(["mean_gap"]) == ["mean_gap"]
        out = evaluation.evaluate_samples(torch.zeros(4, 2), torch.ones(8, 2), ["mean_gap", "w2"])
        assert out["mean_gap"] == 1.0 and "w2" in out
        from gclib.config import load_config
        assert load_config(None, dict(eval_metrics=["mean_gap"])).eval_metrics == ["mean_gap"]
        assert "mean_gap" in fid_curves.METRICS and fid_curves.METRIC_LABELS["mean_gap"] == "mean gap"
        fid_curves.RULES["metric"]("metric", "mean_gap")
    finally:
        evaluation.unregister_metric("mean_gap")
    assert "mean_gap" not in evaluation.METRICS and "mean_gap" not in evaluation.CURVE_METRICS
    assert "mean_gap" not in fid_curves.METRICS


def test_a_registered_dataset_trains_through_the_config(fake8, tmp_path):
    from gclib.train import train
    res = train(dict(name="fake", dataset="fake8x8", model="unet", channels=8, channel_mult=[1, 2], num_blocks=1,
                     attn_resolutions=[], sigma_max=5.0, s0=2, s1=4, batch_size=8, total_steps=2, checkpoint_every=2,
                     progress=False, run_dir=str(tmp_path / "run")))
    _, ema, cfg = res.load("cpu")
    assert cfg.dataset == "fake8x8" and ema.data_shape == (1, 8, 8)


def test_preflight_checks_the_modules_the_dataset_needs(fake8, monkeypatch):
    import dataclasses
    from gclib import checks
    from gclib.config import load_config, preflight
    assert get_dataset("digits").requires == ("sklearn",) and get_dataset("cifar10").requires == ("torchvision",)
    seen = []
    monkeypatch.setattr(checks, "require", lambda module, what: seen.append((module, what)))
    register_dataset(dataclasses.replace(fake8[0], requires=("torchvision",)), replace=True)
    preflight(load_config(None, dict(dataset="fake8x8", model="unet", channels=8, channel_mult=[1, 2], num_blocks=1,
                                     attn_resolutions=[])))
    assert seen == [("torchvision", "dataset='fake8x8'")]


def test_a_point_set_of_another_dimension_gets_its_own_shape():
    from gclib.config import load_config
    pts = torch.randn(32, 3)
    register_dataset(DataSet("cloud3d", lambda root, download, n, seed: pts, (3,), model="mlp", metric="w2"))
    try:
        cfg = load_config(None, dict(dataset="cloud3d", model="mlp"))
        assert models.data_shape(cfg) == (3,) and models.build_model(cfg, models.data_shape(cfg)) is not None
        assert "cloud3d" not in data.IMAGE_SHAPES and not get_dataset("cloud3d").is_image
    finally:
        unregister_dataset("cloud3d")
