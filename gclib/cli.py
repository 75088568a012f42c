"""The ``gclib`` command: train, sample, evaluate, reproduce.

  gclib train params/train/toy.yaml --flow gc --set total_steps=500 --set lr=1e-4
  gclib train cifar10 --flow gc                    (a preset by name: gclib presets lists them)
  gclib config cifar10 --flow gc --set lr=2e-4     (the composed config, its run directory and hash)
  torchrun --nproc_per_node=4 -m gclib train params/train/cifar10.yaml --flow gc
  gclib sample runs/toy_gc-<hash>/checkpoints/ckpt-00002000.pt --n 1000 --steps 1 --out samples.png
  gclib evaluate runs/toy_gc-<hash>/checkpoints/ckpt-00002000.pt --metric w2 --metric nn_dist
  gclib export runs/toy_gc-<hash> --out model.safetensors   (EMA weights; model.json beside them)
  gclib reproduce
Bad input ends with a one-line message and a non-zero exit status.
"""
from __future__ import annotations

import argparse
import os
import sys

# the commands' handlers and the error boundary, each group in its own room; re-exported here
from .cli_errors import INTERRUPTED, NOTEBOOK_USER_ERRORS, TERMINATED, run_command  # noqa: F401
from .cli_sample import MAX_SAMPLES, SEED_MAX, _evaluate, _sample  # noqa: F401
from .cli_train import _train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gclib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("reproduce", help="run every notebook with its cpu parameter sets into results/")
    rp.add_argument("--long", action="store_true", help="run the long CPU profiles (params/*/cpu_long*.yaml) instead")
    rp.add_argument("--only", default=None, help="only this notebook (e.g. fid_curves)")
    rp.add_argument("--variant", action="append", help="only this parameter set (repeatable), e.g. cpu_long")
    rp.add_argument("--status", action="store_true", help="say how far the long profiles' runs are, then stop")
    rp.add_argument("--reanalyse", action="store_true",
                    help="fid_curves: a new analysis of the committed curves and final evaluation, without training "
                         "(for profiles whose runs' weights are gone); the sample figure is kept as committed")
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
    t.add_argument("config", help=f"a preset's name ({_preset_list()}; gclib presets describes them) or a YAML "
                                  f"file, e.g. params/train/toy.yaml (a preset: its own flow, IC)")
    t.add_argument("--flow", default=None, metavar="FLOW",
                   help="compose the preset with this flow's overlay (ic, ot, gc): flows/FLOW.yaml beside it when "
                        "that folder exists, else gclib's own")
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
                        "(auto|slurm|local|debug), wait (false: return once submitted), poll_s, max_num_timeout "
                        "(requeues after a time limit; submitit's default 3), or a submitit "
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
    _add_preset_commands(sub)
    return parser


