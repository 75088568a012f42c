"""Datasets and the seeded, endless, shardable batch iterator."""
import struct

import numpy as np
import pytest
import torch

from gclib.config import ConfigError
from gclib.data import BatchIterator, DataMissingError, digits, load_dataset, toy


@pytest.mark.parametrize("name", ["two_diracs", "two_gaussians", "8gaussians", "moons", "checkerboard"])
def test_toys_shape_and_seed(name):
    a, b, c = toy(name, 500, 0), toy(name, 500, 0), toy(name, 500, 1)
    assert a.shape == (500, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b)
    if name != "two_diracs":
        assert not torch.equal(a, c)


def test_official_toy_statistics():
    x = toy("two_gaussians", 20000, 0)
    top = x[x[:, 1] > 0]
    assert 0.45 < len(top) / len(x) < 0.55
    assert torch.allclose(top.mean(0), torch.tensor([0.0, 0.5]), atol=1e-3)
    assert abs(top.std(0).mean().item() - 0.01) < 1e-3
    assert set(toy("two_diracs", 100, 0)[:, 1].tolist()) == {-0.5, 0.5}


def test_digits_scaled():
    x = digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="dataset='svhn' is not valid"):
        load_dataset("svhn")


def test_iterator_deterministic_resumable_and_endless():
    data = torch.arange(10).float()[:, None]
    it = BatchIterator(data, 4, seed=3)
    seq = [next(it) for _ in range(7)]  # 28 draws > 2 epochs
    first_epoch = torch.cat(seq)[:10].flatten()
    assert sorted(first_epoch.tolist()) == list(range(10))  # a permutation per epoch
    it2 = BatchIterator(data, 4, seed=3)
    for _ in range(3):
        next(it2)
    state = it2.state_dict()
    it3 = BatchIterator(data, 4, seed=3)
    it3.load_state_dict(state)
    assert all(torch.equal(next(it3), s) for s in seq[3:])
    other = torch.cat([next(BatchIterator(data, 10, seed=4))]).flatten()
    assert not torch.equal(other, first_epoch)  # the seed matters


def test_sharding_splits_global_batches():
    data = torch.arange(64).float()[:, None]
    full = BatchIterator(data, 8, seed=1)
    r0, r1 = BatchIterator(data, 4, seed=1, rank=0, world_size=2), BatchIterator(data, 4, seed=1, rank=1, world_size=2)
    for _ in range(5):
        g, a, b = next(full), next(r0), next(r1)
        assert set(a.flatten().tolist()).isdisjoint(b.flatten().tolist())
        assert sorted(torch.cat([a, b]).flatten().tolist()) == sorted(g.flatten().tolist())


def test_uint8_images_scaled_per_batch():
    data = torch.tensor([0, 255], dtype=torch.uint8).reshape(2, 1, 1, 1).expand(2, 1, 8, 8).contiguous()
    x = next(BatchIterator(data, 2))
    assert x.dtype == torch.float32 and sorted(x[:, 0, 0, 0].tolist()) == [-1.0, 1.0]


def test_missing_torchvision_data_message(tmp_path):
    with pytest.raises(DataMissingError, match=r"place the files data_batch_1.*test_batch.*in .*cifar-10-batches-py/"):
        load_dataset("cifar10", root=tmp_path, download=False)
    with pytest.raises(DataMissingError, match=r"train-images-idx3-ubyte.*MNIST/raw/"):
        load_dataset("mnist", root=tmp_path, download=False)


def _idx(path, arr, magic):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes())


def test_fake_mnist_is_padded_to_32(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.random.default_rng(0).integers(1, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    for split in ("train", "t10k"):
        _idx(raw / f"{split}-images-idx3-ubyte", imgs, 0x00000803)
        _idx(raw / f"{split}-labels-idx1-ubyte", labels, 0x00000801)
    x = load_dataset("mnist", root=tmp_path)
    assert x.shape == (5, 1, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0, 2:30, 2:30], torch.from_numpy(imgs)) and x[:, :, :2].sum() == 0


def test_name_lists_live_beside_their_code():
    from gclib import config, evaluation, nets, optim
    from gclib.data import DATASETS, IMAGE_SHAPES, TOYS
    from gclib.imagesets import IMAGESETS
    from gclib.data import REGISTRY
    assert DATASETS == TOYS + tuple(n for n in DATASETS if n not in TOYS)   # the built-ins, toys first
    # the built-in entries are in the registries (which may hold more: a plugin's); the tables derive from them
    assert {"digits", "mnist", "cifar10"} | set(IMAGESETS) <= set(IMAGE_SHAPES)
    assert IMAGE_SHAPES == {n: tuple(d.shape) for n, d in REGISTRY.items() if d.is_image}
    assert config.DATASETS is DATASETS and config.MODELS is nets.MODELS and config.OPTIMIZERS is optim.OPTIMIZERS
    assert {"w2", "w2sq", "nn_dist", "fd_digits", "kid_digits", "fid", "kid", "isc"} <= set(evaluation.METRICS)
    assert list(evaluation.METRICS) == list(evaluation.REGISTRY)
    with pytest.raises(ConfigError, match="toy='spiral' is not valid; allowed values: 'two_diracs'"):
        toy("spiral")
    with pytest.raises(ValueError, match="metric='w2_exact' is not valid; allowed values: 'w2'"):
        evaluation.get_metric("w2_exact")  # a function of gclib.metrics, but not a registered metric
