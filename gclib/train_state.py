"""What one training process holds and returns, and its per-step records (``gclib.train``'s bookkeeping).

``RunState`` is everything the stages of ``gclib.train`` (and ``gclib.stack``) read and update; ``TrainResult`` is
where a run's outputs are. ``_record_step`` writes a step's metrics.csv row (columns ``METRIC_COLUMNS``, then the
coupling's own) and status line, ``_close_logs`` closes metrics.csv and the status log at the loop's end, and
``_side_tasks_due`` / ``_checkpoint_due`` say whether a step evaluates, draws its sample grid or checkpoints.
Moved out of ``gclib.train`` unchanged, which re-exports every name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import distributed
from .config import Config
from .data import BatchIterator
from .ema import EMA
from .evaluation import Evaluation
from .io import explain
from .models import load_model
from .objectives import Loss
from .rng import Streams
from .rundir import RunPaths

METRIC_COLUMNS = ("step", "loss", "num_points", "lr", "gc_fraction", "seconds", "samples_per_s")
EvalFn = Callable[[int, torch.nn.Module], dict]


@dataclass
class TrainResult:
    """Where a run's outputs are. ``checkpoint`` is the final checkpoint (load it with ``load``)."""
    run_dir: Path
    step: int
    checkpoint: Path | None
    metrics_csv: Path
    eval_csv: Path
    config: Config
    skipped: bool = False
    extra: dict = field(default_factory=dict)

    def load(self, device="cpu"):
        """(model, ema_model, config) of the final checkpoint."""
        return load_model(self.checkpoint, device)


@dataclass
class RunState:
    """Everything one training process holds; the stages below read and update it."""
    cfg: Config
    chash: str
    paths: RunPaths
    dist: distributed.Dist
    device: torch.device
    eval_fns: Sequence[EvalFn]
    flags: dict = field(default_factory=dict)
    data: torch.Tensor | None = None
    shape: tuple = ()
    raw_model: torch.nn.Module | None = None
    model: torch.nn.Module | None = None           # DDP- and/or compile-wrapped raw_model
    ema: EMA | None = None
    optimizer: torch.optim.Optimizer | None = None
    predictor: object = "ema"
    loss: Loss | None = None                       # gclib.objectives: the objective and its schedule
    evaluation: Evaluation | None = None           # gclib.evaluation: the metrics logged during training
    batches: BatchIterator | None = None
    streams: Streams | None = None
    step: int = 0
    elapsed: float = 0.0
    last_ckpt: Path | None = None
    eval_rows: list = field(default_factory=list)
    fixed_noise: torch.Tensor | None = None
    columns: list = field(default_factory=list)
    log: object = None
    writer: object = None
    last_loss: float = float("nan")
    last_n: int = 0
    prefetch: object = None                        # gclib.prefetch.OTPrefetcher (flow ot, ot_prefetch)
    runlog: object = None                          # gclib.runlog.RunLog (rank 0): stdout, log.jsonl, TensorBoard
    done_extra: dict = field(default_factory=dict)  # more fields for done.json (gclib.stack: stack_size)
    off_schedule: list = field(default_factory=list)  # checkpoints saved on a signal (``_stop_checkpoint``)

    @property
    def per_rank_batch(self) -> int:
        return self.cfg.batch_size // self.dist.world_size


def _record_step(st: RunState, step: int, n: int, loss: float, gc_frac: float, dt: float) -> None:
    """Step ``step``'s metrics row, status line and state (its loss, GC fraction, grid size and seconds)."""
    cfg = st.cfg
    st.elapsed += dt
    loss, gc_frac = distributed.all_mean([loss, gc_frac], st.dist, st.device)
    if st.writer:
        row = [step, repr(loss), n, repr(float(st.optimizer.param_groups[0]["lr"])), repr(gc_frac),
               f"{st.elapsed:.4f}", f"{cfg.batch_size / max(dt, 1e-9):.1f}"]
        if st.loss.coupling is not None:
            row.extend(st.loss.coupling.log_values(batch=st.per_rank_batch))
        try:
            st.writer.writerow(row)
            st.log.flush()
        except OSError as e:   # a full disk or quota: name the file (the checkpoints written so far stay)
            raise explain(e, st.paths.metrics_csv) from None
    if st.runlog is not None:
        st.runlog.step(step, loss, float(st.optimizer.param_groups[0]["lr"]), gc_frac, n, st.elapsed)
    st.step = step
    st.last_loss, st.last_n = loss, n


def _side_tasks_due(st: RunState, step: int, final: bool) -> tuple[bool, bool]:
    """(evaluation due, sample grid due) at ``step``."""
    cfg = st.cfg
    do_eval = st.evaluation.due(step, final, extra=bool(st.eval_fns))
    return do_eval, bool((cfg.sample_every and step % cfg.sample_every == 0) or final)


def _checkpoint_due(st: RunState, step: int, final: bool) -> bool:
    return bool(final or (st.cfg.checkpoint_every and step % st.cfg.checkpoint_every == 0))


def _close_logs(st: RunState) -> None:
    """Close the run's status log and metrics.csv (the loop's end, also when it stops on an error); a file that
    cannot be flushed (a full disk) is named."""
    errors = []
    if st.runlog is not None:
        runlog, st.runlog = st.runlog, None
        try:
            runlog.close()
        except OSError as e:
            errors.append(e)
    if st.log:
        log, st.log, st.writer = st.log, None, None
        try:
            log.close()
        except OSError as e:
            errors.append(explain(e, st.paths.metrics_csv))
    if errors:
        raise errors[0]
