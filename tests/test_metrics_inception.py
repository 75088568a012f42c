"""FID, KID and IS through torch-fidelity (gclib.metrics.inception), offline: a small random network stands in
for Inception (whose weights are not on the test machine); closed forms for KID and IS, FID of a set with itself."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gclib.metrics.fid import INCEPTION_FILE, frechet_distance, to_uint8
from gclib.metrics.inception import (InceptionFeatures, fid_from_features, fid_inception, inception_features,
                                     inception_metrics, isc_from_logits, isc_inception, kid_from_features,
                                     kid_inception, load_reference, reference_features)
from gclib.metrics.kid import mmd2_unbiased


class RandomConv:
    """Stand-in extractor: uint8 (B, C, H, W) -> pool (B, 16) and logits (B, 10) of a fixed random conv net."""
    name = "random-conv"

    def __init__(self, seed=0, feats=16, classes=10):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(feats, 3, 3, 3, generator=g) / 3
        self.head = torch.randn(feats, classes, generator=g)
        self.images_seen = 0

    def __call__(self, x):
        assert x.dtype == torch.uint8 and x.ndim == 4
        self.images_seen += len(x)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        h = F.relu(F.conv2d(x.float() / 127.5 - 1, self.w, stride=2))
        pool = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)[:, :16]
        return {"pool": pool, "logits": pool @ self.head}


def _images(n, seed, size=16, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 2 - 1 + shift).clamp(-1, 1)


def test_pipeline_with_a_stand_in_extractor_and_the_reference_cache(tmp_path):
    ex = RandomConv()
    samples, ref = _images(120, 1, shift=0.3), to_uint8(_images(200, 2))
    out = inception_metrics(samples, ref, extractor=ex, cache_dir=tmp_path, kid_subset_size=100)
    assert set(out) == {"fid", "kid", "kid_std", "isc", "isc_std"} and all(math.isfinite(v) for v in out.values())
    assert out["fid"] > 0 and out["kid"] > 0 and out["isc"] >= 1.0
    cached = list((tmp_path / "inception").glob("*.npz"))
    assert len(cached) == 1 and cached[0].name.endswith("__random-conv.npz")
    refd = load_reference(cached[0], "random-conv")
    assert refd["n"] == 200 and refd["mu"].dtype == np.float64 and refd["kid_features"].shape == (200, 16)
    # second call: the reference comes from the cache; only the samples go through the extractor
    ex.images_seen = 0
    again = inception_metrics(samples, ref, extractor=ex, cache_dir=tmp_path, kid_subset_size=100)
    assert ex.images_seen == len(samples) and again == out
    assert inception_metrics(samples, cached[0], extractor=ex, kid_subset_size=100) == out  # the .npz path
    with pytest.raises(ValueError, match="not 'other'"):
        load_reference(cached[0], "other")
    # only the metrics asked for
    assert set(inception_metrics(samples, ref, metrics=("isc",), extractor=ex, cache_dir=tmp_path)) == {"isc", "isc_std"}
    with pytest.raises(ValueError, match="allowed values: 'fid', 'kid', 'isc'"):
        inception_metrics(samples, ref, metrics=("fid", "is"), extractor=ex, cache_dir=tmp_path)


def test_reference_by_dataset_name_is_loaded_only_on_a_cache_miss(tmp_path, monkeypatch):
    ex = RandomConv()
    samples = torch.rand(50, 1, 8, 8) * 2 - 1
    out = inception_metrics(samples, "digits", metrics=("fid", "kid"), extractor=ex, cache_dir=tmp_path,
                            kid_subset_size=50)
    assert (tmp_path / "inception" / "digits__random-conv.npz").is_file()
    import gclib.data

    def no_load(*a, **k):
        raise AssertionError("the data set was loaded although its reference is cached")
    monkeypatch.setattr(gclib.data, "load_dataset", no_load)
    assert inception_metrics(samples, "digits", metrics=("fid", "kid"), extractor=ex, cache_dir=tmp_path,
                             kid_subset_size=50) == out


def test_samples_are_clipped_and_rounded_not_min_max_scaled():
    ex = RandomConv()
    x = _images(20, 3) * 0.4  # in [-0.4, 0.4]: min-max scaling would stretch it to [0, 255]
    f = inception_features(x, ex)["pool"]
    assert torch.equal(f, ex(to_uint8(x))["pool"].double())
    lo, hi = x.amin(), x.amax()
    stretched = ((x - lo) / (hi - lo) * 255).round().to(torch.uint8)
    assert not torch.allclose(f, ex(stretched)["pool"].double())
    big = x * 5  # beyond [-1, 1]: clipped
    assert torch.equal(inception_features(big, ex)["pool"], ex(to_uint8(big.clamp(-1, 1)))["pool"].double())
    feats = inception_features(x, ex, batch_size=7)  # batching does not change anything
    assert torch.allclose(feats["pool"], f) and feats["logits"].shape == (20, 10) and feats["pool"].dtype == torch.float64


def test_fid_of_a_set_with_itself_is_zero_and_matches_the_project_frechet_distance(tmp_path):
    ex = RandomConv()
    x = _images(300, 4)
    assert abs(inception_metrics(x, x, metrics=("fid",), extractor=ex, cache_dir=tmp_path)["fid"]) < 1e-6
    y = _images(300, 5, shift=0.2)
    ref = reference_features(to_uint8(x), ex, name="x", cache_dir=tmp_path)
    pool = inception_features(y, ex)["pool"].numpy()
    ours = frechet_distance(pool.mean(0), np.cov(pool, rowvar=False), ref["mu"], ref["sigma"])
    assert fid_from_features(torch.from_numpy(pool), ref) == pytest.approx(ours, rel=1e-6)


def test_kid_equals_the_project_unbiased_mmd2_on_the_same_subsets():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 8, generator=g, dtype=torch.float64), 0.5 + torch.randn(150, 8, generator=g, dtype=torch.float64)
    out = kid_from_features(a, b, subsets=5, subset_size=40, seed=7)
    rng = np.random.RandomState(7)  # torch-fidelity's draws: a's rows, then b's rows, per subset
    vals = [mmd2_unbiased(a[rng.choice(200, 40, replace=False)], b[rng.choice(150, 40, replace=False)]) for _ in range(5)]
    assert out["mean"] == pytest.approx(np.mean(vals), rel=1e-10)
    assert out["std"] == pytest.approx(np.std(vals), rel=1e-8)


def _expected_kernel(m, s, n, t, dim):
    """E (x.y / F + 1)^3 for independent x ~ N(m, s^2 I), y ~ N(n, t^2 I) in dimension F = dim."""
    a, mm, nn_ = m @ n, m @ m, n @ n
    e1 = a
    e2 = s ** 2 * t ** 2 * dim + s ** 2 * nn_ + t ** 2 * mm + a ** 2                      # tr(Mx My)
    e3 = a ** 3 + 3 * t ** 2 * a * mm + 3 * s ** 2 * a * nn_ + s ** 2 * t ** 2 * a * (3 * dim + 6)  # <E x^3, E y^3>
    return e3 / dim ** 3 + 3 * e2 / dim ** 2 + 3 * e1 / dim + 1


def test_kid_matches_its_closed_form_on_gaussian_features():
    dim = 8
    ma, mb = np.full(dim, 0.3), np.full(dim, -0.2)
    sa, sb = 1.0, 0.8
    exact = (_expected_kernel(ma, sa, ma, sa, dim) + _expected_kernel(mb, sb, mb, sb, dim)
             - 2 * _expected_kernel(ma, sa, mb, sb, dim))
    # the 1-D case agrees with the closed form in tests/test_metrics_digits.py
    m1 = (0.3, 1.0 + 0.09, 0.027 + 0.9)  # E x, E x^2, E x^3 of N(0.3, 1)
    assert _expected_kernel(np.array([0.3]), 1.0, np.array([0.3]), 1.0, 1) == pytest.approx(
        m1[2] ** 2 + 3 * m1[1] ** 2 + 3 * m1[0] ** 2 + 1)
    g = torch.Generator().manual_seed(1)
    a = torch.from_numpy(ma) + sa * torch.randn(20000, dim, generator=g, dtype=torch.float64)
    b = torch.from_numpy(mb) + sb * torch.randn(20000, dim, generator=g, dtype=torch.float64)
    out = kid_from_features(a, b, subsets=50, subset_size=500)
    assert abs(out["mean"] - exact) < 4 * out["std"] / math.sqrt(50) + 0.02 * exact, (out, exact)
    same = kid_from_features(a, a.clone(), subsets=20, subset_size=500)
    assert abs(same["mean"]) < 4 * same["std"]


def test_inception_score_closed_forms():
    uniform = isc_from_logits(torch.zeros(100, 1008))  # p(y|x) uniform: every KL is 0, IS = 1
    assert uniform["mean"] == pytest.approx(1.0, abs=1e-12) and uniform["std"] == pytest.approx(0.0, abs=1e-12)
    for k in (1, 5, 10):  # confident one-hot predictions over k classes used equally: IS = k
        logits = torch.zeros(200, 10)
        logits[torch.arange(200), torch.arange(200) % k] = 60.0
        assert isc_from_logits(logits, splits=1)["mean"] == pytest.approx(k, rel=1e-9)


def test_missing_weights_are_named_before_any_work(tmp_path):
    path = tmp_path / "nowhere" / INCEPTION_FILE
    with pytest.raises(FileNotFoundError) as e:
        inception_metrics(torch.zeros(4, 3, 8, 8), "cifar10", weights_path=path, cache_dir=tmp_path,
                          data_root=tmp_path / "no-data")
    msg = str(e.value)
    assert INCEPTION_FILE in msg and str(path) in msg and "Place the file" in msg
    assert not (tmp_path / "inception").exists()


def test_inception_adapter_repeats_grey_images_and_returns_float64():
    class FakeInception(torch.nn.Module):  # torch-fidelity's module returns the features as a tuple
        def forward(self, x):
            assert x.dtype == torch.uint8 and x.shape[1] == 3
            return torch.ones(len(x), 2048), torch.zeros(len(x), 1008)

    out = InceptionFeatures(FakeInception(), "cpu")(torch.zeros(3, 1, 32, 32, dtype=torch.uint8))
    assert out["pool"].shape == (3, 2048) and out["logits"].shape == (3, 1008)
    assert out["pool"].dtype == out["logits"].dtype == torch.float64


def test_registry_functions_share_one_feature_pass(tmp_path):
    ex = RandomConv()
    samples, data = _images(60, 6, shift=0.2), _images(80, 7)
    kw = dict(extractor=ex, cache_dir=tmp_path)
    fid = fid_inception(samples, data, **kw)
    kid = kid_inception(samples, data, **kw)
    isc = isc_inception(samples, data, **kw)
    assert ex.images_seen == len(samples) + len(data)  # samples once for all three; data once, then cached
    full = inception_metrics(samples, data, extractor=ex, cache_dir=tmp_path)
    assert fid == full["fid"] and kid == {"mean": full["kid"], "std": full["kid_std"]}
    assert isc == {"mean": full["isc"], "std": full["isc_std"]}


def test_torch_fidelity_inception_module_wiring(monkeypatch, tmp_path):
    """The real FeatureExtractorInceptionV3 (random weights: the TF weights are not on the test machine) gives pool
    features and unbiased logits in one pass, in that order."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe
    from gclib.metrics.inception import _build_inception
    monkeypatch.setattr(fe.torch, "load", lambda *a, **k: {})
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
    ex = _build_inception.__wrapped__(str(tmp_path / "random.pth"), "cpu")
    out = ex(torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8))
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert out["pool"].dtype == torch.float64 and (out["pool"] >= 0).all()  # pool features follow a ReLU
