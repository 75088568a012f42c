"""Where training runs execute: in this process, in a local process pool, or as jobs submitted through submitit.

One small interface for the fid_curves sweeps (``gclib.experiments.fid_curves.train_sweep``) and ``gclib train``:

    spec = executor_spec({"kind": "submitit", "folder": "runs/submitit", "timeout_min": 1440,
                          "gpus_per_node": 8, "tasks_per_node": 8, "slurm_partition": "gpu"})
    ex = make_executor(spec)
    for i, result in ex.run(fn, [args_0, args_1, ...], names=[...]):   # each call's result, as it finishes
        ...

Kinds (``KINDS``):

- ``local`` (the default): ``workers`` = 1 runs the calls one after the other in this process; ``workers`` > 1
  runs that many at a time in spawned worker processes (``concurrent.futures.ProcessPoolExecutor``).
- ``submitit``: each call is a job submitted through submitit (the optional extra ``gclib[cluster]``); several
  calls go as one job array on SLURM. gclib's own keys: ``folder`` (job scripts, pickled calls, results and logs;
  default ``<runs_dir>/submitit``), ``cluster`` (``slurm``, ``local`` (one subprocess per job on this machine),
  ``debug`` (in this process) or ``auto``/None: SLURM where its commands exist, else local), ``poll_s`` (seconds
  between status checks) and ``wait`` (``gclib train`` only: false returns once the job is submitted). Every other
  key is passed to submitit's ``update_parameters``: ``timeout_min`` (required on SLURM: submitit's default is 5
  minutes), ``nodes``, ``tasks_per_node``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``name`` and the
  ``slurm_*`` keys (``slurm_partition``, ``slurm_account``, ``slurm_qos``, ``slurm_array_parallelism``,
  ``slurm_additional_parameters``, ...). Requeues: ``max_num_timeout`` (gclib's key) is how many times a job that
  reaches its time limit is requeued (submitit's ``max_num_timeout``, 3 by default; pre-emptions do not count),
  passed to the SLURM or local executor; submitit's executor arguments may also be given as such
  (``slurm_max_num_timeout``, ``local_max_num_timeout``, ``slurm_python``, ...).

A job with several tasks (``tasks_per_node`` > 1 or ``nodes`` > 1) runs one process per task with torch.distributed's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) exported from SLURM's, which is what
``gclib.distributed`` reads under torchrun; the result is rank 0's. A training job that reaches its time limit or
is pre-empted is requeued by submitit (time-outs up to ``max_num_timeout`` times, 3 by default; pre-emptions
without limit) and resumes from its newest checkpoint: submitit's signal (SIGUSR2) is held until the training step
that runs ends, a checkpoint is saved at that step, then submitit requeues the job, so no step is lost.

The results do not depend on where a run executes: every run is seeded by its configuration, and a finished run
(same configuration hash) is returned from its run directory at once (``gclib.train.train``).
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

KINDS = ("local", "submitit")
CLUSTERS = ("auto", "slurm", "local", "debug")
OWN_KEYS = ("kind", "workers", "folder", "cluster", "poll_s", "wait", "max_num_timeout")   # read by gclib
DEFAULT_POLL_S = {"slurm": 30.0, "local": 1.0, "debug": 0.0}
LOCAL_TIMEOUT_MIN = 7 * 24 * 60    # submitit's local executor kills a job after timeout_min (its default: 2 minutes)


class JobFailedError(RuntimeError):
    """Submitted jobs failed: the message names each failed run, its job id, the last line of its error and its
    log file."""


@dataclass(frozen=True)
class ExecutorSpec:
    """A validated description of an executor (see the module docstring); ``executor_spec`` builds it."""
    kind: str = "local"
    workers: int | None = None          # local: runs at a time (None: the caller's default; 1 = in this process)
    folder: str | None = None           # submitit: job folder (None: <runs_dir>/submitit)
    cluster: str = "auto"               # submitit: auto, slurm, local, debug
    poll_s: float | None = None         # submitit: seconds between status checks (None: by cluster)
    wait: bool = True                   # submitit: wait for the jobs' results
    parameters: dict = field(default_factory=dict)   # submitit's update_parameters
    max_num_timeout: int | None = None  # submitit: requeues after a time-out (None: submitit's default, 3)
    constructor: dict = field(default_factory=dict)  # submitit's executor arguments (slurm_max_num_timeout, ...)


def _submitit():
    try:
        import submitit
    except ImportError as e:
        from .checks import MissingExtraError
        raise MissingExtraError("executor 'submitit' needs the optional package 'submitit', which is not installed: "
                                "pip install 'gclib[cluster]' (or pip install submitit)") from e
    return submitit


def _submitit_parameter_names() -> tuple[set, dict]:
    """(submitit's shared parameter names, {executor name: its own parameter names})."""
    submitit = _submitit()
    from submitit.core import plugins
    shared = set(submitit.AutoExecutor._typed_parameters())
    return shared, {name: set(ex._valid_parameters()) for name, ex in plugins.get_executors().items()}


def _constructor_names() -> set:
    """submitit's executor arguments as AutoExecutor takes them, ``<executor>_<argument>`` (slurm_max_num_timeout,
    local_max_num_timeout, slurm_python, ...): read from each executor's constructor."""
    import inspect
    _submitit()
    from submitit.core import plugins
    out = set()
    for name, ex in plugins.get_executors().items():
        for arg, p in inspect.signature(ex.__init__).parameters.items():
            if arg not in ("self", "folder") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.add(f"{name}_{arg}")
    return out


def _timeouts(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"executor {key}={value!r} is not valid; it must be a whole number >= 0 (how many times a "
                         f"job that reaches its time limit is requeued)")
    return value


def _check_parameters(params: dict) -> None:
    """Name-level check of submitit parameters, so a typo fails before anything is submitted (submitit checks the
    values again when the executor is built)."""
    shared, own = _submitit_parameter_names()
    for key in params:
        if key in shared:
            continue
        prefix, _, arg = key.partition("_")
        if prefix in own and (arg in own[prefix] or arg in shared):
            continue
        known = sorted(shared) + [f"{p}_<{'|'.join(sorted(a)[:6])}{'|...' if len(a) > 6 else ''}>"
                                  for p, a in sorted(own.items()) if p in ("slurm", "local")] + \
            sorted(k for k in _constructor_names() if k.endswith("max_num_timeout"))
        raise ValueError(f"executor parameter {key!r} is not one of gclib's ({', '.join(OWN_KEYS)}) nor submitit's "
                         f"({', '.join(known)})")


def executor_spec(value=None) -> ExecutorSpec:
    """Validate an executor description: None or "local" (today's default), "submitit", a dict of the keys in the
    module docstring, or an ``ExecutorSpec``. Raises ValueError (one line naming the key) on a bad value and
    ModuleNotFoundError when submitit is asked for but not installed."""
    if isinstance(value, ExecutorSpec):
        return value
    if value is None:
        return ExecutorSpec()
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, dict):
        raise ValueError(f"executor={value!r} is not valid: give 'local', 'submitit' or a dict such as "
                         "{'kind': 'submitit', 'folder': 'runs/submitit', 'timeout_min': 600}")
    d = dict(value)
    kind = d.pop("kind", "submitit" if set(d) - {"workers"} else "local")
    if kind not in KINDS:
        raise ValueError(f"executor kind={kind!r} is not valid; allowed values: {', '.join(map(repr, KINDS))}")
    workers = d.pop("workers", None)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"executor workers={workers!r} is not valid; it must be a positive integer")
    if kind == "local":
        if d:
            raise ValueError(f"executor kind='local' takes only 'workers'; {', '.join(map(repr, sorted(d)))} "
                             "belong to kind='submitit'")
        return ExecutorSpec("local", workers)
    if workers is not None:
        raise ValueError("executor workers=... is for kind='local'; with submitit every run is its own job (limit "
                         "how many run at once with slurm_array_parallelism)")
    folder = d.pop("folder", None)
    if folder is not None and (not isinstance(folder, (str, Path)) or not str(folder)):
        raise ValueError(f"executor folder={folder!r} is not valid; give a directory path")
    cluster = d.pop("cluster", None) or "auto"
    if cluster not in CLUSTERS:
        raise ValueError(f"executor cluster={cluster!r} is not valid; allowed values: {', '.join(map(repr, CLUSTERS))}")
    poll_s = d.pop("poll_s", None)
    if poll_s is not None and (isinstance(poll_s, bool) or not isinstance(poll_s, (int, float)) or poll_s < 0):
        raise ValueError(f"executor poll_s={poll_s!r} is not valid; it must be a number of seconds >= 0")
    wait = d.pop("wait", True)
    if not isinstance(wait, bool):
        raise ValueError(f"executor wait={wait!r} is not valid; it must be true or false")
    max_num_timeout = d.pop("max_num_timeout", None)
    if max_num_timeout is not None:
        _timeouts("max_num_timeout", max_num_timeout)
    names = _constructor_names()
    constructor = {k: d.pop(k) for k in list(d) if k in names}
    for key, value in constructor.items():
        if key.endswith("_max_num_timeout"):
            _timeouts(key, value)
            if max_num_timeout is not None:
                raise ValueError(f"executor max_num_timeout={max_num_timeout!r} and {key}={value!r} both set the "
                                 f"requeue limit; keep one")
    _check_parameters(d)
    return ExecutorSpec("submitit", None, None if folder is None else str(folder), cluster,
                        None if poll_s is None else float(poll_s), wait, d, max_num_timeout, constructor)


