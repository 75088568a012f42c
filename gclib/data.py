"""Datasets and a seeded, endless batch iterator.

- 2-D toys (finite point sets of ``n`` points drawn from a seed), shape (n, 2), float32:
  ``two_diracs`` (two points (0, +-0.5)), ``two_gaussians`` (the paper's official toy: two Gaussians at
  (0, +-0.5), std 0.01, the points split evenly between them), ``8gaussians`` (radius 1, std 0.05), ``moons`` (sklearn's two moons, noise 0.05,
  centred and scaled by 0.5), ``checkerboard`` (uniform on the 8 black squares of a 4x4 board on [-1, 1]^2).
- ``digits``: sklearn's 8x8 digits (ships offline, 1797 images), pixel values 0..16 scaled to [-1, 1],
  shape (N, 1, 8, 8) float32.
- ``mnist``: torchvision MNIST train split, 28x28 zero-padded (black) by 2 pixels to 32x32 so that the
  U-Net's resolution is divisible by 2^(levels-1); shape (60000, 1, 32, 32) uint8 (scaled on the fly).
- ``cifar10``: torchvision CIFAR-10 train split, (50000, 3, 32, 32) uint8, no flips.
uint8 images are turned into float32 in [-1, 1] per batch (``to_float``).
- ``celeba64``, ``imagenet32``, ``lsun_church64``: the large sets of Table 1 (``gclib.imagesets``).

``REGISTRY`` is the one place that maps a data set's name to what the rest of gclib needs to know about it
(``DataSet``: loader, shape of one item, default model preset, quality metric, training parameter family);
``register_dataset`` adds one. ``TOYS``, ``IMAGE_SHAPES`` and ``DATASETS`` are derived from it for older imports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .checks import ConfigError, DataCorruptError, DataMissingError, check_choice  # noqa: F401 (errors re-exported)
from .imagesets import IMAGESETS, load_imageset

TOY_NAMES = ("two_diracs", "two_gaussians", "8gaussians", "moons", "checkerboard")

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta")


def _gen(seed: int) -> torch.Generator:
    """A generator seeded with ``seed`` taken modulo 2**64: torch accepts seeds in [-2**63, 2**64) and stores
    them modulo 2**64, so every seed it accepted before gives the same stream, and the derived seeds of large
    run seeds (``BatchIterator``: seed * 1000003 + epoch) no longer overflow."""
    return torch.Generator().manual_seed(int(seed) % 2 ** 64)


def toy(name: str, n: int = 8192, seed: int = 0) -> torch.Tensor:
    """n points of a 2-D toy distribution, (n, 2) float32, drawn from ``seed``."""
    check_choice("toy", name, TOY_NAMES, error=ConfigError)
    g = _gen(seed)
    sign = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    if name == "two_diracs":
        return torch.stack([torch.zeros(n), 0.5 * sign], 1)
    if name == "two_gaussians":  # the authors' toy: the points split evenly between the two modes
        even = (torch.arange(n) % 2).float() * 2 - 1
        even = even[torch.randperm(n, generator=g)]
        return torch.stack([torch.zeros(n), 0.5 * even], 1) + 0.01 * torch.randn(n, 2, generator=g)
    if name == "8gaussians":
        k = torch.randint(0, 8, (n,), generator=g).float() * (2 * math.pi / 8)
        centres = torch.stack([torch.cos(k), torch.sin(k)], 1)
        return centres + 0.05 * torch.randn(n, 2, generator=g)
    if name == "moons":
        from sklearn.datasets import make_moons
        x, _ = make_moons(n, noise=0.05, random_state=int(seed) % (2 ** 32))
        x = torch.from_numpy(x).float()
        return 0.5 * (x - torch.tensor([0.5, 0.25]))
    # checkerboard: 4x4 board of 0.5-wide squares on [-1, 1]^2, black squares where (col + row) is even
    cells = torch.tensor([(c, r) for c in range(4) for r in range(4) if (c + r) % 2 == 0], dtype=torch.float32)
    idx = torch.randint(0, len(cells), (n,), generator=g)
    return -1.0 + 0.5 * (cells[idx] + torch.rand(n, 2, generator=g))


def digits() -> torch.Tensor:
    """sklearn digits, (1797, 1, 8, 8) float32 in [-1, 1] (pixel values 0..16 mapped linearly)."""
    from sklearn.datasets import load_digits
    x = load_digits().images.astype(np.float32)
    return torch.from_numpy(x / 8.0 - 1.0).reshape(-1, 1, 8, 8)


def digits_labels() -> torch.Tensor:
    """The class (0-9) of each image of ``digits()``, (1797,) int64."""
    from sklearn.datasets import load_digits
    return torch.from_numpy(load_digits().target.astype(np.int64))


def _missing(name: str, folder: Path, files, err=None) -> DataMissingError:
    extra = f" (download failed: {err})" if err else ""
    return DataMissingError(
        f"dataset {name!r} not found: place the files {', '.join(files)} in {folder}/, or set download: true "
        f"(--set download=true) on a machine with internet access{extra}")


def _corrupt(name: str, folder: Path, files, err) -> DataCorruptError:
    detail = " ".join(str(err).split())[:160] if err is not None else ""
    return DataCorruptError(
        f"dataset {name!r}: the files in {folder}/ are there but corrupt or incomplete ({', '.join(files)} fail "
        f"their check{': ' + detail if detail else ''}); replace them, or delete them and set download: true to "
        f"fetch them again")


def mnist(root="data", download: bool = False) -> torch.Tensor:
    """MNIST training images padded to 32x32: (60000, 1, 32, 32) uint8."""
    from torchvision.datasets import MNIST
    folder = Path(root) / "MNIST" / "raw"
    try:
        ds = MNIST(str(root), train=True, download=download)
    except Exception as e:  # RuntimeError (not found) or URLError (offline); other errors: files that do not parse
        present = [f for f in MNIST_FILES if (folder / f).is_file()]
        if len(present) == len(MNIST_FILES):
            raise _corrupt("mnist", folder, present, e) from None
        raise _missing("mnist", folder, MNIST_FILES, e if download else None) from None
    x = ds.data.to(torch.uint8)[:, None]
    return torch.nn.functional.pad(x, (2, 2, 2, 2))


def cifar10(root="data", download: bool = False) -> torch.Tensor:
    """CIFAR-10 training images: (50000, 3, 32, 32) uint8."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity
    folder = Path(root) / "cifar-10-batches-py"
    try:
        ds = CIFAR10(str(root), train=True, download=download)
    except Exception as e:  # not found (or offline), or files that fail their MD5 check or do not unpickle
        present = [f for f in CIFAR10_FILES if (folder / f).is_file()]
        if present:
            md5 = dict(CIFAR10.train_list + CIFAR10.test_list)
            bad = [f for f in present if f in md5 and not check_integrity(str(folder / f), md5[f])]
            if bad or len(present) == len(CIFAR10_FILES):
                raise _corrupt("cifar10", folder, bad or present, None if bad else e) from None
        raise _missing("cifar10", folder, CIFAR10_FILES, e if download else None) from None
    return torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))


