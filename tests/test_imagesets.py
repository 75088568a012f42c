"""gclib.imagesets on small fake files of the real formats, made in tmp_path (no data set is downloaded)."""
import io
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from gclib.data import DataMissingError, to_float
from gclib.imagesets import (CELEBA_CACHE, IMAGENET32_FILES, IMAGESETS, LSUN_CACHE, celeba64, imagenet32,
                             load_imageset, lsun_church64)

W, H = 36, 44  # tiny portrait images, like CelebA's 178x218: shorter side (width) resized to 64


def _colour(i):
    return (10 * i % 256, 255 - 10 * i % 256, 128)


def _reference(img: Image.Image, size=64) -> np.ndarray:
    """The authors' preprocessing written out with PIL alone: shorter side -> size (Lanczos), centre crop."""
    w, h = img.size
    if w <= h:
        img = img.resize((size, int(size * h / w)), Image.LANCZOS)
    else:
        img = img.resize((int(size * w / h), size), Image.LANCZOS)
    w, h = img.size
    left, top = int(round((w - size) / 2)), int(round((h - size) / 2))
    return np.array(img.crop((left, top, left + size, top + size))).transpose(2, 0, 1)


def _noise_image(seed, w=W, h=H):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# ------------------------------------------------------------------------------------------------------- CelebA

SPLITS = [0, 0, 1, 0, 2, 0, 0]  # 7 images, 5 in the train split (split 0)


