"""Named random-number streams for one training run: runs that differ only in the flow see the same draws.

A consistency step draws three kinds of random numbers: the noise ``z``, the interval indices ``i`` and, for GC,
the Bernoulli mask of GC rows. With one generator for all three, GC's mask (B uniforms per step, even at
mu = 1) shifts every later noise draw, so IC and GC runs at one seed see different noise and a paired comparison
over seeds loses most of its power. ``Streams`` gives each kind its own generator, seeded from (seed, name):

    streams = Streams.from_seed(seed)          # streams.noise, streams.intervals, streams.mask
    step_loss(..., generator=streams)          # z, i and the GC mask from their own streams

IC, OT and GC at one seed therefore draw identical z and i at every step (OT permutes z, it draws nothing), and
GC with mu = 0 is IC bit for bit. The data order (``gclib.data.BatchIterator``) and the evaluation noise
(``gclib.evaluation.generate``) are seeded separately already. ``state_dict`` / ``load_state_dict`` hold every
stream, so a resumed run continues each one exactly.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

import torch

STREAM_NAMES = ("noise", "intervals", "mask")


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for stream ``name`` of run seed ``seed`` (a hash: streams of nearby seeds do not overlap)."""
    digest = hashlib.sha256(f"gclib/{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class Streams:
    """One ``torch.Generator`` (on CPU) per kind of draw of a consistency step."""
    noise: torch.Generator
    intervals: torch.Generator
    mask: torch.Generator

    @classmethod
    def from_seed(cls, seed: int) -> "Streams":
        return cls(**{name: torch.Generator().manual_seed(stream_seed(seed, name)) for name in STREAM_NAMES})

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name).get_state() for f in fields(self)}

    def load_state_dict(self, state: dict) -> None:
        missing = [n for n in STREAM_NAMES if n not in state]
        if missing:
            raise KeyError(f"RNG stream state lacks {missing}")
        for name in STREAM_NAMES:
            getattr(self, name).set_state(state[name].to(torch.uint8).cpu())


def split(generator) -> tuple:
    """(noise, intervals, mask) generators of ``generator``: a ``Streams``'s own, or the one generator (or None)
    used for all three, which is what a caller passing a single ``torch.Generator`` asked for."""
    if isinstance(generator, Streams):
        return generator.noise, generator.intervals, generator.mask
    return generator, generator, generator