# --------------------------------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class DataSet:
    """What gclib needs to know about one data set.

    load: ``load(root, download, n, seed) -> tensor`` of the whole training set (N, *shape), float32 or uint8;
    shape: one item, (2,) for the 2-D toys, (C, H, W) for images; model: the default model (a name of
    ``gclib.nets.MODELS``); metric: the quality metric that scores a model of it (a name of
    ``gclib.evaluation.METRICS``: ``w2`` for point sets, ``fd_digits`` for digits, ``fid`` for natural images);
    family: the training parameter family, the preset ``params/train/<family>.yaml`` (None: the set has none);
    experiments: the experiment notebooks (ct_cd_gap, transport_cost, toy_flows) may train on it (small sets);
    requires: the optional modules its loader imports (keys of ``gclib.checks.EXTRAS``), checked before a run."""
    name: str
    load: Callable
    shape: tuple
    model: str
    metric: str
    family: str | None = None
    experiments: bool = False
    requires: tuple = ()

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3


REGISTRY: dict[str, DataSet] = {}


def register_dataset(ds: DataSet, *, replace: bool = False) -> DataSet:
    """Add ``ds`` to ``REGISTRY`` (and, for images, to ``IMAGE_SHAPES``); a name already there is refused unless
    ``replace``."""
    if not isinstance(ds, DataSet):
        raise TypeError(f"register_dataset takes a gclib.data.DataSet, not {type(ds).__name__}")
    if ds.name in REGISTRY and not replace:
        raise ValueError(f"dataset {ds.name!r} is already registered; pass replace=True to replace it")
    if not (len(ds.shape) in (1, 3) and all(isinstance(s, int) and s > 0 for s in ds.shape)):
        raise ValueError(f"dataset {ds.name!r}: shape={ds.shape!r} must be (D,) or (C, H, W) of positive integers")
    REGISTRY[ds.name] = ds
    if ds.is_image:
        IMAGE_SHAPES[ds.name] = tuple(ds.shape)
    else:
        IMAGE_SHAPES.pop(ds.name, None)
    return ds