def main(argv=None) -> int:
    """Run a command. Errors that are the user's (bad value or file, missing data, corrupt or mismatched
    checkpoint, a locked run, a full disk or read-only folder, a missing optional package) print one line naming
    the file, key or extra and exit 2; a NaN/inf loss exits 1; Ctrl-C exits 130 saying whether the run can be
    resumed; anything else is a bug and shows its traceback (``run_command``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": _train, "sample": _sample, "evaluate": _evaluate, "reproduce": _reproduce,
                **PRESET_COMMANDS}
    return run_command(args.command, lambda: _with_plugins(handlers[args.command], args))


def _with_plugins(handler, args) -> int:
    """The command, after the user's plugin modules are imported (``gclib.plugins``: $GCLIB_PLUGINS and the entry
    points of gclib.plugins), so that the couplings, losses, metrics and data sets they register are known."""
    from .plugins import load_plugins
    load_plugins()
    return handler(args)


def _check_run_cache(write: bool) -> None:
    """The run cache (``$GCLIB_RUNS``, else runs/) before any notebook starts: not a file (even for --status,
    which would otherwise count no runs there), and writable when runs may be trained."""
    from .report import runs_dir, writable_folder
    where = runs_dir()   # a GCLIB_RUNS naming a file: one line here
    if write:
        var = os.environ.get("GCLIB_RUNS")
        writable_folder(where, f"GCLIB_RUNS={var}" if var else "the run cache")


def _check_reproduce(args) -> None:
    """``--only`` and ``--variant`` must name a notebook and parameter sets that exist (one line listing them)."""
    from .report import project_root
    from .reproduce import _notebooks, variant_files
    root = project_root()
    notebooks = [p.stem for p in _notebooks(root)]
    if args.reanalyse and args.only not in (None, "fid_curves"):
        raise ValueError(f"--reanalyse applies to the fid_curves notebook only, not --only {args.only!r}")
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
    _check_run_cache(write=not args.status)
    return reproduce(long=args.long, only=args.only, variants=args.variant, status=args.status,
                     reanalyse=args.reanalyse)


# ------------------------------------------------------------------------------------------- presets, config, export
# (issue 33) The presets that ship with gclib, a composed config with its run directory and hash, and weights to
# share: their own subcommands, registered by _add_preset_commands.
def _add_preset_commands(sub) -> None:
    sub.add_parser("presets", help="list the training presets that ship with gclib (gclib train PRESET --flow F)",
                   description="The training presets of gclib (package data, gclib/presets; params/train in a "
                               "checkout) and the flow overlays --flow composes them with.")
    c = sub.add_parser("config", help="print a composed training config, its run directory and its hash",
                       description="Compose a preset (or YAML file) with a flow, overlays and --set overrides exactly "
                                   "as gclib train does, and print the result as YAML (a file gclib train reads "
                                   "back), then its run directory and config hash as comments. Trains nothing.")
    c.add_argument("config", help="a preset's name (gclib presets) or a YAML file")
    c.add_argument("--flow", default=None, metavar="FLOW", help="compose with this flow's overlay (ic, ot, gc)")
    c.add_argument("--overlay", action="append", metavar="FILE", help="a YAML file applied after the flow (repeatable)")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    x = sub.add_parser("export", help="write a run's EMA weights as safetensors, its config as JSON beside them",
                       description="Export the EMA weights of a run's final checkpoint (or of a checkpoint file) to a "
                                   "safetensors file and the run's composed config to a JSON file of the same name "
                                   "beside it (model.safetensors, model.json). gclib.models.load_model, gclib sample "
                                   "and gclib evaluate read the export as they read a checkpoint.")
    x.add_argument("source", metavar="RUN_OR_CKPT",
                   help="a run directory (runs/<name>-<hash>: its final checkpoint) or a checkpoint file")
    x.add_argument("--out", required=True, help="the weights file, ending with .safetensors")


def _preset_list() -> str:
    """The packaged presets' names for --help, read from the folder (no import of gclib.config, hence of torch)."""
    from pathlib import Path
    return ", ".join(sorted(p.stem for p in (Path(__file__).parent / "presets").glob("*.yaml"))) or "none found"


def _presets(args) -> int:
    from .config import PRESETS_DIR, flow_overlay_names, load_config, preset_names
    rows = []
    for name in preset_names():
        cfg = load_config(name)
        rows.append((name, cfg.dataset, cfg.model, f"{cfg.total_steps} steps", f"batch {cfg.batch_size}",
                     cfg.objective if cfg.objective != "consistency" else f"{cfg.schedule}, flow {cfg.flow}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    print(f"presets ({PRESETS_DIR}):")
    for r in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print(f"flow overlays (--flow): {', '.join(flow_overlay_names())}")
    print("gclib train PRESET --flow FLOW [--set KEY=VALUE ...] trains one; gclib config PRESET --flow FLOW prints "
          "its composed config, run directory and hash")
    return 0


def _config(args) -> int:
    import yaml
    from .config import config_hash, load_config, run_dir_for
    cfg = load_config(args.config, list(args.set or []), flow=args.flow, overlays=args.overlay or ())
    for section, values in cfg.to_sections().items():   # by section, one key a line (a file load_config reads back)
        print(f"{section}:")
        for key, value in values.items():
            text = yaml.safe_dump(value, default_flow_style=True).strip()
            print(f"  {key}: {text[:-3].strip() if text.endswith('...') else text}")
    print(f"# run directory: {run_dir_for(cfg)}")
    print(f"# config hash: {config_hash(cfg)}")
    return 0


def _export(args) -> int:
    from .models import export_model
    weights, config = export_model(args.source, args.out)
    print(f"wrote the EMA weights to {weights} and the config to {config}")
    return 0


PRESET_COMMANDS = {"presets": _presets, "config": _config, "export": _export}


def _reproduce_compare(args) -> int:
    from .compare import compare_command
    if args.compare is None:
        raise ValueError("--against names the committed results of --compare: add --compare")
    if args.long or args.status:
        raise ValueError(f"--compare trains nothing: drop {'--long' if args.long else '--status'}")
    return compare_command(args.compare or None, args.against, only=args.only, variants=args.variant)


if __name__ == "__main__":
    sys.exit(main())
