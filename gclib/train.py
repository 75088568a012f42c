"""The training loop: a sequence of small named stages around one ``RunState``.

    result = train(config, eval_fns=(), data=None)   # config: Config, dict or YAML path -> TrainResult
    model, ema_model, cfg = result.load()            # or gclib.models.load_model(result.checkpoint)

Stages: ``_setup`` (data, model, EMA, optimiser, predictor, random streams), ``_resume`` (newest valid
checkpoint of this configuration), ``_train_step`` (one optimiser step and its metrics row), ``_side_tasks``
(sample grid and evaluation), ``_checkpoint`` and ``_finish`` (done.json). Model building and loading live in
``gclib.models``, torchrun set-up in ``gclib.distributed``, the run directory's files and lock in ``gclib.rundir``,
the ``RunState`` / ``TrainResult`` and each step's metrics row in ``gclib.train_state``, and where a run starts and
ends (done.json, the lock, ``_resume``, a stop on a signal, ``_finish``) in ``gclib.train_resume``; this module
re-exports their names.

Run directory ``<runs_dir>/<name>-<config_hash>`` (or ``run_dir``): ``config.yaml``, ``metrics.csv`` (one row per
step: step, loss, num_points, lr, gc_fraction, seconds, samples_per_s[, ot_batch]), ``eval.csv`` (one row per
evaluation), ``log.jsonl`` (the status records that rank 0 also prints to stdout every ``log_every`` steps;
``gclib.runlog``), ``tensorboard/`` (with ``tensorboard: true``), ``samples/step-<step>.png``,
``checkpoints/ckpt-<step>.pt``, ``done.json`` once finished, and the
``lock`` held while a process trains it (a second process stops at once, naming the holder). ``train`` returns at
once (``skipped=True``) when ``done.json`` says a run with the same hash finished.

Exactness: each step draws its batch from a ``BatchIterator`` (state: the number of batches drawn) and its noise,
intervals and GC mask each from its own stream (``gclib.rng.Streams``: runs that differ only in the flow or mu see
the same data, z and intervals at one seed); dropout uses the global torch RNG. With flow ot the pairing of step k+1
is solved on a worker thread during step k from copies of that state (``gclib.prefetch``; ``ot_prefetch``), which
changes no number. The evaluation and the sample grid
of a step run BEFORE its checkpoint (under ``preserve_rng``, with their own seeds), so a process killed at any
moment and resumed replays the lost steps and ends with weights, metrics.csv, eval.csv and samples/ identical to an
uninterrupted run. A checkpoint written by another configuration is refused (``resume: false`` starts afresh).
Under gclib's signal handler (``gclib.signals``: ``gclib train``, submitit jobs) SIGTERM / SIGUSR1 stop the loop
after the step that runs: its checkpoint is saved (marked ``off_schedule``: it rotates nothing, and the next
scheduled checkpoint removes it, so the resumed run keeps the checkpoints an uninterrupted one keeps) and
``TrainingStopped`` names it.

DDP (``torchrun --nproc_per_node=N -m gclib train CONFIG``): ``batch_size`` is the global batch, split evenly; each
rank draws its own noise (seed + rank) and its shard of each global batch; gradients are averaged by DDP; logged
losses are averaged over ranks; rank 0 holds the lock and writes logs and checkpoints (which hold every rank's RNG
state). The OT flow matches per rank (OT batch = batch_size / N, logged as ``ot_batch``), so on N > 1 processes
N is part of an OT run's hash (``gclib.config.config_hash(cfg, world_size=N)``). The GC predictor is the
unwrapped EMA model.
"""
from __future__ import annotations

import contextlib
import csv
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import distributed, machine, signals
from .checkpoint import CheckpointError, atomic_save, ckpt_path, load_checkpoint, preserve_rng, rng_state, rotate
from .config import Config, ConfigError, as_config, config_hash, part, preflight, run_dir_for
from .couplings import REGISTRY as COUPLINGS, make_coupling
from .data import BatchIterator, load_dataset
from .ema import EMA
from .evaluation import make_evaluation
from .images import save_samples
from .models import build_model, data_shape, load_model, load_weights
from .optim import make_optimizer
from .prefetch import OTPrefetcher
from .runlog import RunLog
from .rng import Streams
from .rundir import (RunLockedError, RunPaths, check_run_dir, read_eval, start_metrics, truncate_metrics,
                     write_config, write_eval)  # RunPaths: the run directory's layout
from .objectives import make_loss, prefetches_ot
from .step import NonFiniteLossError, train_step
# the bookkeeping around the loop, in rooms of its own (the loop's stages whose names tests patch stay here);
# re-exported, so `from gclib.train import ...` finds every name it found before (gclib.stack's stages among them)
from .train_resume import _finish, _finished, _lock, _resume, _stop, _stop_signal
from .train_state import (METRIC_COLUMNS, EvalFn, RunState, TrainResult, _checkpoint_due, _close_logs,
                          _record_step, _side_tasks_due)