def unregister_dataset(name: str) -> None:
    """Remove a data set added by ``register_dataset`` (e.g. at the end of a test)."""
    REGISTRY.pop(name, None)
    IMAGE_SHAPES.pop(name, None)


def get_dataset(name: str) -> DataSet:
    """The registered ``DataSet`` called ``name``; ConfigError listing the registered names otherwise."""
    return REGISTRY[check_choice("dataset", name, REGISTRY, error=ConfigError)]


# The config fields of the data section a data set is loaded with, by ``load_dataset``'s keyword
# (``gclib.config.part(cfg, "data")``, with ``name`` its ``dataset``); the seed is the run's.
SETTINGS = {"data_root": "root", "download": "download", "num_data": "n"}


def load_dataset(name: str, *, root="data", download: bool = False, n: int = 8192, seed: int = 0) -> torch.Tensor:
    """The whole training set as one tensor (float32 for toys and digits, uint8 for mnist, cifar10 and the large
    image sets); ``n`` and ``seed`` are used by the 2-D toys only."""
    return get_dataset(name).load(root, download, n, seed)


IMAGE_SHAPES: dict = {}   # name -> (C, H, W) of every registered image data set (kept by register_dataset)

for _name in TOY_NAMES:
    register_dataset(DataSet(_name, lambda root, download, n, seed, _name=_name: toy(_name, n, seed), (2,),
                             model="mlp", metric="w2", family="toy", experiments=True,
                             requires=("sklearn",) if _name == "moons" else ()))
register_dataset(DataSet("digits", lambda root, download, n, seed: digits(), (1, 8, 8), model="unet_digits",
                         metric="fd_digits", family="digits", experiments=True, requires=("sklearn",)))
register_dataset(DataSet("mnist", lambda root, download, n, seed: mnist(root, download), (1, 32, 32), model="unet",
                         metric="fid", requires=("torchvision",)))
register_dataset(DataSet("cifar10", lambda root, download, n, seed: cifar10(root, download), (3, 32, 32),
                         model="unet_cifar10", metric="fid", family="cifar10", experiments=True,
                         requires=("torchvision",)))
for _name, _model, _requires in (("celeba64", "unet_celeba64", ("torchvision",)), ("imagenet32", "unet_imagenet32", ()),
                                 ("lsun_church64", "unet_celeba64", ("torchvision",))):
    register_dataset(DataSet(_name, lambda root, download, n, seed, _name=_name: load_imageset(_name, root, download),
                             IMAGESETS[_name], model=_model, metric="fid", family=_name, requires=_requires))

# Older names, derived from the registry of the built-in sets (the registry itself is the live list).
TOYS = tuple(n for n, d in REGISTRY.items() if not d.is_image)
DATASETS = tuple(REGISTRY)


def experiment_datasets() -> tuple:
    """The data sets the experiment notebooks can train on (``DataSet.experiments``, each with a training
    parameter family, the preset ``params/train/<family>.yaml``), in registry order."""
    return tuple(n for n, d in REGISTRY.items() if d.experiments and d.family is not None)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) -> float32 in [-1, 1]; float tensors pass through as float32."""
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    return x.float()


class BatchIterator:
    """Seeded, shuffled, endless batches of ``data`` (N, ...), sharded DistributedSampler-style.

    Conceptually the index stream is the concatenation of permutations perm_0, perm_1, ... of range(N), perm_e
    drawn from seed (seed, e). Rank r of W takes positions r, r + W, r + 2W, ... of that stream, in batches of
    ``batch_size`` (the PER-RANK batch), so the ranks see disjoint samples of each global batch.
    The whole state is the number of batches drawn (``state_dict``), so resuming is exact.
    """

    def __init__(self, data: torch.Tensor, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        self.data, self.batch_size, self.seed = data, int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.batches = 0
        self._epoch, self._perm = -1, None

    def _perm_of(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = _gen(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.data), generator=g)
        return self._perm

    def indices(self, batch_number: int) -> torch.Tensor:
        """Indices into data of batch ``batch_number`` on this rank."""
        n, b, w = len(self.data), self.batch_size, self.world_size
        start = batch_number * b * w + self.rank
        pos = start + w * torch.arange(b)
        out = torch.empty(b, dtype=torch.long)
        for e in torch.unique(pos // n).tolist():
            sel = (pos // n) == e
            out[sel] = self._perm_of(int(e))[pos[sel] % n]
        return out

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        x = self.data[self.indices(self.batches)]
        self.batches += 1
        return to_float(x)

    def state_dict(self) -> dict:
        return {"batches": self.batches, "seed": self.seed, "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        self.batches = int(state["batches"])
