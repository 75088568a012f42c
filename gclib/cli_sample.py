"""``gclib sample`` and ``gclib evaluate``: a checkpoint's EMA model sampled, written (``--out``, whole or not at
all) or scored. Part of ``gclib.cli`` (which builds the parser); every option is checked before the checkpoint is
read (``_check_sampling``).
"""
from __future__ import annotations

import json
import os
import sys


SEED_MAX = 2 ** 63 - 1
MAX_SAMPLES = 10_000_000


def _check_sampling(args) -> None:
    """The options of ``sample`` and ``evaluate``, checked before the checkpoint is read."""
    import math
    import torch
    if not 1 <= args.n <= MAX_SAMPLES:
        raise ValueError(f"--n {args.n}: must be in [1, {MAX_SAMPLES}]")
    if args.steps < 1:
        raise ValueError(f"--steps {args.steps}: must be >= 1")
    if not 0 <= args.seed <= SEED_MAX:
        raise ValueError(f"--seed {args.seed}: must be in [0, 2**63 - 1]")
    if args.sigmas is not None:
        if not all(math.isfinite(v) and v > 0 for v in args.sigmas):
            raise ValueError(f"--sigmas {' '.join(map(str, args.sigmas))}: every sigma must be a finite number > 0")
        if any(b >= a for a, b in zip(args.sigmas, args.sigmas[1:])):
            raise ValueError(f"--sigmas {' '.join(map(str, args.sigmas))}: must be strictly decreasing")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine; use --device cpu (or auto)")
    if getattr(args, "out", None):
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--out {args.out}: the folder {folder} does not exist")
        if os.path.isdir(args.out):
            raise IsADirectoryError(f"--out {args.out} is a folder; give a file name")


def _load(args):
    from .device import resolve_device
    from .models import load_model
    _check_sampling(args)
    device = resolve_device(args.device, name="--device")
    _, ema, cfg = load_model(args.checkpoint, device)
    return ema, cfg, device


def _generate(args, ema, cfg, device):
    from .evaluation import generate
    from .models import data_shape
    if args.n < 1:
        raise ValueError(f"--n {args.n}: must be >= 1")
    if args.steps < 1:
        raise ValueError(f"--steps {args.steps}: must be >= 1")
    shape = getattr(ema, "data_shape", None) or data_shape(cfg)
    with _progress(args, args.n, "sampling") as p:   # stderr: a bar on a terminal, lines elsewhere
        return generate(ema, args.n, shape, cfg.sigma_max, args.steps, seed=args.seed, sigmas=args.sigmas,
                        device=device, progress=p.update)


def _progress(args, total: int, what: str):
    """The progress report of ``sample`` / ``evaluate`` on stderr (gclib.progress)."""
    from .progress import Progress
    return Progress(total, what, prefix=f"gclib {args.command}")


def _sample(args) -> int:
    import numpy as np
    from .images import save_samples
    if not args.out.endswith((".png", ".npz")):
        raise ValueError(f"--out {args.out!r}: the file name must end with .png or .npz")
    ema, cfg, device = _load(args)
    if args.out.endswith(".png"):  # the picture's package, before any sampling
        from .checks import require
        from .models import data_shape
        images = len(getattr(ema, "data_shape", None) or data_shape(cfg)) == 3
        require("torchvision" if images else "matplotlib", f"--out {args.out} (a PNG of "
                f"{'images' if images else '2-D samples'})")
    x = _generate(args, ema, cfg, device)
    if args.out.endswith(".npz"):
        _write_out(args.out, lambda f: np.savez(f, samples=x.numpy()))
    else:
        ref = None
        if x.ndim == 2:
            from .data import load_dataset
            ref = load_dataset(cfg.dataset, root=cfg.data_root, n=cfg.num_data, seed=cfg.seed)
        if save_samples(x, args.out, ref) is None:
            raise OSError(f"--out {args.out}: the picture was not written (a package it needs is missing: "
                          f"pip install 'gclib[notebooks]'), or write .npz")
    print(f"wrote {len(x)} samples to {args.out}")
    return 0


def _evaluate(args) -> int:
    from .data import load_dataset
    from .evaluation import check_metric_data, check_metrics, evaluate_samples
    check_metrics(args.metric, args.weights_path)  # names, packages, weight files: before any work
    ema, cfg, device = _load(args)
    data = load_dataset(cfg.dataset, root=cfg.data_root, n=cfg.num_data, seed=cfg.seed)
    check_metric_data(args.metric, tuple(data.shape[1:]))  # the reference data suit every metric: before sampling
    x = _generate(args, ema, cfg, device)
    out = evaluate_samples(x, data, args.metric, n_ref=max(args.n, 10_000), seed=args.seed,
                           weights_path=args.weights_path,
                           say=lambda text: print(f"[gclib evaluate] {text}", file=sys.stderr, flush=True))
    out = {"checkpoint": args.checkpoint, "n": args.n, "steps": args.steps, **out}
    text = json.dumps(out)
    print(text)
    if args.out:
        _write_out(args.out, lambda f: f.write((text + "\n").encode()))
    return 0


def _write_out(path: str, write) -> None:
    """``--out``, written whole or not at all (gclib.io.atomic_write): a failed write (full disk, quota, a
    read-only folder) leaves the previous file as it was and is one line naming the file and the cause."""
    from .io import atomic_write
    try:
        atomic_write(path, write)
    except OSError as e:
        cause = os.strerror(e.errno) if e.errno else str(e)
        raise type(e)(e.errno, f"--out {path} was not written ({cause}); the file that was there, if any, is "
                               f"unchanged") from None
