"""FID, KID and Inception Score of image samples through torch-fidelity (docs/method.md section 7; Table 1).

One pass of torch-fidelity's ``FeatureExtractorInceptionV3`` (TF-compatible 2015-12-05 weights from a LOCAL file,
``gclib.metrics.fid.inception_weights_path``: ``weights_path``, else $GCLIB_INCEPTION_WEIGHTS, else torch hub's cache;
never a download) gives both feature sets used here:
'2048' (pool features: FID, KID) and 'logits_unbiased' (1008 logits: IS). The metrics are torch-fidelity's
feature-level functions with its defaults:

- FID: ``fid_statistics_to_metric`` between Gaussian fits (float64 mean, covariance with 1/(n - 1));
- KID: ``kid_features_to_metric``, unbiased MMD^2 with the kernel (x.y / F + 1)^3 over 100 random subsets of
  1000 rows of each set (fewer rows when a set is smaller), mean and standard deviation;
- IS: ``isc_features_to_metric``, exp(E KL(p(y|x) || p(y))) over 10 splits of the shuffled samples.

Protocol (the literature's, not the authors' in-training one): samples in [-1, 1] are clipped, NOT min-max scaled,
and rounded to uint8 (``gclib.metrics.fid.to_uint8``); 50k one-step samples against the training set. The
reference side (statistics of the whole training set plus up to ``KID_REFERENCE`` pool features drawn at random
for KID) is cached as ``<cache_dir>/inception/<name>__<extractor>.npz`` (written atomically), ``cache_dir``
defaulting to ``$GCLIB_CACHE`` or ``~/.cache/gclib``.

Any other extractor can stand in (tests use a small random network): a callable uint8 (B, C, H, W) ->
dict(pool=(B, F), logits=(B, K)) (torch-fidelity's keys '2048' / 'logits_unbiased' or a (pool, logits) pair are
accepted too; a bare (B, F) tensor gives pool features only), with an optional ``name`` attribute that keys the
cache.

This is one of two FID code paths: ``gclib.metrics.fid`` (streaming float64 statistics, its own Frechet distance,
statistics-only caches) scores training curves and the digits metrics. They share the weights file, the
extractor and ``to_uint8``, and agree to about 1e-13 relative, not bit for bit; docs/extending.md says why they
are not merged yet. ``METRICS``: what this module computes, each registered in ``gclib.evaluation.REGISTRY``.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..device import resolve_device
from ..io import atomic_write
from .fid import FeatureStats, inception_weights_path, to_uint8

METRICS = ("fid", "kid", "isc")
FEATURES = ("2048", "logits_unbiased")
INCEPTION_NAME = "inception-v3-compat"
KID_SUBSETS, KID_SUBSET_SIZE, ISC_SPLITS, RNG_SEED = 100, 1000, 10, 2020   # torch-fidelity's defaults
KID_REFERENCE = 50_000   # reference pool features kept (at random) for KID; FID statistics use the whole set


def default_cache_dir() -> Path:
    from ..report import env_folder
    return env_folder("GCLIB_CACHE", Path.home() / ".cache" / "gclib")   # a file there: one line naming it


class InceptionFeatures:
    """torch-fidelity's Inception-v3 (TF 2015-12-05 weights) as uint8 (B, 3|1, H, W) -> dict(pool=(B, 2048),
    logits=(B, 1008)) float64; one-channel images are repeated to three; images are resized to 299 inside."""

    name = INCEPTION_NAME

    def __init__(self, module: torch.nn.Module, device):
        self.module, self.device = module, torch.device(device)

    def __call__(self, x: torch.Tensor) -> dict:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        with torch.no_grad():
            pool, logits = self.module(x.to(self.device))
        return {"pool": pool.to(torch.float64).cpu(), "logits": logits.to(torch.float64).cpu()}


def inception_feature_extractor(weights_path=None, device=None) -> InceptionFeatures:
    """The Inception extractor with verified local weights (``inception_weights_path``: FileNotFoundError naming
    the file and where to put it when absent). device: default cuda if available, else cpu. Built once per
    (weights, device)."""
    path = inception_weights_path(weights_path)
    device = device if device is not None else resolve_device()
    return _build_inception(str(path), str(device))


@lru_cache(maxsize=2)
def _build_inception(path: str, device: str) -> InceptionFeatures:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    module = FeatureExtractorInceptionV3(INCEPTION_NAME, list(FEATURES), feature_extractor_weights_path=path)
    return InceptionFeatures(module.to(device).eval(), device)


def _name(extractor) -> str:
    return str(getattr(extractor, "name", type(extractor).__name__))


def _as_features(out) -> dict:
    """An extractor's output -> dict(pool=(B, F) float64[, logits=(B, K) float64]) on the CPU."""
    if isinstance(out, dict):
        pool = out.get("pool", out.get("2048"))
        logits = out.get("logits", out.get("logits_unbiased"))
    elif isinstance(out, (tuple, list)):
        pool, logits = (out[0], out[1]) if len(out) > 1 else (out[0], None)
    else:
        pool, logits = out, None
    if pool is None:
        raise ValueError("the feature extractor must return pool features: dict(pool=..., logits=...)")
    res = {"pool": torch.as_tensor(pool).detach().to("cpu", torch.float64)}
    if logits is not None:
        res["logits"] = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    return res


