"""The exact OT pairing of step k+1, solved on a worker thread while step k runs (flow "ot").

The minibatch OT permutation of a step (``gclib.couplings.ot_permutation``) depends only on the step's data batch
and its noise z, and both are known before the step starts: the batch is the ``BatchIterator``'s next one, and z is
the next draw of the run's noise stream (``gclib.rng.Streams.noise``), which nothing else draws from in an OT step
(the intervals and the GC mask have streams of their own). So the loop can take step k's (x, z, perm) and hand the
solve of step k+1 to a thread, which then runs on the host while the device (or the other cores) run step k:

    pre = OTPrefetcher(batches, streams.noise, solver)    # after the run's state is loaded (resume)
    x, z, perm = pre.take()                               # this step's batch, noise and permutation
    train_step(..., x, z=z, ot_perm=perm)                 # the same pairs as solving them inside the step
    pre.close()

Exactness: the worker draws z from a COPY of the noise generator and gathers the batch by its number, so the
run's own state is never touched by the thread. ``take`` uses a prepared step only when the run's state is the one
it was prepared from (batch number and noise-generator state compared), and then advances that state exactly as
``next(batches)`` and the draw of z inside the step would have done; otherwise it prepares the step on the spot.
Checkpoints, resumes and the trained weights are therefore the same bit for bit with and without prefetching
(tests/test_ot_prefetch.py).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from .couplings import ot_permutation
from .data import BatchIterator, to_float


@dataclass
class _Prepared:
    number: int                # the batch number of this step
    state: torch.Tensor        # the noise generator's state before z was drawn
    future: Future             # -> (x, z, perm, noise state after the draw)


def prepare(data: torch.Tensor, index: torch.Tensor, noise_state: torch.Tensor, solver):
    """(x, z, perm, state after): the batch ``data[index]`` as ``BatchIterator`` returns it, z drawn as
    ``gclib.step.step_loss`` draws it (standard normal of x's shape and dtype from a CPU generator in
    ``noise_state``), and the pairing of (x, z): the exact OT permutation for a solver name ("auto", "emd",
    "scipy"), or ``solver(x, z)`` for a callable (the ``solve`` of a coupling that ``solves_ahead``)."""
    x = to_float(data[index])
    g = torch.Generator()
    g.set_state(noise_state)
    z = torch.randn(x.shape, generator=g, dtype=x.dtype)
    perm = ot_permutation(x, z, solver) if isinstance(solver, str) else solver(x, z)
    return x, z, perm, g.get_state()


class OTPrefetcher:
    """(x, z, perm) of each OT step from ``take()``; with ``ahead=True`` the next step's are solved on a thread.
    ``solver``: an OT solver name, or the ``solve(x, z)`` of any coupling that ``solves_ahead``."""

    def __init__(self, batches: BatchIterator, noise: torch.Generator, solver="auto", ahead: bool = True):
        if noise.device.type != "cpu":
            raise ValueError(f"the noise generator must be on the CPU (got {noise.device}); see gclib.rng.Streams")
        self.batches, self.noise, self.solver = batches, noise, solver
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gclib-ot") if ahead else None
        self._next: _Prepared | None = None
        self.hits = self.misses = 0

    def _submit(self, number: int, state: torch.Tensor) -> _Prepared:
        index = self.batches.indices(number)  # on this thread: BatchIterator caches its epoch permutation
        return _Prepared(number, state, self._pool.submit(prepare, self.batches.data, index, state, self.solver))

    def take(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This step's (x (B, ...), z (B, ...), perm (B,) int64), all on the CPU; the run's batch counter and noise
        generator advance as one step's ``next(batches)`` and z draw would advance them."""
        number, state = self.batches.batches, self.noise.get_state()
        nxt, self._next = self._next, None
        if nxt is not None and nxt.number == number and torch.equal(nxt.state, state):
            self.hits += 1
        else:
            if nxt is not None:
                nxt.future.cancel()
            self.misses += 1
            nxt = _Prepared(number, state, Future())
            nxt.future.set_result(prepare(self.batches.data, self.batches.indices(number), state, self.solver))
        x, z, perm, after = nxt.future.result()  # raises the worker's error, if any, here
        self.batches.load_state_dict({**self.batches.state_dict(), "batches": number + 1})
        self.noise.set_state(after)
        if self._pool is not None:
            self._next = self._submit(number + 1, after)
        return x, z, perm

    def wait(self) -> None:
        """Block until the next step's solve, if one is under way, is done (benchmarks time a step with it)."""
        if self._next is not None:
            self._next.future.result()

    def close(self) -> None:
        """Stop the worker (a solve in progress finishes first; its result is dropped)."""
        self._next = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
