"""What a training run tells its user while it runs (rank 0 only): a status line on stdout every ``log_every``
steps, ``log.jsonl`` in the run directory, and TensorBoard scalars when asked for.

stdout (flushed at once, so it reaches a file, a pipe, nohup.out or a SLURM log as it happens, terminal or not):

    [digits_gc] started: runs/digits_gc-1a2b3c4d5e, steps 1..4000, batch 64, flow gc, cpu
    [digits_gc] resumed from step 800 (checkpoint runs/digits_gc-1a2b3c4d5e/checkpoints/ckpt-00000800.pt)
    [digits_gc] step 1000/4000 (25.0%) | loss 0.01234 | 812 samples/s | 0.0788 s/step | ETA 3m56s | eval@1000 fd_digits 14.6 | 2026-12-07 14:03:12 | elapsed 1m19s

``loss`` is the mean over the steps since the previous line; samples/s, s/step and the ETA are wall-clock (data,
evaluation and checkpoints included) over the same steps. Each status line ends with the local wall-clock time and
the time elapsed since this process started the run (or resumed it); the start and resume lines carry the time.

``log.jsonl``: one JSON object per line, each with ``event``, ``step`` and ``time`` (Unix seconds):
``start`` (total_steps, run_dir, config_hash), ``resume`` (checkpoint), ``train`` (every log_every steps and the
last: total_steps, loss and gc_fraction as means over the interval, steps (the interval's length), loss_last, lr,
num_points, gc_rows (mean GC rows per global batch), samples_per_s, sec_per_step, eta_s, train_seconds (the
run's step time so far, as metrics.csv's ``seconds``)) and ``eval`` (the evaluation row).
Resume: the log keeps the records up to the resumed checkpoint's step and appends a ``resume`` record, as
metrics.csv is cut back to that step; the interval means are re-seeded from metrics.csv, so the ``train`` and
``eval`` records of a resumed run equal an uninterrupted run's except for the timing fields.

TensorBoard (``tensorboard: true``; the ``tensorboard`` extra): ``<run_dir>/tensorboard``, scalars ``train/loss``,
``train/lr``, ``train/gc_rows`` per step, ``train/samples_per_s`` per interval and ``eval/<metric>`` per evaluation,
and the image ``samples/grid`` at every ``sample_every`` steps and the last (the sample grid upscaled to at least 256
pixels wide, nearest neighbour; the scatter plot of 2-D samples); a resumed run purges the events after its
checkpoint's step.
"""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Callable

from .checks import ConfigError
from .io import atomic_write, explain
from .progress import fmt_duration  # noqa: F401  (also imported from here)

LOG_NAME = "log.jsonl"
TB_DIR = "tensorboard"


