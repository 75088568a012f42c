"""gclib: consistency models trained with generator-augmented flows (GC).

Public pieces: ``schedules``, ``precond.ConsistencyModel``, ``nets`` (MLP, UNet), ``exact`` (ideal denoiser of a
finite set), ``couplings.couple`` (ic | ot | gc), ``losses`` (one consistency loss), ``sampling``, ``EMA`` and
``train_step``.
"""
from .machine import share_cpus as _share_cpus

_share_cpus()   # OpenMP threads that sleep when they wait, set before torch loads its OpenMP (gclib.machine)

from . import couplings, exact, losses, nets, precond, sampling, schedules
from .couplings import Coupling, couple
from .ema import EMA
from .precond import ConsistencyModel
from .step import NonFiniteLossError, StepResult, step_loss, train_step

from .machine import note_torch_threads as _note_torch_threads

_note_torch_threads()   # torch's thread count now: a later torch.set_num_threads is the user's choice (gclib.machine)

__version__ = "0.1.0"
__all__ = ["couplings", "exact", "losses", "nets", "precond", "sampling", "schedules", "Coupling", "couple",
           "EMA", "ConsistencyModel", "NonFiniteLossError", "StepResult", "step_loss", "train_step"]
