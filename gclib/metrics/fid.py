"""Frechet Inception Distance: features, float64 statistics, the Frechet distance (docs/method.md section 7).

FID = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between Gaussian fits of two feature sets.
Protocol (the literature's): samples x in [-1, 1] -> clamp(-1, 1) -> (x + 1) * 127.5 -> round -> uint8,
Inception-v3 '2048' pool features with the TF-compatible 2015-12-05 weights (torch-fidelity's
FeatureExtractorInceptionV3, which resizes to 299 bilinearly as TF 1.x does), statistics accumulated in
float64 (covariance with the 1/(n - 1) normalisation, as numpy.cov). Any other extractor is accepted: a
callable uint8 (B, C, H, W) -> (B, F) features, optionally with a ``name`` attribute (stored with cached stats).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..device import resolve_device
from ..io import atomic_write

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
# torch.hub's convention: the hex string after the last '-' of the file name is a prefix of the file's SHA-256.
# The full digest is not published by torch-fidelity; only this 8-hex-digit prefix is verified.
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_NAME = "inception-v3-compat-2048"
WEIGHTS_ENV = "GCLIB_INCEPTION_WEIGHTS"   # the weights file (used when no weights_path is given)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), in float64.

    mu: (F,), sigma: (F, F) (numpy or torch). (S1 S2)^(1/2) by scipy.linalg.sqrtm; standard guard: if it is
    not finite, eps * I is added to both covariances; an imaginary part (round-off) is dropped if its
    largest entry is below 1e-3 (else ValueError).
    """
    from scipy import linalg

    mu1, mu2 = (np.atleast_1d(np.asarray(_np(m), dtype=np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(_np(s), dtype=np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"shapes do not match: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {s1.shape}, sigma2 {s2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if isinstance(covmean, tuple):  # older scipy returned (sqrtm, errest) with disp=False
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        warnings.warn(f"frechet_distance: sqrtm(S1 S2) is singular; adding {eps} * I to both covariances",
                      RuntimeWarning, stacklevel=2)
        off = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm(S1 S2)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def _np(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a


class FeatureStats:
    """Streaming mean and covariance of features in float64 (Chan et al.'s pairwise update, so 50k x 2048
    features never sit in memory). ``update(feats)`` with (B, F) features; ``mean()`` (F,); ``cov()`` (F, F)
    with the 1/(n - 1) normalisation (numpy.cov's)."""

    def __init__(self):
        self.n = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def update(self, feats) -> "FeatureStats":
        f = np.asarray(_np(feats), dtype=np.float64)
        if f.ndim != 2:
            raise ValueError(f"features must have shape (B, F); got {f.shape}")
        b = f.shape[0]
        if b == 0:
            return self
        bm = f.mean(0)
        c = f - bm
        bm2 = c.T @ c
        if self.n == 0:
            self.n, self._mean, self._m2 = b, bm, bm2
            return self
        if f.shape[1] != self._mean.shape[0]:
            raise ValueError(f"features have {f.shape[1]} columns; earlier batches had {self._mean.shape[0]}")
        n = self.n + b
        delta = bm - self._mean
        self._mean = self._mean + delta * (b / n)
        self._m2 = self._m2 + bm2 + np.outer(delta, delta) * (self.n * b / n)
        self.n = n
        return self

    def mean(self) -> np.ndarray:
        if self.n == 0:
            raise ValueError("FeatureStats is empty")
        return self._mean.copy()

    def cov(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples; have {self.n}")
        return self._m2 / (self.n - 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """The standard protocol: x in [-1, 1] -> clamp(-1, 1) -> (x + 1) * 127.5 -> round -> uint8 (same shape).
    A uint8 tensor is returned unchanged."""
    if x.dtype == torch.uint8:
        return x
    return ((x.to(torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


class _Inception:
    """uint8 (B, C, H, W) -> (B, 2048) float64 pool features; C = 1 images are repeated to 3 channels.

    Built by ``inception_extractor`` from a weights file, it pickles as that file's path (not its 100 MB of
    weights) and is rebuilt on first use where it is unpickled (a submitit job), on that machine's default device
    when none was asked for, after checking the file again."""

    def __init__(self, module: torch.nn.Module | None, device, weights_path=None, auto_device: bool = False):
        self.module, self.device, self.name = module, torch.device(device), INCEPTION_NAME
        self.weights_path, self.auto_device = weights_path, auto_device

    def __getstate__(self):
        if self.weights_path is None:
            return self.__dict__
        return {**self.__dict__, "module": None, "device": None if self.auto_device else self.device}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def _ensure(self):
        if self.module is None:
            built = inception_extractor(self.weights_path, None if self.device is None else self.device)
            self.module, self.device = built.module, built.device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._ensure()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        with torch.no_grad():
            out = self.module(x.to(self.device))
        return (out[0] if isinstance(out, (tuple, list)) else out).to(torch.float64)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_VERIFIED: dict = {}   # {(path, size, mtime_ns): digest} of weights files already checked in this process


def _where(weights_path) -> tuple[Path, str]:
    """(path, where it came from): ``weights_path`` > $GCLIB_INCEPTION_WEIGHTS > torch hub's checkpoints folder."""
    if weights_path is not None and str(weights_path):
        return Path(weights_path).expanduser(), "given"
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser(), f"from ${WEIGHTS_ENV}"
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE, "torch hub's cache, the default"


def inception_weights_path(weights_path=None) -> Path:
    """Locate and verify the TF-compatible Inception weights (torch-fidelity's ``weights-inception-2015-12-05-
    6726825d.pth``): ``weights_path`` if given, else the file named by $GCLIB_INCEPTION_WEIGHTS, else
    <torch hub dir>/checkpoints/weights-inception-2015-12-05-6726825d.pth (where torch-fidelity caches it).
    Raises FileNotFoundError or ValueError (bad checksum), one line naming the file, its expected SHA-256 prefix,
    the ways to point at it and the URL; a file is hashed once per process."""
    p, origin = _where(weights_path)
    fix = (f"Place the file at {Path(torch.hub.get_dir()) / 'checkpoints' / INCEPTION_FILE}, point to it (gclib "
           f"evaluate --weights-path FILE, fid_curves' fid.weights_path) or set {WEIGHTS_ENV}=FILE; download it on a "
           f"connected machine from {INCEPTION_URL}")
    if p.is_dir():
        p = p / INCEPTION_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"Inception weights {INCEPTION_FILE} (SHA-256 starting {INCEPTION_SHA256_PREFIX}) not found at {p} "
            f"({origin}). {fix}.")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    digest = _VERIFIED.get(key) or _sha256(p)
    if not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise ValueError(f"{p} ({origin}): SHA-256 {digest} does not start with {INCEPTION_SHA256_PREFIX} as "
                         f"{INCEPTION_FILE} must; the file is corrupt or not the TF-compatible 2015-12-05 weights. "
                         f"{fix}")
    _VERIFIED[key] = digest
    return p


def inception_extractor(weights_path=None, device=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch-fidelity's FeatureExtractorInceptionV3 ('2048' features) with verified local weights, never a
    download. device: default cuda if available, else cpu. Returns a callable uint8 (B, 3|1, H, W) -> (B, 2048)
    float64 with ``name`` = 'inception-v3-compat-2048' (picklable: see ``_Inception``)."""
    path = inception_weights_path(weights_path)
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    auto = device is None
    device = device if device is not None else resolve_device()
    module = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    return _Inception(module.to(device).eval(), device, str(path), auto)


def _batches(samples, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(samples, (torch.Tensor, np.ndarray)):
        s = samples if isinstance(samples, torch.Tensor) else torch.from_numpy(np.asarray(samples))
        for a in range(0, s.shape[0], batch_size):
            yield s[a:a + batch_size]
    else:
        for b in samples:
            b = b[0] if isinstance(b, (tuple, list)) else b  # (images, labels) from a DataLoader
            yield b if isinstance(b, torch.Tensor) else torch.from_numpy(np.asarray(b))


def stats_from_samples(samples, extractor: Callable, batch_size: int = 250, max_samples: int | None = None) -> FeatureStats:
    """Accumulate feature statistics of samples: a tensor/array (N, C, H, W) in [-1, 1] (or uint8), or an
    iterable of such batches (or of (images, labels)). Each batch goes through ``to_uint8`` then ``extractor``."""
    st = FeatureStats()
    for b in _batches(samples, batch_size):
        if max_samples is not None and st.n >= max_samples:
            break
        if max_samples is not None:
            b = b[:max_samples - st.n]
        st.update(extractor(to_uint8(b)))
    if st.n < 2:
        raise ValueError(f"need at least 2 samples for FID statistics; got {st.n}")
    return st


def save_stats(path, mu, sigma, n: int, extractor_name: str) -> Path:
    """Write mu (F,), sigma (F, F), n and the extractor name to an .npz file atomically (temp file + rename)."""
    return atomic_write(path, lambda fh: np.savez(fh, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64),
                                                  n=np.int64(n), extractor=np.array(str(extractor_name))))


def load_stats(path, extractor_name: str | None = None) -> dict:
    """Read stats written by ``save_stats``: dict(mu, sigma, n, extractor). If ``extractor_name`` is given and
    differs from the stored one, ValueError (statistics of different features are not comparable)."""
    with np.load(Path(path), allow_pickle=False) as z:
        out = dict(mu=z["mu"], sigma=z["sigma"], n=int(z["n"]), extractor=str(z["extractor"]))
    if extractor_name is not None and out["extractor"] != extractor_name:
        raise ValueError(f"{path} holds statistics of extractor {out['extractor']!r}, not {extractor_name!r}")
    return out


def _extractor_name(extractor) -> str:
    return str(getattr(extractor, "name", type(extractor).__name__))


def reference_stats(name: str, images, extractor: Callable, cache_dir, batch_size: int = 250,
                    max_samples: int | None = None) -> dict:
    """Reference statistics of a data set, cached per (data set, extractor) in
    cache_dir/<name>__<extractor name>.npz. images: as in ``stats_from_samples`` (or a zero-argument callable
    returning them, so nothing is loaded when the cache hits). Returns dict(mu, sigma, n, extractor)."""
    ex = _extractor_name(extractor)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{name}__{ex}")
    path = Path(cache_dir) / f"{safe}.npz"
    if path.is_file():
        return load_stats(path, ex)
    if callable(images) and not isinstance(images, (torch.Tensor, np.ndarray)):
        images = images()
    st = stats_from_samples(images, extractor, batch_size, max_samples)
    save_stats(path, st.mean(), st.cov(), st.n, ex)
    return load_stats(path, ex)


def fid_from_samples(samples, ref_stats: dict, extractor: Callable, batch_size: int = 250,
                     max_samples: int | None = None) -> float:
    """FID between samples (tensor/array (N, C, H, W) in [-1, 1], or an iterable of batches) and reference
    statistics dict(mu, sigma[, extractor]) (from ``reference_stats`` / ``load_stats``) with the same extractor."""
    ex = _extractor_name(extractor)
    if ref_stats.get("extractor") not in (None, ex):
        raise ValueError(f"reference statistics come from extractor {ref_stats['extractor']!r}, not {ex!r}")
    st = stats_from_samples(samples, extractor, batch_size, max_samples)
    return frechet_distance(st.mean(), st.cov(), ref_stats["mu"], ref_stats["sigma"])
