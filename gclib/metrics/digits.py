"""A feature space for 8x8 digits and its Frechet distance and KID: the CPU stand-in for FID (Figs. 4-5).

Pixel-space W2 on a few hundred 64-dimensional samples rewards blur (digits shrunk toward their mean score
better than fresh real digits). FID's remedy is to compare samples in the feature space of a classifier; for
sklearn's 8x8 digits no pre-trained network exists, so the project trains a small one:

- data: sklearn's digits (1797 images, 10 classes), a fixed seeded split: ``TEST_SIZE`` images held out;
- network: two 3x3 convolution stages (32 and 64 channels, max-pooling to 2x2), a 128-unit fully connected
  layer (the features, after its ReLU), a linear read-out to 10 classes;
- training: AdamW, random one-pixel shifts, a fixed seed; about 15 s on 2 CPU cores;
- **frozen weights**: as FID freezes Inception, the trained weights ship with the package
  (``digits_classifier.pt`` beside this file, checked against ``WEIGHTS_SHA256`` on every load), so FD_digits is
  one function on every machine. CPU training is not bit-reproducible across machines, so retraining gives a
  slightly different metric; ``python -m gclib.metrics.digits --regenerate`` retrains and rewrites the file
  (and prints the new checksum to put in ``WEIGHTS_SHA256``) and must be followed by re-running every result.

``digits_features()`` returns the frozen extractor (images (B, 1, 8, 8) in [-1, 1], clipped to that range as
the FID protocol clips samples, -> (B, 128) float64 features). ``fd_digits`` is the Frechet distance between
Gaussian fits of two feature sets (``gclib.metrics.fid.frechet_distance``), ``kid_digits`` the kernel
distance (``gclib.metrics.kid``). Lower is better for both; both compare a model's samples with the data.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..io import atomic_write
from .fid import frechet_distance
from .kid import kid

TEST_SIZE = 360
MIN_ACCURACY = 0.97
SETTINGS = {"version": 1, "channels": [32, 64], "features": 128, "epochs": 60, "batch_size": 64, "lr": 2e-3,
            "weight_decay": 1e-4, "dropout": 0.3, "seed": 0, "split_seed": 0, "test_size": TEST_SIZE, "shift": 1}


class DigitsClassifierError(RuntimeError):
    """The digits classifier could not be trained to the required held-out accuracy."""


class DigitsNet(nn.Module):
    """Small CNN for (B, 1, 8, 8) images; ``features`` gives the penultimate layer (B, F)."""

    def __init__(self, channels=(32, 64), features: int = 128, dropout: float = 0.3, classes: int = 10):
        super().__init__()
        c1, c2 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(c2 * 4, features)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(features, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.features(x)))


def digits_split(split_seed: int = 0, test_size: int = TEST_SIZE):
    """(x_train, y_train, x_test, y_test): sklearn's digits in [-1, 1], (N, 1, 8, 8), split by a seeded
    permutation (the same split everywhere in the project)."""
    from ..data import digits, digits_labels
    x, y = digits(), digits_labels()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(int(split_seed)))
    test, train = perm[:test_size], perm[test_size:]
    return x[train], y[train], x[test], y[test]


def _shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Random translations by up to ``max_shift`` pixels, background (-1) filled in."""
    if max_shift == 0:
        return x
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    d = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=g)
    h, w = x.shape[-2:]
    return torch.stack([pad[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(d.tolist())])


def accuracy(net: DigitsNet, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net.eval()(x).argmax(1) == y).float().mean())


