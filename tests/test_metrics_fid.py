"""gclib.metrics.fid: Frechet distance, streaming statistics, the uint8 protocol, FID end to end offline."""
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from gclib.metrics import (FeatureStats, fid_from_samples, frechet_distance, inception_extractor, load_stats,
                           reference_stats, save_stats, stats_from_samples, to_uint8)
from gclib.metrics.fid import INCEPTION_FILE, INCEPTION_SHA256_PREFIX, INCEPTION_URL, WEIGHTS_ENV


pytestmark = pytest.mark.usefixtures("one_thread")


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    expect = ((m1 - m2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expect, rel=1e-10)
    assert frechet_distance(torch.tensor(m1), torch.tensor(np.diag(v1)), m1, np.diag(v1)) == pytest.approx(0, abs=1e-10)


def test_frechet_distance_matches_direct_scipy():
    rng = np.random.default_rng(1)
    d = 12
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    r2 = scipy.linalg.sqrtm(s2).real  # symmetric form tr((S2^1/2 S1 S2^1/2)^1/2) = tr((S1 S2)^1/2)
    direct = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(r2 @ s1 @ r2).real)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(direct, rel=1e-8)
    # singular covariances (rank 1): the guard keeps the result finite and close to the exact value
    u = rng.normal(size=(d, 1))
    val = frechet_distance(m1, u @ u.T, m1, u @ u.T)
    assert np.isfinite(val) and abs(val) < 1e-4


def test_feature_stats_streaming_equals_numpy():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(517, 7)) * 3 + 1e4  # a large offset tests the centred (Chan) update
    st = FeatureStats()
    for a, b in [(0, 1), (1, 100), (100, 101), (101, 400), (400, 517)]:
        st.update(torch.from_numpy(f[a:b]).float() if a == 100 else f[a:b])
    f[100] = np.float32(f[100])  # the float32 row as it was accumulated
    assert st.n == 517
    assert np.allclose(st.mean(), f.mean(0), rtol=0, atol=1e-9)
    assert np.allclose(st.cov(), np.cov(f.T), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError):
        FeatureStats().cov()


def test_to_uint8_protocol():
    x = torch.tensor([-2.0, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 3.0, 0.0039])
    expect = np.clip(np.round((np.clip(x.numpy(), -1, 1) + 1) * 127.5), 0, 255).astype(np.uint8)
    out = to_uint8(x)
    assert out.dtype == torch.uint8 and out.tolist() == expect.tolist()
    assert out.tolist() == [0, 0, 0, 128, 191, 255, 255, 255, 128]
    u = torch.tensor([3, 200], dtype=torch.uint8)
    assert to_uint8(u) is u


class TinyExtractor(nn.Module):
    """A random conv feature extractor: uint8 (B, 3, H, W) -> (B, 6)."""
    name = "tiny-random-conv"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, stride=2)

    @torch.no_grad()
    def forward(self, x):
        assert x.dtype == torch.uint8
        return torch.tanh(self.conv(x.float() / 255.0)).mean((2, 3))


def test_fid_pipeline_end_to_end_offline(tmp_path):
    ext = TinyExtractor()
    g = torch.Generator().manual_seed(3)
    ref_images = torch.rand(96, 3, 8, 8, generator=g) * 2 - 1
    ref = reference_stats("toyset", ref_images, ext, tmp_path, batch_size=40)
    cache = tmp_path / "toyset__tiny-random-conv.npz"
    assert cache.is_file() and ref["n"] == 96 and ref["extractor"] == "tiny-random-conv"
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write left no temporary file

    def boom():
        raise AssertionError("the cache must be used")
    again = reference_stats("toyset", boom, ext, tmp_path)
    assert np.array_equal(again["mu"], ref["mu"]) and np.array_equal(again["sigma"], ref["sigma"])

    # the same images give FID 0; clipped out-of-range samples are the same images after the protocol
    assert fid_from_samples(ref_images, ref, ext, batch_size=32) == pytest.approx(0.0, abs=1e-8)
    assert fid_from_samples(ref_images * 1.0000001, ref, ext) == pytest.approx(0.0, abs=1e-8)
    # other samples: equal to a by-hand computation; an iterable of batches gives the same number
    samples = (torch.rand(80, 3, 8, 8, generator=g) * 2.4 - 1.2)
    feats = ext(to_uint8(samples)).double().numpy()
    hand = frechet_distance(feats.mean(0), np.cov(feats.T), ref["mu"], ref["sigma"])
    fid = fid_from_samples(samples, ref, ext, batch_size=25)
    assert fid > 1e-4 and fid == pytest.approx(hand, rel=1e-8)
    assert fid_from_samples(iter(samples.split(30)), ref, ext) == pytest.approx(fid, rel=1e-10)
    assert fid_from_samples(samples.numpy(), ref, ext) == pytest.approx(fid, rel=1e-10)
    # statistics of another extractor are refused
    with pytest.raises(ValueError, match="extractor"):
        load_stats(cache, "inception-v3-compat-2048")
    other = dict(ref, extractor="something-else")
    with pytest.raises(ValueError, match="extractor"):
        fid_from_samples(samples, other, ext)
    st = stats_from_samples(samples, ext, max_samples=50)
    assert st.n == 50
    p = save_stats(tmp_path / "sub" / "s.npz", st.mean(), st.cov(), st.n, "x")
    assert load_stats(p)["n"] == 50