__all__ = ["train", "TrainResult", "RunState", "load_model", "build_model", "data_shape", "save_samples",
           "NonFiniteLossError", "RunLockedError", "METRIC_COLUMNS"]


# --------------------------------------------------------------------------------------------- stages
def _gpu_flags(cfg: Config, device: torch.device) -> dict:
    flags = {"bf16": cfg.bf16, "channels_last": cfg.channels_last, "compile": cfg.compile}
    if device.type != "cuda":
        for k, v in flags.items():
            if v:
                warnings.warn(f"{k}=true is a CUDA speed option; ignored on device {device.type!r}", RuntimeWarning,
                              stacklevel=4)
        return {k: False for k in flags}
    if cfg.channels_last and cfg.model == "mlp":
        warnings.warn("channels_last=true has no effect with model='mlp'; ignored", RuntimeWarning, stacklevel=4)
        flags["channels_last"] = False
    return flags


def _resolve_predictor(cfg: Config, raw_model, device):
    if not COUPLINGS[cfg.flow].needs_predictor:   # not part of this run (nor of its hash): nothing to load
        return "ema"
    if cfg.predictor == "ema":
        return "ema"
    if cfg.predictor == "online":
        return raw_model  # unwrapped: a no-grad forward outside DDP's bookkeeping
    p = Path(cfg.predictor)
    if not p.is_file():
        raise ConfigError(f"predictor={cfg.predictor!r}: the frozen predictor's checkpoint file does not exist")
    try:
        _, frozen, _ = load_model(p, device)
    except CheckpointError as e:
        raise CheckpointError(f"predictor={cfg.predictor!r}: {e}") from None
    return frozen


def _setup(st: RunState, data: torch.Tensor | None) -> None:
    cfg, d = st.cfg, st.dist
    st.flags = _gpu_flags(cfg, st.device)
    if data is None:
        source = part(cfg, "data")   # the data set from its section (name, root, download, n), the run's seed
        data = load_dataset(**{**source, "download": source["download"] and d.main}, seed=cfg.seed)
        if cfg.download and d.world_size > 1:
            distributed.barrier(d)
            if not d.main:
                data = load_dataset(**{**source, "download": False}, seed=cfg.seed)
    st.data, st.shape = data, tuple(data.shape[1:])

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    st.raw_model = build_model(cfg, st.shape).to(st.device)
    if cfg.init_checkpoint:  # fine-tuning: start from another run's EMA weights (e.g. a denoising pre-training)
        init = load_checkpoint(cfg.init_checkpoint)
        load_weights(st.raw_model, init["ema"], cfg.init_checkpoint, "EMA (init_checkpoint)")
    if st.flags["channels_last"]:
        st.raw_model = st.raw_model.to(memory_format=torch.channels_last)
    st.ema = EMA(st.raw_model, every=cfg.ema_every, max_decay=cfg.ema_decay)
    st.optimizer = make_optimizer(params=st.raw_model.parameters(), **part(cfg, "optim"))   # from its section
    st.predictor = _resolve_predictor(cfg, st.raw_model, st.device)
    # the coupling built from its section (name and settings), the registered loss around it
    st.loss = make_loss(cfg, make_coupling(**part(cfg, "coupling")), predictor=st.predictor)
    st.evaluation = make_evaluation(**part(cfg, "eval"), seed=cfg.seed, sigma_max=cfg.sigma_max)   # from its section
    st.batches = BatchIterator(data, st.per_rank_batch, seed=cfg.seed, rank=d.rank, world_size=d.world_size)
    rank_seed = cfg.seed + 100_003 * d.rank
    torch.manual_seed(rank_seed)
    np.random.seed(rank_seed % 2 ** 32)
    random.seed(rank_seed)
    st.streams = Streams.from_seed(rank_seed)  # noise, intervals, GC mask: each its own stream
    st.columns = list(METRIC_COLUMNS) + list(_coupling_columns(st))


def _coupling_columns(st: RunState) -> tuple:
    """The metrics.csv columns of the loss's coupling (``Coupling.log_columns``: OT's ``ot_batch``)."""
    coupling = st.loss.coupling if st.loss is not None else None
    return tuple(coupling.log_columns) if coupling is not None else ()


def _wrap_model(st: RunState) -> None:
    st.model = st.raw_model
    if st.dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        st.model = DDP(st.raw_model, device_ids=[st.device.index] if st.device.type == "cuda" else None)
    if st.flags["compile"]:
        st.model = torch.compile(st.model)


