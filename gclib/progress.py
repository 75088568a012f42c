"""Progress of long work outside the training loop (``gclib sample``, ``gclib evaluate``): on stderr, so that the
results on stdout stay clean.

    p = Progress(n, "sampling", prefix="gclib evaluate")
    for chunk in ...:
        p.update(len(chunk))
    p.note("fd_digits 14.6 (3.2 s)")
    p.close()

On a terminal it is a tqdm bar (notes printed above it); anywhere else (a file, a pipe, nohup, a SLURM log) it is
plain lines, flushed at once: the first update, then at most one line every ``every_s`` seconds, and the last:

    [gclib evaluate] sampling 2048/10000 (20%) | 12s elapsed | ETA 48s
"""
from __future__ import annotations

import math
import sys
import time


def fmt_duration(seconds: float | None) -> str:
    """'3h05m', '4m09s', '12s' ('?' when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """``total`` units of work named ``what`` (e.g. "sampling"), reported on ``stream`` (default stderr): a bar when
    the stream is a terminal (or ``bar=True``), lines otherwise (``bar=False``)."""

    def __init__(self, total: int, what: str, *, prefix: str = "gclib", unit: str = "samples", stream=None,
                 bar: bool | None = None, every_s: float = 10.0, clock=time.monotonic):
        self.total, self.what, self.prefix, self.unit = int(total), what, prefix, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s, self.clock = float(every_s), clock
        self.done = 0
        self._t0 = self._last = clock()
        self._lines = 0
        if bar is None:
            bar = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = None
        if bar:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, desc=f"{prefix}: {what}", unit=unit, file=self.stream,
                            dynamic_ncols=True)

    def _say(self, text: str) -> None:
        line = f"[{self.prefix}] {text}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def update(self, n: int) -> None:
        """``n`` more units done."""
        self.done += int(n)
        if self.bar is not None:
            self.bar.update(n)
            return
        now = self.clock()
        if self._lines == 0 or now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            self._lines += 1
            elapsed = now - self._t0
            eta = elapsed / self.done * (self.total - self.done) if self.done else None
            self._say(f"{self.what} {self.done}/{self.total} ({100.0 * self.done / max(self.total, 1):.0f}%) | "
                      f"{fmt_duration(elapsed)} elapsed | ETA {fmt_duration(eta)}")

    def note(self, text: str) -> None:
        """A line of its own (above the bar on a terminal)."""
        self._say(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