def parse_assignments(items: Sequence[str] | None) -> dict:
    """``["folder=runs/sub", "timeout_min=600", "slurm_partition=gpu"]`` -> a dict (values read as YAML scalars:
    600 is an int, true a bool); the form of ``gclib train --submit KEY=VALUE``. ``folder`` is a path, taken as
    written ('~' expanded), never YAML."""
    import yaml
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--submit {item!r}: expected KEY=VALUE, e.g. --submit timeout_min=600")
        if key.strip() == "folder":
            out["folder"] = os.path.expanduser(text) if text else None
            continue
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ValueError(f"--submit {item}: the value is not valid YAML; quote it") from None
    return out


# --------------------------------------------------------------------------------------------- executors
class InProcess:
    """Each call in this process, in order."""
    kind = "local"

    def run(self, fn: Callable, calls: Sequence[tuple], names: Sequence[str] | None = None) -> Iterator[tuple[int, Any]]:
        for i, args in enumerate(calls):
            yield i, fn(*args)


WAKE_S = 0.5   # the longest a pool's parent waits before it looks at a signal again


def worker_init() -> None:
    """What a spawned worker process does first (``LocalPool``'s initializer; benchmarks/gpu_train.py's too): import
    the user's plugins, then take gclib's stop signals for its whole life (``signals.install``), so a training run
    in it saves a checkpoint at the step it is on when SIGTERM or SIGUSR1 arrives, whether from the scheduler (it
    signals every process of a job) or forwarded by its pool, or both."""
    from . import signals
    from .plugins import load_plugins
    load_plugins()
    signals.install(repeat_aborts=False)


