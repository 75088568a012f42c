"""A scheduler's signal ends a command cleanly: SIGTERM (what SLURM sends before it kills a job, and on
pre-emption) and SIGUSR1 (a common ``--signal=USR1@<seconds>`` choice).

``handle()`` installs the handler (``gclib.cli`` does, around every command; ``gclib.executors.Job`` does for
submitit's pre-emption signal; ``install()`` does for the life of a local pool's worker process, whose pool forwards
its own stop to it). By default a signal raises ``Terminated`` at once: the command stops where it is,
and since every file gclib writes for the user is written atomically (``gclib.io``), nothing is half-written; the
command's error boundary prints one line and exits with 128 + the signal number, as a shell reports a process
killed by that signal. While a training loop runs (``at_step_boundaries()``), the signal only records a request:
the loop reads it after each step (``requested()``; under torchrun the ranks agree on it, see ``gclib.train``),
saves a checkpoint at that step and raises ``TrainingStopped``, so the run resumes exactly where it stopped. A
second signal while the first waits for its step raises ``Terminated`` at once.
"""
from __future__ import annotations

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Terminated(KeyboardInterrupt):
    """A command stopped by a signal (``signum``). A KeyboardInterrupt, so that ``except Exception`` never
    swallows it and clean-up code (``finally``) runs as for Ctrl-C."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"stopped by {signal_name(signum)}")
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def __reduce__(self):   # rebuilt from its own arguments when a worker process sends it back to its pool
        return (type(self), (self.signum, str(self)))


class TrainingStopped(Terminated):
    """``gclib.train.train`` stopped on a signal at a step boundary, after saving the checkpoint of that step."""

    def __init__(self, signum: int, run_dirs, step: int, checkpoints):
        self.run_dirs, self.step, self.checkpoints = list(run_dirs), int(step), list(checkpoints)
        where = (str(self.checkpoints[0]) if len(self.checkpoints) == 1 else
                 f"{len(self.checkpoints)} checkpoints (the first: {self.checkpoints[0]})")
        super().__init__(signum, f"stopped by {signal_name(signum)} at step {step}: saved {where}; to resume, run "
                                 f"the same command again (it continues from step {step})")

    def __reduce__(self):
        return (type(self), (self.signum, self.run_dirs, self.step, self.checkpoints))


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _State:
    requested: int | None = None   # a signal that waits for the next step boundary
    deferring: int = 0             # > 0 while a training loop reads requested() at its step boundaries
    repeat_aborts: bool = True     # a second signal while one waits for its step stops at once (``install``)


_state = _State()


def _on_signal(signum, frame) -> None:
    if _state.deferring and (_state.requested is None or not _state.repeat_aborts):
        _state.requested = _state.requested or int(signum)
        return
    raise Terminated(signum)


@contextlib.contextmanager
def handle(signums=STOP_SIGNALS):
    """Within the block, ``signums`` stop the work as the module docstring says; the previous handlers are
    restored after. Outside the main thread (where Python cannot install handlers) this does nothing. Yields the
    previous handlers ({signum: handler})."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    old = {}
    try:
        for s in signums:
            old[s] = signal.signal(s, _on_signal)
        yield dict(old)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _state.requested = None


def install(signums=STOP_SIGNALS, *, repeat_aborts: bool = True) -> None:
    """``handle``'s handler for the rest of the process's life (a pool's worker process: it has no command around
    it to restore anything for). ``repeat_aborts=False``: a signal that arrives while another waits for its step
    waits too (a worker may get the same stop twice, from the scheduler, which signals every process of a job, and
    from its pool, which forwards its own stop). Outside the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in signums:
        signal.signal(s, _on_signal)
    _state.repeat_aborts = bool(repeat_aborts)


@contextlib.contextmanager
def at_step_boundaries():
    """Mark a training loop: within it a stop signal records a request (``requested()``) instead of raising."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1


def requested() -> int:
    """The signal number that waits for a step boundary, or 0. A request that arrived during a run's last step
    stays pending after the run finished (``raise_if_requested``), so a command that trains several runs stops."""
    return _state.requested or 0


def raise_if_requested(when: str = "") -> None:
    """``Terminated`` ("stopped by SIGTERM <when>") for a signal that waits (see ``requested``); nothing when none
    does."""
    if _state.requested:
        signum, _state.requested = _state.requested, None
        raise Terminated(signum, f"stopped by {signal_name(signum)}" + (f" {when}" if when else ""))


def clear() -> None:
    """Forget a waiting request (the training loop has acted on it)."""
    _state.requested = None