def test_missing_inception_weights_error_is_clear(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / INCEPTION_FILE
    with pytest.raises(FileNotFoundError) as e:
        inception_extractor(weights_path=missing)
    msg = str(e.value)
    assert str(missing) in msg and INCEPTION_URL in msg
    # default location: torch hub's checkpoints folder
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError) as e:
        inception_extractor()
    assert str(Path(tmp_path / "hub" / "checkpoints" / INCEPTION_FILE)) in str(e.value)
    # a file that is not the weights fails the SHA-256 check
    bad = tmp_path / INCEPTION_FILE
    bad.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="SHA-256"):
        inception_extractor(weights_path=bad)


def test_fid_hook_of_the_sweeps_names_the_weights_file_before_any_work(tmp_path, monkeypatch):
    """fid_curves' FID hook (fid_eval_fn) resolves the weights before the reference statistics and before training:
    one line naming the file, its checksum prefix and where it was looked for."""
    from gclib.experiments import fid_curves
    missing = tmp_path / "nowhere" / INCEPTION_FILE
    kw = dict(data_root=tmp_path / "no-data", cache_dir=tmp_path / "stats")
    with pytest.raises(FileNotFoundError) as e:
        fid_curves.fid_eval_fn("cifar10", weights_path=missing, **kw)
    msg = str(e.value)
    assert "\n" not in msg and f"{INCEPTION_FILE} (SHA-256 starting {INCEPTION_SHA256_PREFIX}) not found at {missing}" in msg
    assert not (tmp_path / "stats").exists()
    monkeypatch.setenv(WEIGHTS_ENV, str(missing))   # weights_path None: the environment variable names the file
    with pytest.raises(FileNotFoundError, match=rf"not found at {missing} \(from \${WEIGHTS_ENV}\)"):
        fid_curves.fid_eval_fn("cifar10", **kw)
    # a sweep scored by FID stops there, before any run trains
    monkeypatch.setattr(fid_curves, "train_sweep", lambda *a, **k: pytest.fail("a run trained without FID weights"))
    sw = fid_curves.make_sweep("t", "params/train/toy.yaml", {"runs_dir": str(tmp_path / "runs")}, "fid", [0],
                               [0.5], fid={"n": 10, "weights_path": str(missing), "data_root": str(tmp_path)},
                               root=Path(__file__).parents[1])
    with pytest.raises(FileNotFoundError, match=INCEPTION_FILE):
        fid_curves.run_sweep(sw)


def test_inception_extractor_pickles_as_its_weights_path_and_is_rebuilt_on_first_use(tmp_path, monkeypatch):
    """A sweep's FID hook travels to a submitit job: the extractor pickles as its (verified) weights path, not 100 MB
    of weights, and is rebuilt where it is used, checking the file again."""
    import pickle
    import torch_fidelity.feature_extractor_inceptionv3 as fe
    from gclib.metrics import fid as fid_module
    monkeypatch.setattr(fe.torch, "load", lambda *a, **k: {})   # random weights: the TF weights are not here
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
    weights = tmp_path / INCEPTION_FILE
    weights.write_bytes(b"stand-in")
    st = weights.stat()
    monkeypatch.setitem(fid_module._VERIFIED, (str(weights.resolve()), st.st_size, st.st_mtime_ns),
                        INCEPTION_SHA256_PREFIX + "0" * 56)
    ex = inception_extractor(weights, device="cpu")
    blob = pickle.dumps(ex)
    assert len(blob) < 10_000
    copy = pickle.loads(blob)
    assert copy.module is None and copy.name == ex.name
    feats = copy(torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8))
    assert feats.shape == (2, 2048) and feats.dtype == torch.float64 and copy.module is not None
    weights.unlink()   # the job's machine lacks the file: named when the extractor is first used
    with pytest.raises(FileNotFoundError, match=INCEPTION_FILE):
        pickle.loads(blob)(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