def stop_pool(pool, signum: int) -> None:
    """Stop a ``concurrent.futures.ProcessPoolExecutor``: the calls not started are dropped and ``signum`` goes to
    each live worker process (its ``_processes``, read before the shutdown empties it: the standard library keeps
    no public list), so each training run saves its step and stops; the caller's ``with`` waits for them."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signum)


class LocalPool:
    """``workers`` calls at a time in spawned worker processes (``worker_init``); results as they finish. When the
    caller stops (a stop signal, Ctrl-C, or it stops reading the results), the calls not started are dropped and
    every running one gets the stop signal, so each training run saves a checkpoint at its current step and the same
    command resumes it; an error of one call leaves the others running to their end, as before."""
    kind = "local"

    def __init__(self, workers: int):
        self.workers = int(workers)

    def run(self, fn: Callable, calls: Sequence[tuple], names: Sequence[str] | None = None) -> Iterator[tuple[int, Any]]:
        import multiprocessing as mp
        import signal
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                 initializer=worker_init) as pool:
            futures = {pool.submit(fn, *args): i for i, args in enumerate(calls)}
            pending = set(futures)
            try:
                while pending:
                    # a bounded wait: a signal the kernel hands to another thread of this process runs its Python
                    # handler only when the main thread wakes, and an unbounded wait would last until a call ends
                    done, pending = wait(pending, timeout=WAKE_S, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield futures[fut], fut.result()
            except (KeyboardInterrupt, GeneratorExit) as e:   # signals.Terminated is a KeyboardInterrupt
                stop_pool(pool, getattr(e, "signum", signal.SIGTERM))
                raise


class Job:
    """A picklable call run inside a submitit job: it works in the submitting directory, exports torch.distributed's
    environment when the job has several tasks, and, on a time-out or pre-emption, asks submitit to requeue the
    same call. A training call (first argument a config dict) is requeued with ``resume: true``, so it continues
    from its newest checkpoint."""

    def __init__(self, fn: Callable, cwd: str | None = None):
        self.fn, self.cwd = fn, cwd or os.getcwd()

    def __call__(self, *args, **kwargs):
        from .plugins import load_plugins
        os.chdir(self.cwd)
        _export_distributed()
        load_plugins()   # the user's couplings, metrics and data sets ($GCLIB_PLUGINS travels with the job)
        from . import signals
        with signals.handle(_preemption_signals()) as theirs:   # training: a checkpoint at the current step first
            try:
                return self.fn(*args, **kwargs)
            except signals.Terminated as e:
                stopped = e
        handler = theirs.get(stopped.signum)
        if callable(handler):   # submitit's own handler, as if the signal came now: checkpoint(), requeue, exit
            handler(stopped.signum, None)
        raise stopped

    def checkpoint(self, *args, **kwargs):
        """submitit calls this before a time-out or pre-emption; the returned submission is requeued."""
        from submitit.helpers import DelayedSubmission
        if args and isinstance(args[0], dict) and "resume" in args[0]:
            args = ({**args[0], "resume": True},) + tuple(args[1:])
        return DelayedSubmission(Job(self.fn, self.cwd), *args, **kwargs)


def _preemption_signals() -> tuple:
    """The signal submitit's job sends before a time-out or pre-emption (SIGUSR2 unless $SUBMITIT_PREEMPT_SIGNAL
    says otherwise), when this process is a submitit job; else (). ``Job`` defers it to the end of the training
    step that runs (``gclib.signals``), which saves a checkpoint there, then lets submitit's handler requeue."""
    env = _job_environment()
    return (env._usr_sig(),) if env is not None else ()


