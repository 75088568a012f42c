"""The large image sets of the paper's Table 1, loaded from local files (docs/table1.md says where to put them).

Each loader returns the whole training set as ONE uint8 tensor (N, 3, H, W) (``gclib.data.to_float`` maps it to
[-1, 1] per batch); shapes in ``IMAGESETS``:

- ``celeba64``: CelebA's aligned faces (``img_align_celeba/*.jpg``), the train split of
  ``list_eval_partition.txt`` (162,770 images), read through ``torchvision.datasets.CelebA``; each image's shorter
  side resized to 64 with Lanczos, then a centre 64x64 crop (the authors' preprocessing).
- ``imagenet32``: the box-downsampled ImageNet 32x32 of Chrabaszcz et al. 2017 (``Imagenet32_train_npz.zip``:
  ``train_data_batch_1.npz`` .. ``train_data_batch_10.npz``, key ``data`` (n, 3072) uint8 in CHW order; 1,281,167
  images). The authors resized ImageNet-1k themselves; their FIDs are therefore not comparable with the
  literature's numbers on this standard version (nor exactly with runs on it).
- ``lsun_church64``: LSUN church_outdoor train (126,227 images), from an image folder (JPEG/PNG/WEBP files, any
  depth, in sorted path order) or from LSUN's LMDB folder ``church_outdoor_train_lmdb`` (needs the ``lmdb``
  package); shorter side resized to 64 with Lanczos, centre crop 64x64.

Decoding and resizing 10^5 JPEGs takes minutes, so celeba64 and lsun_church64 are preprocessed once and cached
as ``<folder>/<name>_train_uint8.npy`` (written atomically; delete it to rebuild); with the cache present the raw
files are not needed. ``python -m gclib.imagesets celeba64 lsun_church64 --root data`` builds the caches ahead of
a multi-process run. Missing files raise ``DataMissingError`` (``gclib.checks``, also importable from ``gclib.data``) with one line naming what to place where.
"""
from __future__ import annotations

import io
import os
import sys
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .checks import DataCorruptError, DataMissingError
from .io import atomic_write

IMAGESETS = {"celeba64": (3, 64, 64), "imagenet32": (3, 32, 32), "lsun_church64": (3, 64, 64)}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
CELEBA_CACHE = "celeba64_train_uint8.npy"
LSUN_CACHE = "lsun_church64_train_uint8.npy"
IMAGENET32_FILES = tuple(f"train_data_batch_{k}.npz" for k in range(1, 11))
CELEBA_TRAIN_SIZE = 162_770


def _missing(message: str):
    return DataMissingError(message)


