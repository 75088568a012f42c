"""The ``gclib`` command: train, sample, evaluate, reproduce.

  gclib train params/train/toy_gc.yaml --set total_steps=500 --set lr=1e-4
  torchrun --nproc_per_node=4 -m gclib train params/train/cifar10_gc.yaml
  gclib sample runs/toy_gc-<hash>/checkpoints/ckpt-00002000.pt --n 1000 --steps 1 --out samples.png
  gclib evaluate runs/toy_gc-<hash>/checkpoints/ckpt-00002000.pt --metric w2 --metric nn_dist
  gclib reproduce
Bad input ends with a one-line message and a non-zero exit status.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _train(args) -> int:
    from .config import load_config
    from .train import train
    overrides = list(args.set or [])
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    if args.no_progress:
        overrides.append("progress=false")
    if args.fresh:
        overrides.append("resume=false")
    cfg = load_config(args.config, overrides)
    res = train(cfg)
    state = "already finished (skipped)" if res.skipped else "finished"
    if os.environ.get("RANK", "0") == "0":
        print(f"{state}: {res.run_dir} step {res.step}, checkpoint {res.checkpoint}")
    return 0


def _load(args):
    from .models import load_model
    import torch
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
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
    return generate(ema, args.n, shape, cfg.sigma_max, args.steps, seed=args.seed, sigmas=args.sigmas, device=device)


def _sample(args) -> int:
    import numpy as np
    from .images import save_samples
    if not args.out.endswith((".png", ".npz")):
        raise ValueError(f"--out {args.out!r}: the file name must end with .png or .npz")
    ema, cfg, device = _load(args)
    x = _generate(args, ema, cfg, device)
    if args.out.endswith(".npz"):
        np.savez(args.out, samples=x.numpy())
    else:
        ref = None
        if x.ndim == 2:
            from .data import load_dataset
            ref = load_dataset(cfg.dataset, root=cfg.data_root, n=cfg.num_data, seed=cfg.seed)
        save_samples(x, args.out, ref)
    print(f"wrote {len(x)} samples to {args.out}")
    return 0


def _evaluate(args) -> int:
    from .data import load_dataset
    from .evaluation import evaluate_samples, get_metric
    for m in args.metric:
        get_metric(m)  # validate names before any work
    ema, cfg, device = _load(args)
    data = load_dataset(cfg.dataset, root=cfg.data_root, n=cfg.num_data, seed=cfg.seed)
    x = _generate(args, ema, cfg, device)
    out = evaluate_samples(x, data, args.metric, n_ref=max(args.n, 10_000), seed=args.seed)
    out = {"checkpoint": args.checkpoint, "n": args.n, "steps": args.steps, **out}
    text = json.dumps(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gclib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("reproduce", help="run every notebook with its cpu parameter sets into results/")
    rp.add_argument("--long", action="store_true", help="run the long CPU profiles (params/*/cpu_long*.yaml) instead")
    rp.add_argument("--only", default=None, help="only this notebook (e.g. fid_curves)")
    rp.add_argument("--variant", action="append", help="only this parameter set (repeatable), e.g. cpu_long")

    t = sub.add_parser("train", help="train a consistency model from a YAML config (torchrun-ready)",
                       description="Train from a YAML config (see params/train/). Every key of gclib.config.Config "
                                   "can be overridden with --set key=value. Resumes from the newest valid checkpoint "
                                   "of the run directory unless resume=false; returns at once if the run finished.")
    t.add_argument("config", help="YAML file, e.g. params/train/toy_gc.yaml")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    t.add_argument("--run-dir", help="run directory (default: <runs_dir>/<name>-<config hash>)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--fresh", action="store_true", help="start afresh in the run directory: its old checkpoints, "
                                                        "evaluations and done.json are deleted (resume=false)")

    def common(p):
        p.add_argument("checkpoint", help="checkpoint file (runs/<name>-<hash>/checkpoints/ckpt-<step>.pt)")
        p.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
        p.add_argument("--steps", type=int, default=1, help="sampling steps (1 = one-step generation; default 1)")
        p.add_argument("--sigmas", type=float, nargs="+", help="explicit decreasing sigmas (overrides --steps)")
        p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
        p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    s = sub.add_parser("sample", help="draw samples from a checkpoint's EMA model to .png or .npz",
                       description="Consistency sampling with the EMA model of a checkpoint.")
    common(s)
    s.add_argument("--out", required=True, help="output file: .png (grid or scatter plot) or .npz (array 'samples')")

    e = sub.add_parser("evaluate", help="sample quality metrics of a checkpoint (JSON on stdout)",
                       description="Sample from the EMA model and compare with the training data. Metrics (the "
                                   "registry gclib.evaluation.METRICS): w2 and w2sq (exact W2 by POT), nn_dist (mean "
                                   "distance to the nearest data point), fd_digits and kid_digits (digits features).")
    common(e)
    e.add_argument("--metric", action="append", required=True, help="metric name (repeatable): w2, nn_dist, ...")
    e.add_argument("--out", help="also write the JSON to this file")
    return parser


def _user_errors() -> tuple:
    """Exceptions that mean the user's input or machine is at fault: reported in one line, exit status 2."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataMissingError
    from .rundir import RunLockedError
    return (ConfigError, CheckpointError, DataMissingError, RunLockedError, FileNotFoundError, PermissionError,
            IsADirectoryError, NotADirectoryError, ValueError)


def _one_line(command: str, e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return f"gclib {command}: error: {msg}"


def main(argv=None) -> int:
    """Run a command. Errors that are the user's (bad value or file, missing data, corrupt or mismatched
    checkpoint, a locked run, a full disk or read-only folder) print one line naming the file or key and exit 2;
    a NaN/inf loss exits 1; anything else is a bug and shows its traceback."""
    import errno
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": _train, "sample": _sample, "evaluate": _evaluate, "reproduce": _reproduce}
    from .io import HINTS
    from .step import NonFiniteLossError
    try:
        return handlers[args.command](args)
    except NonFiniteLossError as e:
        print(_one_line(args.command, e), file=sys.stderr)
        return 1
    except _user_errors() as e:
        print(_one_line(args.command, e), file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno in HINTS or e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
            print(_one_line(args.command, e), file=sys.stderr)
            return 2
        raise


def _reproduce(args) -> int:
    from .reproduce import reproduce
    return reproduce(long=args.long, only=args.only, variants=args.variant)


if __name__ == "__main__":
    sys.exit(main())