def _job_environment():
    """submitit's JobEnvironment when this process is a submitit job, else None."""
    try:
        from submitit import JobEnvironment
        env = JobEnvironment()
    except (ImportError, RuntimeError):   # RuntimeError: not in a job (no environment submitit knows)
        return None
    return env if env.activated() else None


def _export_distributed() -> None:
    """In a submitit job of several tasks: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from SLURM's
    environment (CUDA_VISIBLE_DEVICES is left alone: gclib.distributed picks the GPU by LOCAL_RANK)."""
    env = _job_environment()
    if env is not None and env.num_tasks > 1 and "WORLD_SIZE" not in os.environ:
        from submitit.helpers import TorchDistributedEnvironment
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


class Submitit:
    """Each call a submitit job (a job array when there are several); results as the jobs finish."""
    kind = "submitit"

    def __init__(self, spec: ExecutorSpec, default_folder=None):
        self.spec = spec
        self.folder = Path(spec.folder or Path(default_folder or "runs") / "submitit")
        submitit = _submitit()
        self.cluster = spec.cluster if spec.cluster != "auto" else submitit.AutoExecutor.which()
        params = dict(spec.parameters)
        if self.cluster == "slurm" and "timeout_min" not in params and "slurm_time" not in params:
            raise ValueError("executor on SLURM: give timeout_min (minutes per job; submitit's default is 5, and a "
                             "job past it is requeued from its last checkpoint at most max_num_timeout times, 3 by "
                             "default)")
        if self.cluster != "slurm":
            params.setdefault("timeout_min", LOCAL_TIMEOUT_MIN)
        params.setdefault("name", "gclib")
        constructor = dict(spec.constructor)
        if spec.max_num_timeout is not None and f"{self.cluster}_max_num_timeout" in _constructor_names():
            constructor[f"{self.cluster}_max_num_timeout"] = spec.max_num_timeout
        try:
            self.executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster, **constructor)
            self.executor.update_parameters(**params)
        except (NameError, AssertionError, TypeError) as e:
            raise ValueError("executor parameters: " + " ".join(str(e).split())) from e
        self.poll_s = spec.poll_s if spec.poll_s is not None else DEFAULT_POLL_S.get(self.cluster, 10.0)

    def submit(self, fn: Callable, calls: Sequence[tuple]) -> list:
        """Submit every call (one job array when several); returns submitit's jobs."""
        job_fn = fn if isinstance(fn, Job) else Job(fn)
        with self.executor.batch():
            jobs = [self.executor.submit(job_fn, *args) for args in calls]
        return jobs

    def describe(self, jobs: Sequence) -> str:
        ids = [j.job_id for j in jobs]
        shown = ", ".join(ids[:4]) + (f", ... ({len(ids)} in all)" if len(ids) > 4 else "")
        return (f"submitted {len(jobs)} job{'s' if len(jobs) != 1 else ''} through submitit ({self.cluster}): "
                f"{shown}; logs in {self.folder}")

    def collect(self, jobs: Sequence, names: Sequence[str] | None = None) -> Iterator[tuple[int, Any]]:
        """(index, result) of each job as it finishes (rank 0's result for a job of several tasks). After the last
        one, JobFailedError names every job that failed (the others' results were yielded)."""
        names = list(names) if names is not None else [f"call {i}" for i in range(len(jobs))]
        pending, failed = list(range(len(jobs))), []
        while pending:
            for i in list(pending):
                job = jobs[i]
                if not job.done():
                    continue
                pending.remove(i)
                try:
                    result = job.results()[0]
                except Exception as e:  # the job's own error (FailedJobError) or a lost job (UncompletedJobError)
                    failed.append((i, job, e))
                    continue
                yield i, result
            if pending and self.poll_s:
                time.sleep(self.poll_s)
        if failed:
            parts = []
            for i, job, e in failed:
                parts.append(f"{names[i]} (job {job.job_id}): {_error_line(e)} [log: {job.paths.stderr}]")
            raise JobFailedError(f"{len(failed)} of {len(jobs)} submitted jobs failed: " + "; ".join(parts))

    def run(self, fn: Callable, calls: Sequence[tuple], names: Sequence[str] | None = None) -> Iterator[tuple[int, Any]]:
        jobs = self.submit(fn, calls)
        print(self.describe(jobs), flush=True)
        yield from self.collect(jobs, names)