def _open_logs(st: RunState) -> None:
    """config.yaml; metrics.csv cut back to the resumed step (or started); the evaluation rows kept so far."""
    if not st.dist.main:
        return
    st.paths.run_dir.mkdir(parents=True, exist_ok=True)
    write_config(st.paths.config_yaml, st.cfg.to_dict(), st.chash)
    if st.step > 0:
        truncate_metrics(st.paths.metrics_csv, st.step, st.columns)
        st.eval_rows = read_eval(st.paths.eval_csv, st.step)
        if st.eval_rows or st.paths.eval_csv.exists():
            write_eval(st.paths.eval_csv, st.eval_rows)
    else:
        start_metrics(st.paths.metrics_csv, st.columns)
        st.paths.eval_csv.unlink(missing_ok=True)
    st.log = open(st.paths.metrics_csv, "a", newline="")
    st.writer = csv.writer(st.log)
    cfg = st.cfg
    said = st.loss.coupling.describe() if st.loss.coupling is not None else ""
    describe = (f"batch {cfg.batch_size}, flow {cfg.flow}" + (f" ({said})" if said else "") +
                f", {st.device.type}" + (f" x {st.dist.world_size} processes" if st.dist.world_size > 1 else ""))
    st.runlog = RunLog(st.paths.run_dir, name=cfg.name, total_steps=cfg.total_steps, batch_size=cfg.batch_size,
                       log_every=cfg.log_every, start_step=st.step, resumed_from=st.last_ckpt, config_hash=st.chash,
                       describe=describe, metrics_csv=st.paths.metrics_csv, tensorboard=cfg.tensorboard)


def _train_step(st: RunState, step: int, autocast) -> None:
    """Optimiser step ``step`` (1-based) and its metrics row."""
    k = step - 1
    st.loss.update_schedule(k)  # the iCT curriculum's grid N(k), ECT's stage at k
    n, extra = st.loss.num_points, {}
    t0 = time.perf_counter()
    if st.prefetch is not None:  # flow ot: this step's pairing was solved while the previous step ran
        xb, zb, perm = st.prefetch.take()  # waiting for it (if at all) counts as step time, as solving did
        x = xb.to(st.device, non_blocking=True)
        extra.update(z=zb.to(st.device), ot_perm=perm)
    else:
        x = next(st.batches).to(st.device, non_blocking=True)
    if st.flags["channels_last"] and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    if st.prefetch is None:
        t0 = time.perf_counter()
    try:
        with autocast:
            res = train_step(st.model, st.optimizer, x, st.loss, step=k, ema=st.ema, generator=st.streams, **extra)
    except NonFiniteLossError as e:
        kept = f"last good checkpoint: {st.last_ckpt}" if st.last_ckpt else "no checkpoint was written yet"
        raise NonFiniteLossError(f"non-finite loss at step {step} of run {st.paths.run_dir}: training stopped "
                                 f"({e}); {kept}") from e
    if st.device.type == "cuda":
        torch.cuda.synchronize(st.device)
    _record_step(st, step, n, res.loss, res.gc_fraction, time.perf_counter() - t0)


def _side_tasks(st: RunState, step: int, final: bool) -> None:
    """The sample grid and the evaluation of ``step`` (rank 0), before its checkpoint."""
    cfg = st.cfg
    do_eval, do_samples = _side_tasks_due(st, step, final)
    if not st.dist.main or not (do_eval or do_samples):
        return
    with preserve_rng(st.device):
        if do_samples:
            if st.fixed_noise is None:
                g = torch.Generator().manual_seed(cfg.seed + 7)
                st.fixed_noise = torch.randn((cfg.sample_n, *st.shape), generator=g).to(st.device)
            with torch.no_grad():
                x = st.ema.model(cfg.sigma_max * st.fixed_noise, cfg.sigma_max)
            png = save_samples(x, st.paths.samples / f"step-{step:08d}.png", st.data if len(st.shape) == 1 else None)
            if st.runlog is not None:
                st.runlog.samples(step, x, png)   # TensorBoard's sample picture (tensorboard: true)
        if do_eval:
            row = {"step": step}
            row.update(st.evaluation(st.ema.model, st.data))
            for fn in st.eval_fns:
                out = fn(step, st.ema.model)
                if not isinstance(out, dict):
                    raise TypeError(f"eval function {fn!r} returned {type(out).__name__}; it must return a dict")
                row.update({k: float(v) for k, v in out.items()})
            st.eval_rows = [r for r in st.eval_rows if r["step"] != step] + [row]
            write_eval(st.paths.eval_csv, st.eval_rows)
            if st.runlog is not None:
                st.runlog.evaluation(row)


