"""``gclib train``: one run, one run per seed (``--seeds``, ``--stack``), or a submitit job. Part of ``gclib.cli``
(which builds the parser); a bad combination of options is one ValueError before anything is loaded or trained.
"""
from __future__ import annotations

import os
import sys

from . import signals
from .cli_errors import _one_line


def _train(args) -> int:
    from .config import load_config
    from .train import train
    overrides = list(args.set or [])
    if args.run_dir is not None:   # a path, never YAML (gclib.config.path_value): not "runs/exp2" for "runs/exp2 #2"
        overrides.append(_run_dir_override(args.run_dir))
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


def _run_dir_override(text: str) -> str:
    """``--run-dir`` as the override ``run_dir=<path>``: the text as written, '~' expanded as a shell does; even
    'null', 'None' or '~' name a folder (gclib.config.path_value reads the override as a path)."""
    if not text:
        raise ValueError("--run-dir '': give a folder (or leave --run-dir out for <runs_dir>/<name>-<hash>)")
    path = os.path.expanduser(text)
    from .config import NULL_WORDS
    return f"run_dir={'./' + path if path in NULL_WORDS else path}"


def _train_seeds(args, overrides: list) -> int:
    """``--seeds``: one run per seed (the config's other settings kept), one after another, or with ``--stack`` all
    at once in one process (gclib.stack: their networks evaluated as one)."""
    from .config import load_config, parse_overrides
    if args.run_dir is not None:
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
        results = []
        for c in cfgs:   # a signal during a run's last step stops the command before the next run
            signals.raise_if_requested(f"after {len(results)} of {len(cfgs)} runs finished")
            results.append(train(c))
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
