"""The ``gclib`` command: train, sample, evaluate, reproduce.

  gclib train params/train/toy.yaml --flow gc --set total_steps=500 --set lr=1e-4
  torchrun --nproc_per_node=4 -m gclib train params/train/cifar10.yaml --flow gc
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
        _check_fresh(args)
        overrides.append("resume=false")
    if args.seeds is not None:
        return _train_seeds(args, overrides)
    if args.stack:
        raise ValueError("--stack trains several runs as one: give them with --seeds")
    cfg = load_config(args.config, overrides, flow=args.flow, overlays=args.overlay or ())
    if args.executor == "submitit" or args.submit:   # a submitit job (docs/cluster.md); checked before submitting
        from .executors import JobFailedError, executor_spec, parse_assignments, submit_train
        spec = executor_spec({"kind": args.executor or "submitit", **parse_assignments(args.submit)})
        try:
            out = submit_train(cfg, spec)
        except JobFailedError as e:
            print(_one_line("train", e), file=sys.stderr)
            return 1
        if out is not None:
            run_dir, step, ckpt, skipped = out
            print(f"{'already finished (skipped)' if skipped else 'finished'}: {run_dir} step {step}, checkpoint {ckpt}")
        return 0
    res = train(cfg)
    state = "already finished (skipped)" if res.skipped else "finished"
    if os.environ.get("RANK", "0") == "0":
        print(f"{state}: {res.run_dir} step {res.step}, checkpoint {res.checkpoint}")
    return 0


def _train_seeds(args, overrides: list) -> int:
    """``--seeds``: one run per seed (the config's other settings kept), one after another, or with ``--stack`` all
    at once in one process (gclib.stack: their networks evaluated as one)."""
    from .config import load_config, parse_overrides
    if args.run_dir:
        raise ValueError("--seeds trains one run per seed, each in its own directory: drop --run-dir")
    if args.executor == "submitit" or args.submit:
        raise ValueError("--seeds runs here: submit one job per seed instead (--set seed=S)")
    if "seed" in parse_overrides(args.set or []):
        raise ValueError("--seeds sets each run's seed: drop --set seed=...")
    if len(set(args.seeds)) < len(args.seeds):
        raise ValueError(f"--seeds {' '.join(map(str, args.seeds))} names a seed twice")
    cfgs = [load_config(args.config, overrides + [f"seed={s}"], flow=args.flow, overlays=args.overlay or ())
            for s in args.seeds]  # every config is checked before the first run starts
    if args.stack:
        from .stack import train_stack
        results = train_stack(cfgs)
    else:
        from .train import train
        results = [train(c) for c in cfgs]
    for c, res in zip(cfgs, results):
        state = "already finished (skipped)" if res.skipped else "finished"
        print(f"seed {c.seed} {state}: {res.run_dir} step {res.step}, checkpoint {res.checkpoint}")
    return 0


def _check_fresh(args) -> None:
    """``--fresh`` means resume=false: an explicit resume: true in the file or in --set contradicts it."""
    from .config import compose, parse_overrides
    given = parse_overrides(args.set or []).get("resume")
    where = "--set resume=true"
    if given is None:   # the file with its flow overlay and --overlay files, flat or by section
        given = compose(args.config, args.flow, args.overlay or ()).get("resume")
        where = f"resume: true in {args.config}" + (" or its overlays" if args.flow or args.overlay else "")
    if given is True:
        raise ValueError(f"--fresh (start afresh: resume=false) conflicts with {where}; drop one of them")


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
    return generate(ema, args.n, shape, cfg.sigma_max, args.steps, seed=args.seed, sigmas=args.sigmas, device=device)


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
        np.savez(args.out, samples=x.numpy())
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
                           weights_path=args.weights_path)
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
    rp.add_argument("--status", action="store_true", help="say how far the long profiles' runs are, then stop")
    rp.add_argument("--compare", nargs="?", const="", default=None, metavar="FRESH",
                    help="train nothing: set a fresh reproduction's results folder (default: results/) against the "
                         "committed results, in one table (verdict changes, the metric check's drift, each measured "
                         "number's drift); exit 1 if a verdict changed (gclib.compare)")
    rp.add_argument("--against", default=None, metavar="REF_OR_FOLDER",
                    help="with --compare: the committed results, a git commit (default HEAD) or a results folder")

    t = sub.add_parser("train", help="train a consistency model from a YAML config (torchrun-ready)",
                       description="Train from a YAML config (see params/train/): a data set's preset, composed "
                                   "with a flow (--flow gc: the overlay flows/gc.yaml beside the preset, then the "
                                   "preset's own settings for that flow) and further overlay files (--overlay). "
                                   "Every key of gclib.config.Config can be overridden with --set key=value (or "
                                   "section.key=value). Resumes from the newest valid checkpoint of the run "
                                   "directory unless resume=false; returns at once if the run finished.")
    t.add_argument("config", help="YAML file, e.g. params/train/toy.yaml (a preset: its own flow, IC)")
    t.add_argument("--flow", default=None, metavar="FLOW",
                   help="compose the preset with this flow's overlay, flows/FLOW.yaml beside it (ic, ot, gc)")
    t.add_argument("--overlay", action="append", metavar="FILE",
                   help="a YAML file applied over the config after the flow's overlay (repeatable)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    t.add_argument("--run-dir", help="run directory (default: <runs_dir>/<name>-<config hash>)")
    t.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="train one run per seed (each its own run directory), one after another")
    t.add_argument("--stack", action="store_true",
                   help="with --seeds: train the runs at once in one process, their networks evaluated as one "
                        "(gclib.stack; on a GPU a step of K small runs issues a few times the kernels of one run's "
                        "step, not K times)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--fresh", action="store_true", help="start afresh in the run directory: its old checkpoints, "
                                                        "evaluations and done.json are deleted (resume=false)")
    t.add_argument("--executor", choices=("local", "submitit"), default=None,
                   help="local: train in this process (default); submitit: submit the run as a job (SLURM, or "
                        "--submit cluster=local), wait for it and print the same line; see docs/cluster.md")
    t.add_argument("--submit", action="append", metavar="KEY=VALUE",
                   help="a submitit setting (repeatable; implies --executor submitit): folder, cluster "
                        "(auto|slurm|local|debug), wait (false: return once submitted), poll_s, or a submitit "
                        "parameter such as timeout_min, nodes, tasks_per_node, gpus_per_node, cpus_per_task, "
                        "mem_gb, slurm_partition, slurm_account")

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
                                   "distance to the nearest data point), fd_digits and kid_digits (digits features), "
                                   "fid, kid and isc (Inception features through torch-fidelity). What each metric "
                                   "needs (packages, weight files, data) is checked before any sample is drawn.")
    common(e)
    e.add_argument("--metric", action="append", required=True, help="metric name (repeatable): w2, nn_dist, ...")
    e.add_argument("--weights-path", default=None, metavar="FILE",
                   help="the Inception weights for fid, kid and isc (torch-fidelity's "
                        "weights-inception-2015-12-05-6726825d.pth); default: $GCLIB_INCEPTION_WEIGHTS, else "
                        "torch hub's cache (<hub dir>/checkpoints/)")
    e.add_argument("--out", help="also write the JSON to this file")
    return parser


def _user_errors() -> tuple:
    """Exceptions that mean the user's input or machine is at fault: reported in one line, exit status 2.
    (Every OSError is one: a full disk, a read-only folder, a too-long name, an unreadable state file, ...)"""
    from .checkpoint import CheckpointError
    from .checks import MissingExtraError
    from .config import ConfigError
    from .data import DataMissingError
    from .rundir import RunLockedError
    return (ConfigError, CheckpointError, DataMissingError, RunLockedError, MissingExtraError, OSError, ValueError)


def _one_line(command: str, e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return f"gclib {command}: error: {msg}"


INTERRUPTED = {"train": "interrupted; the run can be resumed: run the same command again (it continues from its "
                        "newest checkpoint)",
               "reproduce": "interrupted; the runs it trained can be resumed: run it again (finished runs are "
                            "reused from the cache)"}
NOTEBOOK_USER_ERRORS = ("ValueError", "ConfigError", "FileNotFoundError", "DataMissingError", "DataCorruptError",
                        "CheckpointError", "MissingExtraError", "ModuleNotFoundError", "PermissionError",
                        "RunLockedError")


def run_command(command: str, fn) -> int:
    """The error boundary of every command: ``fn()``'s exit status, or ONE line on stderr and the status:
    2 for the user's input or machine (bad value or file, missing data or extra, corrupt or mismatched
    checkpoint, a locked run, any OSError), 1 for a NaN/inf loss or a notebook that failed, 130 for Ctrl-C
    (saying whether the work can be resumed); anything else is a bug and shows its traceback. Warnings are
    printed as one line each."""
    import warnings
    from .checks import EXTRAS, missing_extra
    from .step import NonFiniteLossError
    show = warnings.showwarning

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"gclib {command}: warning: {' '.join(str(message).split())}", file=file or sys.stderr)
    warnings.showwarning = one_line_warning
    try:
        return fn()
    except KeyboardInterrupt:
        print(f"gclib {command}: {INTERRUPTED.get(command, 'interrupted')}", file=sys.stderr)
        return 130
    except NonFiniteLossError as e:
        print(_one_line(command, e), file=sys.stderr)
        return 1
    except _user_errors() as e:
        print(_one_line(command, e), file=sys.stderr)
        return 2
    except ImportError as e:
        if (e.name or "").split(".")[0] not in EXTRAS:
            raise
        print(_one_line(command, missing_extra(e.name, f"gclib {command}")), file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - only papermill's failure is reported here; the rest re-raised
        if type(e).__name__ != "PapermillExecutionError":
            raise
        evalue = " ".join(str(getattr(e, "evalue", "")).split())
        print(f"gclib {command}: error: a notebook failed in cell {getattr(e, 'exec_count', '?')}: "
              f"{getattr(e, 'ename', 'Error')}: {evalue} (the executed notebook under results/ holds its traceback)",
              file=sys.stderr)
        return 2 if getattr(e, "ename", "") in NOTEBOOK_USER_ERRORS else 1
    finally:
        warnings.showwarning = show


def main(argv=None) -> int:
    """Run a command. Errors that are the user's (bad value or file, missing data, corrupt or mismatched
    checkpoint, a locked run, a full disk or read-only folder, a missing optional package) print one line naming
    the file, key or extra and exit 2; a NaN/inf loss exits 1; Ctrl-C exits 130 saying whether the run can be
    resumed; anything else is a bug and shows its traceback (``run_command``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": _train, "sample": _sample, "evaluate": _evaluate, "reproduce": _reproduce}
    return run_command(args.command, lambda: handlers[args.command](args))


def _check_reproduce(args) -> None:
    """``--only`` and ``--variant`` must name a notebook and parameter sets that exist (one line listing them)."""
    from .report import project_root
    from .reproduce import _notebooks, variant_files
    root = project_root()
    notebooks = [p.stem for p in _notebooks(root)]
    if args.only is not None and args.only not in notebooks:
        raise ValueError(f"--only {args.only!r} is not a notebook; valid choices: {', '.join(notebooks)}")
    if args.variant:
        chosen = [args.only] if args.only else notebooks
        valid = sorted({p.stem for nb in chosen for p in variant_files(root, nb, args.long)})
        unknown = [v for v in args.variant if v not in valid]
        if unknown:
            kind = "long" if args.long else "quick"
            raise ValueError(f"--variant {unknown[0]!r} matches no {kind} parameter set"
                             f"{' of ' + args.only if args.only else ''}; valid choices: {', '.join(valid)}"
                             f"{'' if args.long else ' (the long profiles need --long)'}")


def _reproduce(args) -> int:
    from .reproduce import reproduce
    if args.compare is not None or args.against:
        return _reproduce_compare(args)
    _check_reproduce(args)
    return reproduce(long=args.long, only=args.only, variants=args.variant, status=args.status)


def _reproduce_compare(args) -> int:
    from .compare import compare_command
    if args.compare is None:
        raise ValueError("--against names the committed results of --compare: add --compare")
    if args.long or args.status:
        raise ValueError(f"--compare trains nothing: drop {'--long' if args.long else '--status'}")
    return compare_command(args.compare or None, args.against, only=args.only, variants=args.variant)


if __name__ == "__main__":
    sys.exit(main())