def wall_clock(t: float | None = None) -> str:
    """Local time as '2026-12-07 14:03:12' (now, or Unix time ``t``)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def read_log(path) -> list[dict]:
    """The records of a log.jsonl (a torn last line, from a process killed mid-write, is skipped)."""
    out = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def tensorboard_writer(log_dir, purge_step: int | None = None):
    """A ``torch.utils.tensorboard.SummaryWriter``; ConfigError naming the extra when the package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError(f"tensorboard=true needs the tensorboard package ({e}); install the extra with "
                          f"pip install -e \".[tensorboard]\", or set tensorboard: false") from None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class RunLog:
    """The status lines, log.jsonl and TensorBoard scalars of one training process (rank 0)."""

    def __init__(self, run_dir, *, name: str, total_steps: int, batch_size: int, log_every: int, start_step: int = 0,
                 resumed_from=None, config_hash: str = "", describe: str = "", metrics_csv=None,
                 tensorboard: bool = False, printer: Callable[[str], None] | None = None):
        self.run_dir, self.name = Path(run_dir), name
        self.total, self.batch, self.every = int(total_steps), int(batch_size), int(log_every)
        self.path = self.run_dir / LOG_NAME
        self.printer = printer
        self.last_eval: dict | None = None
        self._loss_sum = self._gc_sum = 0.0
        self._n = 0
        self._step0, self._t0 = start_step, time.monotonic()
        self._start = self._t0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_log(self.path) if isinstance(r.get("step"), int) and r["step"] <= start_step] \
            if start_step > 0 else []
        atomic_write(self.path, lambda f: f.writelines(json.dumps(r) + "\n" for r in kept), binary=False)
        evals = [r for r in kept if r.get("event") == "eval"]
        self.last_eval = {k: v for k, v in evals[-1].items() if k not in ("event", "time")} if evals else None
        if start_step > 0 and metrics_csv is not None:
            self._reseed(Path(metrics_csv), start_step)
        self._fh = open(self.path, "a")
        self.tb = tensorboard_writer(self.run_dir / TB_DIR, start_step + 1 if start_step else None) \
            if tensorboard else None
        if start_step > 0:
            self.say(f"resumed from step {start_step} (checkpoint {resumed_from}) at {wall_clock()}")
            self._record({"event": "resume", "step": start_step, "checkpoint": str(resumed_from)})
        else:
            self.say(f"started: {self.run_dir}, steps 1..{self.total}" + (f", {describe}" if describe else "") +
                     f" at {wall_clock()}")
            self._record({"event": "start", "step": 0, "total_steps": self.total, "run_dir": str(self.run_dir),
                          "config_hash": config_hash})

    # ------------------------------------------------------------------------------------------------ output
    def say(self, text: str) -> None:
        line = f"[{self.name}] {text}"
        if self.printer is not None:
            self.printer(line)
        else:
            print(line, file=sys.stdout, flush=True)

    def _record(self, rec: dict) -> None:
        try:
            self._fh.write(json.dumps({**rec, "time": round(time.time(), 3)}) + "\n")
            self._fh.flush()
        except OSError as e:   # a full disk or quota: name the file
            fh, self._fh = self._fh, None
            try:
                fh.close()     # closed now, not by the garbage collector's failing flush
            except OSError:
                pass
            raise explain(e, self.path) from None

    def _reseed(self, metrics_csv: Path, step: int) -> None:
        """The interval means of the steps after the last logged one up to ``step``, from metrics.csv."""
        if not self.every or not metrics_csv.exists():
            return
        first = step // self.every * self.every
        with open(metrics_csv, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    s = int(row["step"])
                except (KeyError, TypeError, ValueError):
                    continue
                if first < s <= step:
                    self._loss_sum += float(row["loss"])
                    self._gc_sum += float(row["gc_fraction"])
                    self._n += 1

    # ------------------------------------------------------------------------------------------------ events
    def step(self, step: int, loss: float, lr: float, gc_fraction: float, num_points: int, train_seconds: float) -> None:
        """After optimiser step ``step`` (1-based): accumulate, and log when the interval ends."""
        self._loss_sum += loss
        self._gc_sum += gc_fraction
        self._n += 1
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, step)
            self.tb.add_scalar("train/lr", lr, step)
            self.tb.add_scalar("train/gc_rows", gc_fraction * self.batch, step)
        if not ((self.every and step % self.every == 0) or step == self.total):
            return
        now = time.monotonic()
        steps = max(step - self._step0, 1)
        sec = (now - self._t0) / steps
        eta = (self.total - step) * sec
        rec = {"event": "train", "step": step, "total_steps": self.total, "steps": self._n,
               "loss": self._loss_sum / max(self._n, 1), "loss_last": loss, "lr": lr,
               "gc_fraction": self._gc_sum / max(self._n, 1), "gc_rows": self._gc_sum / max(self._n, 1) * self.batch,
               "num_points": num_points, "samples_per_s": self.batch / sec if sec > 0 else None,
               "sec_per_step": sec, "eta_s": eta, "train_seconds": train_seconds}
        self._record(rec)
        if self.tb is not None and rec["samples_per_s"]:
            self.tb.add_scalar("train/samples_per_s", rec["samples_per_s"], step)
            self.tb.flush()
        parts = [f"step {step}/{self.total} ({100.0 * step / self.total:.1f}%)", f"loss {rec['loss']:.4g}",
                 f"{rec['samples_per_s'] or 0:.0f} samples/s", f"{sec:.3g} s/step", f"ETA {fmt_duration(eta)}"]
        if self.last_eval:
            vals = " ".join(f"{k} {_num(v)}" for k, v in self.last_eval.items() if k != "step")
            parts.append(f"eval@{self.last_eval['step']} {vals}".rstrip())
        parts += [wall_clock(), f"elapsed {fmt_duration(now - self._start)}"]
        self.say(" | ".join(parts))
        self._loss_sum = self._gc_sum = 0.0
        self._n = 0
        self._step0, self._t0 = step, now

    def evaluation(self, row: dict) -> None:
        """An evaluation row (``step`` and metric values) of eval.csv."""
        self.last_eval = dict(row)
        self._record({"event": "eval", **{k: (float(v) if k != "step" else int(v)) for k, v in row.items()}})
        vals = " ".join(f"{k} {_num(float(v))}" for k, v in row.items() if k != "step")
        if vals:
            self.say(f"eval at step {row['step']}: {vals}")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"eval/{k}", float(v), int(row["step"]))
            self.tb.flush()

    def samples(self, step: int, samples, picture_file=None) -> None:
        """The sample picture of ``step`` to TensorBoard (``samples/grid``): images as their grid, upscaled by a
        whole factor to at least 256 pixels wide (``gclib.images.upscale``: an 8x8 digit is 32 pixels); 2-D points
        as the scatter plot written to ``picture_file`` (skipped without it)."""
        if self.tb is None:
            return
        from .images import grid_picture, to_uint8, upscale
        if samples.ndim == 4:
            picture = upscale(to_uint8(grid_picture(samples))).numpy()   # the PNG's pixels, each repeated
        elif picture_file is not None and Path(picture_file).is_file():
            import numpy as np
            from PIL import Image
            with Image.open(picture_file) as im:
                picture = np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy()
        else:
            return
        self.tb.add_image("samples/grid", picture, step)
        self.tb.flush()

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError as e:
                raise explain(e, self.path) from None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