def _batches(images, batch_size: int):
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W); got {tuple(x.shape)}")
    for a in range(0, len(x), batch_size):
        yield to_uint8(x[a:a + batch_size])


def inception_features(images, extractor: Callable | None = None, weights_path=None, batch_size: int = 250) -> dict:
    """Features of images (N, C, H, W): uint8, or float in [-1, 1] (clipped and rounded to uint8 first).
    Returns dict(pool=(N, F) float64[, logits=(N, K) float64]); F = 2048, K = 1008 for Inception."""
    extractor = extractor if extractor is not None else inception_feature_extractor(weights_path)
    parts = [_as_features(extractor(b)) for b in _batches(images, int(batch_size))]
    if not parts:
        raise ValueError("no images to extract features from")
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0] if all(k in p for p in parts)}


# ------------------------------------------------------------------------------------------- metric functions


def fid_from_features(pool: torch.Tensor, reference: dict) -> float:
    """FID between pool features (N, F) and reference statistics dict(mu, sigma) (torch-fidelity)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    if len(pool) < 2:
        raise ValueError(f"FID needs at least 2 samples; got {len(pool)}")
    st = fid_features_to_statistics(pool.double().cpu())
    ref = {"mu": np.asarray(reference["mu"], np.float64), "sigma": np.asarray(reference["sigma"], np.float64)}
    return float(fid_statistics_to_metric(st, ref, verbose=False)[KEY_METRIC_FID])


def kid_from_features(pool: torch.Tensor, reference_pool: torch.Tensor, subsets: int = KID_SUBSETS,
                      subset_size: int = KID_SUBSET_SIZE, seed: int = RNG_SEED) -> dict:
    """{"mean", "std"} of torch-fidelity's KID between (N, F) and (M, F) features: unbiased MMD^2, kernel
    (x.y / F + 1)^3, ``subsets`` subsets of min(subset_size, N, M) rows of each, drawn without replacement by
    numpy's RandomState(seed)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
    a, b = torch.as_tensor(pool).double().cpu(), torch.as_tensor(reference_pool).double().cpu()
    m = min(int(subset_size), len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 rows per set; got {len(a)} and {len(b)}")
    out = kid_features_to_metric(a, b, kid_subsets=int(subsets), kid_subset_size=m, verbose=False, rng_seed=int(seed),
                                 kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                 kid_kernel_poly_coef0=1)
    return {"mean": float(out[KEY_METRIC_KID_MEAN]), "std": float(out[KEY_METRIC_KID_STD])}


def isc_from_logits(logits: torch.Tensor, splits: int = ISC_SPLITS, seed: int = RNG_SEED) -> dict:
    """{"mean", "std"} of torch-fidelity's Inception Score of logits (N, K) over min(splits, N) splits."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
    logits = torch.as_tensor(logits).double().cpu()
    out = isc_features_to_metric(logits, splits=max(1, min(int(splits), len(logits))), shuffle=True, rng_seed=int(seed))
    return {"mean": float(out[KEY_METRIC_ISC_MEAN]), "std": float(out[KEY_METRIC_ISC_STD])}


# ------------------------------------------------------------------------------------------------ the reference


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)


def content_key(images, chunk: int = 4096) -> str:
    """A short SHA-1 of images (N, C, H, W) as uint8 (float images clipped and rounded first) and their shape."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    h = hashlib.sha1(repr(tuple(x.shape)).encode())
    for a in range(0, len(x), chunk):
        h.update(to_uint8(x[a:a + chunk]).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def reference_features(images, extractor: Callable, name: str | None = None, cache_dir=None, batch_size: int = 250,
                       kid_reference: int = KID_REFERENCE, seed: int = 0) -> dict:
    """The reference side of the metrics: dict(mu (F,), sigma (F, F) float64 over ALL images, n, kid_features
    (min(n, kid_reference), F) float32 rows drawn at random (seeded), extractor). Cached in
    ``<cache_dir>/inception/<name>__<extractor name>.npz`` (name: default a content hash of the images); images
    may be a zero-argument callable returning them, so nothing is loaded on a cache hit."""
    ex = _name(extractor)
    if name is None:
        if callable(images) and not isinstance(images, (torch.Tensor, np.ndarray)):
            images = images()
        name = "images-" + content_key(images)
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "inception" / f"{_safe(name)}__{_safe(ex)}.npz"
    if path.is_file():
        return load_reference(path, ex)
    if callable(images) and not isinstance(images, (torch.Tensor, np.ndarray)):
        images = images()
    n = len(images)
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:int(kid_reference)].sort().values
    st, kept, start = FeatureStats(), [], 0
    for b in _batches(images, int(batch_size)):
        pool = _as_features(extractor(b))["pool"]
        st.update(pool)
        sel = keep[(keep >= start) & (keep < start + len(pool))] - start
        kept.append(pool[sel].to(torch.float32))
        start += len(pool)
    if st.n < 2:
        raise ValueError(f"reference {name!r}: need at least 2 images; got {st.n}")
    kid_features = torch.cat(kept).numpy()
    atomic_write(path, lambda f: np.savez(f, mu=st.mean(), sigma=st.cov(), n=np.int64(st.n), kid_features=kid_features,
                                          extractor=np.array(ex), name=np.array(name)))
    return load_reference(path, ex)


def load_reference(path, extractor_name: str | None = None) -> dict:
    """Read a reference written by ``reference_features``; ValueError if it holds another extractor's features."""
    with np.load(Path(path), allow_pickle=False) as z:
        out = {k: z[k] for k in ("mu", "sigma", "kid_features")}
        out.update(n=int(z["n"]), extractor=str(z["extractor"]), name=str(z["name"]))
    if extractor_name is not None and out["extractor"] != extractor_name:
        raise ValueError(f"{path} holds features of extractor {out['extractor']!r}, not {extractor_name!r}")
    return out


def _resolve_reference(ref, extractor, cache_dir, batch_size, data_root) -> dict:
    if isinstance(ref, dict):
        if not {"mu", "sigma"} <= set(ref):
            raise ValueError("a reference dict needs 'mu' and 'sigma' (and 'kid_features' for KID)")
        return ref
    if isinstance(ref, (str, Path)) and str(ref).endswith(".npz"):
        if not Path(ref).is_file():
            raise FileNotFoundError(f"reference file {ref} does not exist")
        return load_reference(ref, _name(extractor))
    if isinstance(ref, str):  # a data set name: its whole training set, loaded only on a cache miss
        from ..data import load_dataset
        return reference_features(lambda: load_dataset(ref, root=data_root), extractor, name=ref, cache_dir=cache_dir,
                                  batch_size=batch_size)
    return reference_features(ref, extractor, cache_dir=cache_dir, batch_size=batch_size)


def inception_metrics(samples, dataset_or_reference, metrics: Sequence[str] = METRICS, extractor: Callable | None = None,
                      weights_path=None, cache_dir=None, batch_size: int = 250, data_root="data",
                      kid_subsets: int = KID_SUBSETS, kid_subset_size: int = KID_SUBSET_SIZE,
                      isc_splits: int = ISC_SPLITS, seed: int = RNG_SEED) -> dict:
    """FID, KID and IS of samples (N, C, H, W) in [-1, 1] (or uint8) against a reference.

    dataset_or_reference: a data set name of ``gclib.data`` (its whole training set from ``data_root``), images
    (N, C, H, W), the path of a cached reference .npz, or a dict from ``reference_features``; the reference side
    is cached under ``cache_dir``. Returns {"fid", "kid", "kid_std", "isc", "isc_std"} for the metrics asked.
    The extractor (default: Inception with local weights, ``weights_path``) is resolved before any work."""
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ValueError(f"metrics={list(metrics)!r} is not valid; allowed values: {', '.join(map(repr, METRICS))}")
    extractor = extractor if extractor is not None else inception_feature_extractor(weights_path)
    feats = inception_features(samples, extractor, batch_size=batch_size)
    return _metrics_from(feats, metrics, extractor, dataset_or_reference, cache_dir, batch_size, data_root,
                         kid_subsets, kid_subset_size, isc_splits, seed)


def _metrics_from(feats, metrics, extractor, ref, cache_dir, batch_size, data_root, kid_subsets, kid_subset_size,
                  isc_splits, seed) -> dict:
    out = {}
    if "fid" in metrics or "kid" in metrics:
        reference = _resolve_reference(ref, extractor, cache_dir, batch_size, data_root)
        if "fid" in metrics:
            out["fid"] = fid_from_features(feats["pool"], reference)
        if "kid" in metrics:
            if "kid_features" not in reference:
                raise ValueError("the reference holds no 'kid_features' for KID")
            k = kid_from_features(feats["pool"], torch.as_tensor(np.asarray(reference["kid_features"])),
                                  kid_subsets, kid_subset_size, seed)
            out.update(kid=k["mean"], kid_std=k["std"])
    if "isc" in metrics:
        if "logits" not in feats:
            raise ValueError(f"extractor {_name(extractor)!r} gives no logits: the Inception Score needs them")
        s = isc_from_logits(feats["logits"], isc_splits, seed)
        out.update(isc=s["mean"], isc_std=s["std"])
    return out


# ---------------------------------------------------------- the evaluation registry's form: fn(samples, data)

_MEMO: "OrderedDict[tuple, dict]" = OrderedDict()


def _memo_features(images, extractor) -> dict:
    """Features of images, remembered for the last few (extractor, content) pairs: ``gclib evaluate --metric fid
    --metric kid --metric isc`` calls the three metrics one by one on the same samples."""
    key = (id(extractor), _name(extractor), content_key(images))
    if key not in _MEMO:  # the entry holds the extractor too, so its id is not reused while remembered
        _MEMO[key] = (extractor, inception_features(images, extractor))
        while len(_MEMO) > 2:
            _MEMO.popitem(last=False)
    return _MEMO[key][1]


def _registry_metric(metric: str, samples, data, extractor=None, weights_path=None, cache_dir=None) -> dict:
    extractor = extractor if extractor is not None else inception_feature_extractor(weights_path)
    feats = _memo_features(samples, extractor)
    return _metrics_from(feats, (metric,), extractor, data, cache_dir, 250, "data", KID_SUBSETS, KID_SUBSET_SIZE,
                         ISC_SPLITS, RNG_SEED)


def fid_inception(samples: torch.Tensor, data: torch.Tensor, **kw) -> float:
    """FID (Inception pool features) between samples and data, both (n, C, H, W) in [-1, 1]; the data side is
    cached by content under the cache dir. kw: extractor, weights_path, cache_dir."""
    return _registry_metric("fid", samples, data, **kw)["fid"]


def kid_inception(samples: torch.Tensor, data: torch.Tensor, **kw) -> dict:
    """KID {"mean", "std"} (Inception pool features) between samples and data, as ``fid_inception``."""
    out = _registry_metric("kid", samples, data, **kw)
    return {"mean": out["kid"], "std": out["kid_std"]}


def isc_inception(samples: torch.Tensor, data: torch.Tensor = None, **kw) -> dict:
    """Inception Score {"mean", "std"} of samples (the data are not used)."""
    out = _registry_metric("isc", samples, data, **kw)
    return {"mean": out["isc"], "std": out["isc_std"]}