def train_classifier(settings: dict = SETTINGS) -> tuple[DigitsNet, float]:
    """Train the classifier from scratch; returns (net in eval mode, held-out accuracy)."""
    s = settings
    x_tr, y_tr, x_te, y_te = digits_split(s["split_seed"], s["test_size"])
    g = torch.Generator().manual_seed(int(s["seed"]))
    with torch.random.fork_rng():
        torch.manual_seed(int(s["seed"]))
        net = DigitsNet(tuple(s["channels"]), s["features"], s["dropout"])
        opt = torch.optim.AdamW(net.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
        steps = s["epochs"] * (len(x_tr) // s["batch_size"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s["lr"], total_steps=steps)
        net.train()
        for _ in range(s["epochs"]):
            perm = torch.randperm(len(x_tr), generator=g)
            for a in range(0, len(perm) - s["batch_size"] + 1, s["batch_size"]):
                idx = perm[a:a + s["batch_size"]]
                loss = F.cross_entropy(net(_shift(x_tr[idx], s["shift"], g)), y_tr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return net.eval(), accuracy(net, x_te, y_te)


WEIGHTS_PATH = Path(__file__).with_name("digits_classifier.pt")
WEIGHTS_SHA256 = "7ef5c4977f2d2c7d67f4470ffe0d373a0c5a38d630bf70c1dd69740f001fec63"


class DigitsWeightsError(RuntimeError):
    """The shipped classifier weights are missing or are not the frozen ones (checksum mismatch)."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_classifier(path=None, sha256: str | None = WEIGHTS_SHA256) -> tuple[DigitsNet, float]:
    """The frozen classifier and its held-out accuracy (as recorded when it was trained), read from ``path``
    (default: the weights shipped with gclib) after checking its SHA-256 (``sha256=None`` skips the check, for
    a file you trained yourself)."""
    path = Path(path or WEIGHTS_PATH)
    if not path.is_file():
        raise DigitsWeightsError(f"{path}: the frozen digits classifier is missing (it ships with gclib; "
                                 f"`python -m gclib.metrics.digits --regenerate` trains a new one)")
    if sha256 is not None and _sha256(path) != sha256:
        raise DigitsWeightsError(f"{path}: SHA-256 {_sha256(path)[:16]}... is not the frozen classifier's "
                                 f"{sha256[:16]}...; FD_digits would not be comparable with the committed results")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    s = blob["settings"]
    net = DigitsNet(tuple(s["channels"]), s["features"], s["dropout"])
    net.load_state_dict(blob["state_dict"])
    return net.eval(), float(blob["accuracy"])


def regenerate(path=None, settings: dict = SETTINGS) -> str:
    """Train the classifier from scratch and write it to ``path`` (default: the shipped file); returns its
    SHA-256. The file is written only when the held-out accuracy reaches ``MIN_ACCURACY``."""
    net, acc = train_classifier(settings)
    if acc < MIN_ACCURACY:
        raise DigitsClassifierError(f"the digits classifier reached {acc:.3f} held-out accuracy, below the "
                                    f"{MIN_ACCURACY} its features need; settings {settings}")
    buf = io.BytesIO()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "accuracy": acc, "settings": settings}, buf)
    path = Path(path or WEIGHTS_PATH)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return _sha256(path)


class DigitsFeatures(nn.Module):
    """Frozen feature extractor: (B, 1, 8, 8) in [-1, 1] (clipped) -> (B, F) float64 penultimate features."""

    def __init__(self, net: DigitsNet, accuracy: float):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.accuracy = accuracy
        self.name = f"digits-cnn-{WEIGHTS_SHA256[:12]}"

    @torch.no_grad()
    def forward(self, images: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
        x = torch.as_tensor(images).float().cpu()
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"digits features need images of shape (B, 1, 8, 8); got {tuple(x.shape)}")
        x = x.clamp(-1.0, 1.0)
        return torch.cat([self.net.features(b) for b in x.split(batch_size)]).double()


@lru_cache(maxsize=1)
def digits_features() -> DigitsFeatures:
    """The frozen digits feature extractor (the weights shipped with gclib, checksum verified)."""
    return DigitsFeatures(*load_classifier())


def _stats(f: torch.Tensor):
    f = f.numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def fd_digits(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """Frechet distance between the digits features of ``samples`` and ``reference`` (both (n, 1, 8, 8))."""
    ex = digits_features()
    with warnings.catch_warnings():  # dead ReLU units make the covariances singular; sqrtm copes (see fid.py)
        warnings.filterwarnings("ignore", message="Matrix is singular")
        return frechet_distance(*_stats(ex(samples)), *_stats(ex(reference)))


def kid_digits(samples: torch.Tensor, reference: torch.Tensor, subsets: int = 50, subset_size: int = 1000,
               seed: int = 0) -> float:
    """KID (cubic polynomial kernel MMD^2, unbiased, averaged over subsets) in the digits feature space."""
    ex = digits_features()
    return kid(ex(samples), ex(reference), subsets=subsets, subset_size=subset_size, seed=seed)["mean"]


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="The frozen digits classifier behind FD_digits.")
    ap.add_argument("--regenerate", action="store_true", help="retrain it and rewrite the shipped weights")
    ap.add_argument("--out", default=None, help="write the weights here instead of the shipped file")
    args = ap.parse_args()
    if args.regenerate:
        digest = regenerate(args.out)
        print(f"wrote {args.out or WEIGHTS_PATH}; SHA-256 {digest}: set WEIGHTS_SHA256 to it and re-run the results")
    else:
        net, acc = load_classifier()
        print(f"{WEIGHTS_PATH}: SHA-256 {WEIGHTS_SHA256}, held-out accuracy {acc:.4f}")