def resize_center_crop(img, size: int) -> np.ndarray:
    """A PIL image -> (3, size, size) uint8: RGB, shorter side resized to ``size`` (Lanczos), centre crop."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF
    img = TF.resize(img.convert("RGB"), size, interpolation=InterpolationMode.LANCZOS)
    img = TF.center_crop(img, [size, size])
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _open_file(path: Path):
    from PIL import Image
    return Image.open(path)


def _open_bytes(buf: bytes):
    from PIL import Image
    return Image.open(io.BytesIO(buf))


def preprocess(sources: Iterable, n: int, size: int, open_image: Callable, desc: str = "",
               workers: int | None = None, chunk: int = 2048) -> np.ndarray:
    """(n, 3, size, size) uint8 from n image sources (paths, or encoded bytes with ``open_image=_open_bytes``),
    each resized and centre-cropped by ``resize_center_crop``; decoded in a thread pool (PIL releases the GIL)."""
    from tqdm import tqdm

    out = np.empty((n, 3, size, size), np.uint8)

    def one(item):
        i, src = item
        try:
            with open_image(src) as img:
                out[i] = resize_center_crop(img, size)
        except (OSError, ValueError) as e:
            where = src if isinstance(src, (str, Path)) else f"image {i}"
            raise ValueError(f"{desc}: {where} cannot be read as an image ({e})") from None

    it, i = iter(sources), 0
    bar = tqdm(total=n, desc=f"{desc}: resizing to {size}x{size}", unit="img", disable=not sys.stderr.isatty())
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        while i < n:
            batch = []
            for src in it:
                batch.append((i + len(batch), src))
                if len(batch) == chunk or i + len(batch) == n:
                    break
            if not batch:
                break
            list(pool.map(one, batch))
            i += len(batch)
            bar.update(len(batch))
    bar.close()
    if i != n:
        raise ValueError(f"{desc}: expected {n} images, found {i}")
    return out


def _corrupt(message: str):
    return DataCorruptError(message)


def _load_cache(path: Path, name: str) -> torch.Tensor:
    try:
        arr = np.load(path, allow_pickle=False)
        if not isinstance(arr, np.ndarray):
            raise ValueError("not a single array")
    except (ValueError, OSError, EOFError) as e:  # numpy's own message may advise loading pickles: not here
        why = "not a .npy array file" if "pickle" in str(e) else " ".join(str(e).split())[:120]
        raise _corrupt(f"{path}: the preprocessed cache of {name!r} is corrupt or truncated ({why}); delete it to "
                       f"rebuild it from the images") from None
    if arr.dtype != np.uint8 or arr.ndim != 4 or tuple(arr.shape[1:]) != IMAGESETS[name] or len(arr) == 0:
        raise ValueError(f"{path}: cache of {name!r} holds {arr.dtype} {arr.shape}, not (N, "
                         f"{', '.join(map(str, IMAGESETS[name]))}) uint8; delete it to rebuild it from the images")
    return torch.from_numpy(arr)


def _save_cache(path: Path, arr: np.ndarray) -> None:
    try:
        atomic_write(path, lambda f: np.save(f, arr))
    except OSError as e:  # e.g. a read-only data folder: go on without the cache
        warnings.warn(f"could not write the preprocessed cache {path} ({e}); it will be rebuilt next time",
                      RuntimeWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------------- CelebA 64


def _celeba_train_names(root: Path, download: bool) -> list:
    """File names of CelebA's train split: torchvision's reader when its checks pass (or after its download);
    otherwise list_eval_partition.txt read directly (torchvision checks the MD5 of all five annotation files, of
    which only the partition list matters here), with a warning if that list is not the official one."""
    from torchvision.datasets import CelebA
    from torchvision.datasets.utils import check_integrity

    folder = root / "celeba"
    partition, images = folder / "list_eval_partition.txt", folder / "img_align_celeba"
    need = (f"place img_align_celeba/ (the aligned JPEGs 000001.jpg ..) and list_eval_partition.txt in {folder}/ "
            f"(or the preprocessed cache {CELEBA_CACHE} there)")
    try:
        return list(CelebA(str(root), split="train", target_type=[], download=download).filename)
    except Exception as e:  # RuntimeError (not found / corrupted), or a failed download
        error = e
    if not (partition.is_file() and images.is_dir()):
        if download:
            raise _missing(f"dataset 'celeba64' not found and its download failed ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''}): {need}") from None
        raise _missing(f"dataset 'celeba64' not found: {need}, or set download: true (--set download=true) on a "
                       f"machine with internet access (torchvision downloads CelebA from Google Drive; needs gdown)")
    md5 = {fn: h for _, h, fn in CelebA.file_list}["list_eval_partition.txt"]
    if not check_integrity(str(partition), md5):
        warnings.warn(f"{partition} is not the official partition list (MD5 differs); its split 0 is used as the "
                      f"training set", RuntimeWarning, stacklevel=3)
    names = []
    for line in partition.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == "0":
            names.append(parts[0])
    return names


def celeba64(root="data", download: bool = False) -> torch.Tensor:
    """CelebA train split at 64x64: (162770, 3, 64, 64) uint8 for the official split (Lanczos resize of the
    shorter side to 64, centre crop). Cached as root/celeba/celeba64_train_uint8.npy."""
    root = Path(root)
    cache = root / "celeba" / CELEBA_CACHE
    if cache.is_file():
        return _load_cache(cache, "celeba64")
    names = _celeba_train_names(root, download)
    images = root / "celeba" / "img_align_celeba"
    lost = [n for n in names if not (images / n).is_file()]
    if lost or not names:
        raise _missing(f"dataset 'celeba64' incomplete: {len(lost)} of the {len(names)} training images listed in "
                       f"list_eval_partition.txt are missing from {images}/ (first: {lost[0] if lost else 'none listed'})")
    arr = preprocess((images / n for n in names), len(names), 64, _open_file, desc="celeba64")
    _save_cache(cache, arr)
    return torch.from_numpy(arr)


# ------------------------------------------------------------------------------------------------- ImageNet 32


def _npz_data_shape(path: Path) -> tuple:
    """Shape and dtype of the array 'data' in an .npz file, read from its header (nothing decompressed)."""
    try:
        with zipfile.ZipFile(path) as z, z.open("data.npy") as f:
            version = np.lib.format.read_magic(f)
            shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                               else np.lib.format.read_array_header_2_0(f))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, zlib.error) as e:
        raise _corrupt(f"{path}: not a numpy .npz file with an array 'data' ({e}); use the npz version of "
                         f"Downsampled ImageNet 32x32 (Imagenet32_train_npz.zip)") from None
    return shape, dtype


def imagenet32(root="data") -> torch.Tensor:
    """Downsampled ImageNet 32x32 training set (Chrabaszcz et al. 2017, box resize): (1281167, 3, 32, 32) uint8
    from root/imagenet32/train_data_batch_{1..10}.npz (the '.npz' suffix may be absent).

    Note: the authors resized ImageNet-1k to 32x32 themselves, so their FIDs are not comparable with the
    literature's numbers on this standard version."""
    folder = Path(root) / "imagenet32"
    paths, absent = [], []
    for name in IMAGENET32_FILES:
        p = folder / name
        p = p if p.is_file() else folder / name[:-len(".npz")]
        (paths if p.is_file() else absent).append(p if p.is_file() else name)
    if absent:
        raise _missing(f"dataset 'imagenet32' not found: place {IMAGENET32_FILES[0]} .. {IMAGENET32_FILES[-1]} "
                       f"(Imagenet32_train_npz.zip of Downsampled ImageNet 32x32, image-net.org) in {folder}/ "
                       f"(missing: {', '.join(absent)})")
    shapes = []
    for p in paths:
        shape, dtype = _npz_data_shape(p)
        if len(shape) != 2 or shape[1] != 3 * 32 * 32 or np.dtype(dtype) != np.uint8:
            raise ValueError(f"{p}: 'data' is {np.dtype(dtype)} {shape}; expected (n, 3072) uint8 (32x32 RGB in CHW order)")
        shapes.append(shape[0])
    out = np.empty((sum(shapes), 3, 32, 32), np.uint8)
    start = 0
    for p, n in zip(paths, shapes):
        try:
            with np.load(p, allow_pickle=False) as z:
                out[start:start + n] = z["data"].reshape(n, 3, 32, 32)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, zlib.error) as e:
            raise _corrupt(f"{p}: the ImageNet 32 archive is corrupt or truncated ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:120]}); download Imagenet32_train_npz.zip again") from None
        start += n
    return torch.from_numpy(out)