def _fake_celeba(root, annotations=True):
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, len(SPLITS) + 1)]
    for i, name in enumerate(names):
        img = _noise_image(i) if i == 0 else Image.new("RGB", (W, H), _colour(i))
        img.save(folder / "img_align_celeba" / name, quality=95)
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(names, SPLITS)))
    if annotations:  # the other files torchvision's CelebA reads (same layouts as the real ones)
        n = len(names)
        (folder / "identity_CelebA.txt").write_text("".join(f"{nm} {i + 1}\n" for i, nm in enumerate(names)))
        (folder / "list_bbox_celeba.txt").write_text(
            f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{nm} 1 2 3 4\n" for nm in names))
        lm = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
        (folder / "list_landmarks_align_celeba.txt").write_text(
            f"{n}\n{lm}\n" + "".join(f"{nm} " + " ".join(["5"] * 10) + "\n" for nm in names))
        attrs = " ".join(f"attr{k}" for k in range(40))
        (folder / "list_attr_celeba.txt").write_text(
            f"{n}\n{attrs}\n" + "".join(f"{nm} " + " ".join(["-1", "1"] * 20) + "\n" for nm in names))
    return names


def _check_celeba(x, root):
    train = [i for i, s in enumerate(SPLITS) if s == 0]
    assert x.shape == (len(train), 3, 64, 64) and x.dtype == torch.uint8
    with Image.open(root / "celeba" / "img_align_celeba" / "000001.jpg") as img:
        assert torch.equal(x[0], torch.from_numpy(_reference(img.convert("RGB"))))  # Lanczos + centre crop, exactly
    for row, i in enumerate(train[1:], start=1):  # flat colours survive (JPEG: within a few levels), in split order
        assert (x[row].float().mean((1, 2)) - torch.tensor(_colour(i), dtype=torch.float32)).abs().max() < 4
    f = to_float(x)
    assert -1.0 <= f.min() and f.max() <= 1.0


def test_celeba64_from_local_files_then_from_the_cache(tmp_path):
    _fake_celeba(tmp_path)
    # torchvision's MD5 checks fail on fake annotation files: the partition list is read directly, with a warning
    with pytest.warns(RuntimeWarning, match="not the official partition list"):
        x = celeba64(tmp_path)
    _check_celeba(x, tmp_path)
    cache = tmp_path / "celeba" / CELEBA_CACHE
    assert cache.is_file() and not list(cache.parent.glob(f".{CELEBA_CACHE}.*"))  # atomic: no temp file left
    # the cache alone is enough: remove the raw images
    for p in (tmp_path / "celeba" / "img_align_celeba").iterdir():
        p.unlink()
    assert torch.equal(celeba64(tmp_path), x)
    assert torch.equal(load_imageset("celeba64", tmp_path), x)


def test_celeba64_through_torchvision_reader(tmp_path, monkeypatch):
    import torchvision.datasets.celeba as tv_celeba
    _fake_celeba(tmp_path)
    monkeypatch.setattr(tv_celeba, "check_integrity", lambda *a, **k: True)  # pretend the MD5s match
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning on this path
        x = celeba64(tmp_path)
    _check_celeba(x, tmp_path)


def test_celeba64_missing_files_named_in_one_line(tmp_path):
    with pytest.raises(DataMissingError) as e:
        celeba64(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "celeba64" in msg
    assert "img_align_celeba/" in msg and "list_eval_partition.txt" in msg and str(tmp_path / "celeba") in msg
    assert "download" in msg and "internet" in msg
    _fake_celeba(tmp_path, annotations=False)
    (tmp_path / "celeba" / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.warns(RuntimeWarning), pytest.raises(DataMissingError, match="000004.jpg"):
        celeba64(tmp_path)


def test_bad_cache_is_named(tmp_path):
    (tmp_path / "celeba").mkdir()
    np.save(tmp_path / "celeba" / CELEBA_CACHE, np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="delete it"):
        celeba64(tmp_path)


# --------------------------------------------------------------------------------------------------- ImageNet 32

def _fake_imagenet32(root, sizes=(3, 1, 2, 1, 1, 2, 1, 1, 1, 2)):
    folder = root / "imagenet32"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = []
    for k, (name, n) in enumerate(zip(IMAGENET32_FILES, sizes)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        path = folder / (name if k != 3 else name[:-4])  # one file without the .npz suffix, as unzipped copies may be
        with open(path, "wb") as f:
            np.savez_compressed(f, data=data, labels=rng.integers(1, 1001, n))
        batches.append(data)
    return np.concatenate(batches)


def test_imagenet32_reads_the_ten_batches_in_order(tmp_path):
    data = _fake_imagenet32(tmp_path)
    x = imagenet32(tmp_path)
    assert x.shape == (len(data), 3, 32, 32) and x.dtype == torch.uint8
    # CHW order: the first 1024 values of a row are the red plane
    assert torch.equal(x[0, 0].flatten(), torch.from_numpy(data[0, :1024]))
    assert torch.equal(x.reshape(len(x), -1), torch.from_numpy(data))
    assert torch.equal(load_imageset("imagenet32", tmp_path), x)


def test_imagenet32_missing_and_bad_files(tmp_path):
    with pytest.raises(DataMissingError) as e:
        imagenet32(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "train_data_batch_1.npz" in msg and "train_data_batch_10.npz" in msg
    assert str(tmp_path / "imagenet32") in msg
    _fake_imagenet32(tmp_path)
    (tmp_path / "imagenet32" / "train_data_batch_7.npz").unlink()
    with pytest.raises(DataMissingError, match=r"missing: train_data_batch_7\.npz"):
        imagenet32(tmp_path)
    (tmp_path / "imagenet32" / "train_data_batch_7.npz").write_bytes(b"\x80\x04 a pickle, not an npz")
    with pytest.raises(ValueError, match="not a numpy .npz file"):
        imagenet32(tmp_path)


# --------------------------------------------------------------------------------------------- LSUN Church 64

def _png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_lsun_church64_from_an_image_folder_then_from_the_cache(tmp_path):
    folder = tmp_path / "lsun_church"
    (folder / "sub").mkdir(parents=True)
    imgs = [_noise_image(s, w=50, h=40) for s in range(3)]  # landscape: the height is the shorter side
    imgs[0].save(folder / "b.png")
    imgs[1].save(folder / "sub" / "c.PNG")
    imgs[2].save(folder / "a.png")
    (folder / "notes.txt").write_text("not an image")
    x = lsun_church64(tmp_path)
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.uint8
    expected = [imgs[2], imgs[0], imgs[1]]  # sorted paths: a.png, b.png, sub/c.PNG
    for row, img in enumerate(expected):
        assert torch.equal(x[row], torch.from_numpy(_reference(img)))
    assert (folder / LSUN_CACHE).is_file()
    for p in (folder / "a.png", folder / "b.png", folder / "sub" / "c.PNG"):
        p.unlink()
    assert torch.equal(lsun_church64(tmp_path), x)
    assert torch.equal(load_imageset("lsun_church64", tmp_path), x)


def test_lsun_church64_from_lmdb(tmp_path, monkeypatch):
    imgs = [_noise_image(s, w=64, h=80) for s in range(4)]
    values = [_png_bytes(im) for im in imgs]

    class Env:  # the part of py-lmdb's API the loader uses
        def __init__(self, path, **kw):
            assert path.endswith("church_outdoor_train_lmdb") and kw.get("readonly")

        def stat(self):
            return {"entries": len(values)}

        def begin(self, write=False):
            class Txn:
                def __enter__(self):
                    return self

                def __exit__(self, *a):
                    return False

                def cursor(self):
                    return types.SimpleNamespace(iternext=lambda keys=True, values_=True, **kw: iter(values))
            return Txn()

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "lmdb", types.SimpleNamespace(open=Env))
    (tmp_path / "lsun" / "church_outdoor_train_lmdb").mkdir(parents=True)
    x = lsun_church64(tmp_path)
    assert x.shape == (4, 3, 64, 64)
    for row, img in enumerate(imgs):
        assert torch.equal(x[row], torch.from_numpy(_reference(img)))


def test_lsun_church64_missing_files_named(tmp_path):
    with pytest.raises(DataMissingError) as e:
        lsun_church64(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "lsun_church") in msg and "church_outdoor_train_lmdb" in msg


def test_registry():
    assert IMAGESETS == {"celeba64": (3, 64, 64), "imagenet32": (3, 32, 32), "lsun_church64": (3, 64, 64)}
    with pytest.raises(ValueError, match="celeba64"):
        load_imageset("celeba", "data")


# ------------------------------------------------------------------------------------------- through gclib train
@pytest.mark.parametrize("dataset", ["celeba64", "imagenet32", "lsun_church64"])
def test_paper_scale_sets_offline_then_with_fake_files_train_two_steps(dataset, tmp_path, capsys):
    from gclib.cli import main
    from gclib.report import project_root
    base = ["train", str(project_root() / "params" / "train" / f"{dataset}.yaml"), "--flow", "gc", "--no-progress",
            "--set", f"data_root={tmp_path / 'data'}", "--set", f"runs_dir={tmp_path / 'runs'}"]
    assert main(base) == 2  # offline: the files are not there
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and dataset in err and str(tmp_path / "data") in err, err
    data = tmp_path / "data"
    if dataset == "celeba64":
        _fake_celeba(data)
    elif dataset == "imagenet32":
        _fake_imagenet32(data)
    else:
        (data / "lsun_church").mkdir(parents=True)
        for s in range(4):
            _noise_image(s, w=50, h=40).save(data / "lsun_church" / f"{s}.png")
    tiny = ["--set", "model=unet", "--set", "channels=8", "--set", "channel_mult=[1,2]", "--set", "num_blocks=1",
            "--set", "attn_resolutions=[]", "--set", "batch_size=2", "--set", "total_steps=2",
            "--set", "checkpoint_every=0", "--set", "sample_n=2", "--set", "device=cpu"]
    assert main(base + tiny) == 0, capsys.readouterr().err
    assert "finished" in capsys.readouterr().out