def _train_call(cfg: dict) -> tuple:
    from .train import train
    res = train(cfg)
    return str(res.run_dir), int(res.step), str(res.checkpoint), bool(res.skipped)


def submit_train(config, spec) -> tuple | None:
    """``gclib train`` through submitit: one job that trains ``config`` (a Config, dict or YAML path; relative
    paths are read in the submitting directory). Prints the job id and its log folder; returns
    (run_dir, step, checkpoint, skipped) when the job ends, or None at once when ``spec.wait`` is false.
    JobFailedError names the job and its log when it fails."""
    from .config import as_config
    spec = executor_spec(spec)
    if spec.kind != "submitit":
        raise ValueError(f"submit_train needs executor kind='submitit', not {spec.kind!r}")
    cfg = as_config(config)
    ex = Submitit(spec, cfg.runs_dir)
    jobs = ex.submit(_train_call, [(cfg.to_dict(),)])
    print(ex.describe(jobs), flush=True)
    if not spec.wait:
        print(f"not waiting (wait=false): the job trains {cfg.name} and writes its run directory as gclib train does; "
              f"its log: {jobs[0].paths.stdout}", flush=True)
        return None
    for _, result in ex.collect(jobs, [cfg.name]):
        return result
    return None


_EXC_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt))\b(.*)$")


def _error_line(e: BaseException) -> str:
    """The exception line of a failed job's traceback ('ConfigError: hidden=-3 is out of range ...'), else the
    first line of the error."""
    lines = [l.rstrip() for l in str(e).splitlines() if l.strip()]
    found = [m for m in map(_EXC_LINE.match, lines) if m]
    if found:
        return found[-1].group(1) + found[-1].group(2)
    return lines[0] if lines else type(e).__name__


def make_executor(spec=None, workers: int = 1, default_folder=None):
    """The executor of ``spec`` (anything ``executor_spec`` accepts). ``workers``: the local default when the spec
    does not set it (1: in this process). ``default_folder``: the parent of submitit's job folder when the spec has
    no ``folder`` (e.g. the runs directory)."""
    spec = executor_spec(spec)
    if spec.kind == "submitit":
        return Submitit(spec, default_folder)
    n = spec.workers if spec.workers is not None else int(workers)
    return LocalPool(n) if n > 1 else InProcess()
