"""Where a training run starts and ends (``gclib.train``'s bookkeeping around the loop).

``_finished`` (done.json says this configuration finished: ``train`` returns it at once), ``_check_world_size``
(a run or checkpoint of this configuration on another number of processes, where that is another experiment),
``_lock`` (rank 0 takes the run directory's lock, every rank learns the outcome), ``_resume`` / ``_start_fresh``
(the newest valid checkpoint of this configuration into the ``RunState``, or ``resume: false``), ``_stop_signal`` /
``_stop`` (SIGTERM / SIGUSR1 under ``gclib.signals``: the ranks agree on the step, ``TrainingStopped`` names its
checkpoints) and ``_finish`` (done.json). Moved out of ``gclib.train`` unchanged, which re-exports every name.
"""
from __future__ import annotations

import warnings

from . import distributed, signals
from .checkpoint import CheckpointError, ckpt_path, list_checkpoints, newest_valid, set_rng_state
from .config import Config, config_hash
from .models import load_weights
from .rng import Streams
from .rundir import RunLock, RunLockedError, RunPaths, done_checkpoint, read_json_guarded, write_done
from .train_state import RunState, TrainResult


def _finished(cfg: Config, chash: str, paths: RunPaths, world_size: int = 1) -> TrainResult | None:
    """The finished run's result when done.json says this configuration finished (and its checkpoint exists).
    A run of this configuration finished on another number of processes where that changes the experiment
    (``gclib.config.pairs_per_rank``) is refused (CheckpointError), not reused or trained over."""
    if not cfg.resume:
        return None
    done = read_json_guarded(paths.done_json)
    if not done:
        return None
    _check_world_size(cfg, chash, done.get("config_hash"), done.get("world_size"), f"run {paths.run_dir}",
                      "finished", world_size)
    final = done_checkpoint(paths.run_dir, done)
    if done.get("config_hash") == chash and done.get("step") == cfg.total_steps and final.is_file():
        return TrainResult(paths.run_dir, cfg.total_steps, final, paths.metrics_csv, paths.eval_csv, cfg, skipped=True)
    return None


def _check_world_size(cfg: Config, chash: str, their_hash, their_world, what: str, state: str,
                      world_size: int) -> None:
    """CheckpointError when ``what`` (a run or a checkpoint) is this configuration on another number of processes
    and the flow pairs per rank, so that it is another experiment (its hash is ours at its world size)."""
    try:
        their_world = int(their_world or 1)
    except (TypeError, ValueError):
        return
    if their_hash == chash or their_world == world_size or their_hash != config_hash(cfg, world_size=their_world):
        return
    procs = lambda n: f"{n} process{'es' * (n != 1)}"
    raise CheckpointError(f"{what} {state} with {procs(their_world)}; this is {procs(world_size)}, and flow "
                          f"{cfg.flow!r} pairs each rank's share of the batch, so it is another experiment (OT batch "
                          f"{cfg.batch_size // their_world} there, {cfg.batch_size // world_size} here): leave "
                          f"run_dir / --run-dir out (each number of processes gets its own run directory) or give "
                          f"another one")


def _start_fresh(st: RunState) -> None:
    """resume: false — the run directory's old checkpoints, evaluations and done.json go (the user asked)."""
    if not st.dist.main:
        return
    for p in list_checkpoints(st.paths.ckpt_dir):
        p.unlink()
    st.paths.done_json.unlink(missing_ok=True)
    st.paths.eval_csv.unlink(missing_ok=True)


def _resume(st: RunState) -> None:
    """Load the newest valid checkpoint of this configuration into the state (nothing when there is none)."""
    cfg, d = st.cfg, st.dist
    if not cfg.resume:
        _start_fresh(st)
        return
    path, ckpt = newest_valid(st.paths.ckpt_dir)
    if ckpt is None:
        return
    _check_world_size(cfg, st.chash, ckpt.get("config_hash"), ckpt.get("world_size"), f"checkpoint {path}",
                      "was written", d.world_size)
    if ckpt.get("config_hash") != st.chash:
        raise CheckpointError(
            f"checkpoint {path} was written by another configuration (hash {ckpt.get('config_hash')}, this run "
            f"{st.chash}); use another run directory, or start afresh here with resume: false (--set resume=false)")
    load_weights(st.raw_model, ckpt["model"], path, "model")
    st.ema.load_state_dict(ckpt["ema"])
    st.optimizer.load_state_dict(ckpt["optimizer"])
    st.batches.load_state_dict(ckpt["data"])
    states = ckpt["rng"]
    if len(states) == d.world_size:
        set_rng_state(states[d.rank], st.streams, st.device)
    else:
        if d.main:  # said once, not by every rank
            warnings.warn(f"checkpoint {path} holds RNG states of {len(states)} processes, this run has "
                          f"{d.world_size}: continuing with fresh per-rank seeds (not bit-identical)", RuntimeWarning)
        st.streams = Streams.from_seed(cfg.seed + 100_003 * d.rank + 1 + int(ckpt["step"]))
    st.step, st.elapsed, st.last_ckpt = int(ckpt["step"]), float(ckpt.get("elapsed", 0.0)), path
    if ckpt.get("off_schedule"):
        st.off_schedule.append(path)


def _stop_signal(st: RunState) -> int:
    """The signal that asks this run to stop at the step just done (``gclib.signals``), or 0; under torchrun the
    largest over the ranks, so that every rank stops at the same step."""
    signum = signals.requested()
    if st.dist.world_size > 1:
        signum = int(distributed.all_max(signum, st.dist, st.device))
    return signum


def _stop(states: list, step: int, signum: int) -> None:
    """After the checkpoints of ``step`` (saved by the caller): raise ``TrainingStopped`` naming them."""
    signals.clear()
    raise signals.TrainingStopped(signum, [st.paths.run_dir for st in states], step,
                                  [ckpt_path(st.paths.ckpt_dir, step) for st in states])


def _finish(st: RunState) -> TrainResult:
    cfg, d = st.cfg, st.dist
    final_ckpt = ckpt_path(st.paths.ckpt_dir, cfg.total_steps)  # written by the loop's last step
    checksums = distributed.gather(float(sum(p.detach().double().sum().item() for p in st.raw_model.parameters())), d)
    if d.main:
        write_done(st.paths.done_json, {"config_hash": st.chash, "step": cfg.total_steps, "checkpoint": str(final_ckpt),
                                        "world_size": d.world_size, "param_checksums": checksums,
                                        "device": st.device.type, "seconds": st.elapsed, **st.done_extra})
    distributed.barrier(d)
    return TrainResult(st.paths.run_dir, cfg.total_steps, final_ckpt, st.paths.metrics_csv, st.paths.eval_csv, cfg,
                       extra={"world_size": d.world_size, "param_checksums": checksums})


def _lock(paths: RunPaths, d: distributed.Dist) -> RunLock | None:
    """Rank 0 takes the run lock; every rank learns whether it got it (all stop together if not)."""
    lock, problem = None, None
    if d.main:
        try:
            lock = RunLock(paths.run_dir).acquire()
        except RunLockedError as e:
            problem = str(e)
    problem = distributed.broadcast(problem, d)
    if problem:
        raise RunLockedError(problem)
    return lock