def _checkpoint(st: RunState, step: int, scheduled: bool = True) -> None:
    """The checkpoint of ``step``. A scheduled one (checkpoint_every, the last step) removes the checkpoints saved
    on a signal before it and rotates; one saved on a signal (``scheduled=False``) is marked ``off_schedule`` and
    rotates nothing, so the resumed run keeps exactly the checkpoints an uninterrupted run keeps."""
    states = distributed.gather(rng_state(st.streams, st.device), st.dist)
    path = ckpt_path(st.paths.ckpt_dir, step)
    if st.dist.main:
        atomic_save({
            "step": step, "model": st.raw_model.state_dict(), "ema": st.ema.state_dict(),
            "optimizer": st.optimizer.state_dict(), "rng": states, "data": st.batches.state_dict(),
            "config": st.cfg.to_dict(), "config_hash": st.chash, "world_size": st.dist.world_size,
            "data_shape": list(st.shape), "elapsed": st.elapsed, "format": 2,
            **({} if scheduled else {"off_schedule": True}),
        }, path)
        for old in st.off_schedule:   # superseded by the checkpoint just written
            if old != path:
                old.unlink(missing_ok=True)
        if scheduled:
            rotate(st.paths.ckpt_dir, st.cfg.keep_checkpoints)
    st.off_schedule = [] if scheduled else [path]
    distributed.barrier(st.dist)
    st.last_ckpt = path


def _loop(st: RunState) -> None:
    cfg = st.cfg
    show = cfg.progress if isinstance(cfg.progress, bool) else sys.stderr.isatty()
    from tqdm import tqdm
    bar = tqdm(total=cfg.total_steps, initial=st.step, disable=not (show and st.dist.main), desc=cfg.name,
               dynamic_ncols=True)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if st.flags["bf16"] else contextlib.nullcontext()
    if cfg.ot_prefetch and prefetches_ot(st.loss):
        st.prefetch = OTPrefetcher(st.batches, st.streams.noise, st.loss.coupling.solve)
    if st.runlog is not None and not bar.disable:  # status lines above the bar, not through it
        st.runlog.printer = lambda line: bar.write(line, file=sys.stdout)
    try:
        with signals.at_step_boundaries():   # SIGTERM / SIGUSR1 under gclib's handler: stop after a whole step
            for step in range(st.step + 1, cfg.total_steps + 1):
                _train_step(st, step, autocast)
                bar.update(1)
                if bar.n % 10 == 0 or step == cfg.total_steps:
                    bar.set_postfix(loss=f"{st.last_loss:.4g}", N=st.last_n)
                final = step == cfg.total_steps
                _side_tasks(st, step, final)
                due = _checkpoint_due(st, step, final)
                stop = 0 if final else _stop_signal(st)
                if due or stop:
                    _checkpoint(st, step, scheduled=due)
                if stop:
                    _stop([st], step, stop)
    finally:
        bar.close()
        if st.prefetch is not None:
            st.prefetch.close()
            st.prefetch = None
        _close_logs(st)


# --------------------------------------------------------------------------------------------- entry point
def train(config, eval_fns: Sequence[EvalFn] = (), data: torch.Tensor | None = None) -> TrainResult:
    """Train a consistency model as configured; returns a ``TrainResult``.

    config: a ``Config``, a dict of its fields or a YAML path. eval_fns: callables ``fn(step, ema_model) -> dict``
    run every ``eval_every`` steps and at the end (rank 0), rows appended to eval.csv with the built-in
    ``eval_metrics``. data: an optional training set tensor (N, ...) replacing ``dataset`` (float32 in the model's
    scale, or uint8 images); it is not part of the config hash, so give such runs their own ``run_dir`` or name.
    Raises NonFiniteLossError naming the step if the loss becomes NaN/inf (the checkpoints already written stay),
    RunLockedError if another process trains the same run directory, CheckpointError for a checkpoint of another
    configuration.
    """
    cfg = as_config(config)
    world = distributed.world_size()
    chash = config_hash(cfg, world_size=world)   # the number of processes counts only where it changes the run
    paths = RunPaths(run_dir_for(cfg, world_size=world))
    done = _finished(cfg, chash, paths, world)
    if done:
        return done
    check_run_dir(paths.run_dir)   # a folder gclib cannot train in: one line, before anything is written
    preflight(cfg)  # what the run needs beyond its values (packages, files, a GPU), before anything is written
    d, device = distributed.setup(cfg)
    lock = None
    try:
        lock = _lock(paths, d)
        done = _finished(cfg, chash, paths, world)  # another process may have finished it while we waited
        if done:
            return done
        with machine.cpu_threads(device):   # gclib's thread count on the CPU, the caller's put back after
            st = RunState(cfg, chash, paths, d, device, tuple(eval_fns))
            _setup(st, data)
            _resume(st)
            _wrap_model(st)
            _open_logs(st)
            _loop(st)
            return _finish(st)
    finally:
        if lock:
            lock.release()
        distributed.teardown(d)