# ------------------------------------------------------------------------------------------------ LSUN Church 64


def _lmdb_values(path: Path):
    """(number of entries, iterator over the encoded images) of an LSUN LMDB folder. Read with the lmdb package
    directly: torchvision's LSUN reader writes a key cache into the current working directory."""
    try:
        import lmdb
    except ImportError:
        raise ModuleNotFoundError(f"reading the LSUN LMDB folder {path} needs the lmdb package (pip install lmdb); "
                                  f"or export its images to an image folder") from None
    env = lmdb.open(str(path), max_readers=1, readonly=True, lock=False, readahead=False, meminit=False)
    n = int(env.stat()["entries"])

    def values():
        try:
            with env.begin(write=False) as txn:
                for value in txn.cursor().iternext(keys=False, values=True):
                    yield bytes(value)
        finally:
            env.close()
    return n, values()


def lsun_church64(root="data") -> torch.Tensor:
    """LSUN church_outdoor train at 64x64: (N, 3, 64, 64) uint8 (N = 126227 for the full set), shorter side
    resized to 64 (Lanczos), centre crop. Source: the images under root/lsun_church/ (JPEG/PNG/WEBP, sorted by
    path), else the LMDB folder root/lsun/church_outdoor_train_lmdb (lmdb package). Cached as
    root/lsun_church/lsun_church64_train_uint8.npy."""
    root = Path(root)
    folder = root / "lsun_church"
    cache = folder / LSUN_CACHE
    if cache.is_file():
        return _load_cache(cache, "lsun_church64")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()) \
        if folder.is_dir() else []
    lmdb_dir = root / "lsun" / "church_outdoor_train_lmdb"
    if files:
        arr = preprocess(files, len(files), 64, _open_file, desc="lsun_church64")
    elif lmdb_dir.is_dir():
        n, values = _lmdb_values(lmdb_dir)
        arr = preprocess(values, n, 64, _open_bytes, desc="lsun_church64")
    else:
        raise _missing(f"dataset 'lsun_church64' not found: place the LSUN church_outdoor training images "
                       f"(JPEG/PNG/WEBP files) in {folder}/, or LSUN's LMDB folder church_outdoor_train_lmdb/ in "
                       f"{root / 'lsun'}/ (needs pip install lmdb)")
    _save_cache(cache, arr)
    return torch.from_numpy(arr)


def load_imageset(name: str, root="data", download: bool = False) -> torch.Tensor:
    """The training set ``name`` (a key of IMAGESETS) as (N, C, H, W) uint8; ``download`` only for celeba64."""
    from .checks import ConfigError, check_choice
    check_choice("dataset", name, IMAGESETS, error=ConfigError)
    if name == "celeba64":
        return celeba64(root, download)
    if name == "imagenet32":
        return imagenet32(root)
    return lsun_church64(root)


def main(argv=None) -> int:
    """``python -m gclib.imagesets NAME [NAME ...] [--root data] [--download]``: load (and cache) each set once."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m gclib.imagesets", description=main.__doc__)
    p.add_argument("names", nargs="+", choices=tuple(IMAGESETS))
    p.add_argument("--root", default="data")
    p.add_argument("--download", action="store_true", help="celeba64 only: download with torchvision (internet)")
    args = p.parse_args(argv)
    for name in args.names:
        x = load_imageset(name, args.root, args.download)
        print(f"{name}: {tuple(x.shape)} {x.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
