"""Argument checks shared by the package, its configuration and its notebooks (the edges of gclib).

Each check raises ONE ``ValueError`` naming the parameter, the bad value and what is allowed, and returns the
checked (normalised) value, so it can be used inline: ``n = check_positive_int("n", n)``. ``ConfigError`` (a
``ValueError``) is the error of a bad configuration key or value (``gclib.config`` re-exports it).
Validate once, at the edges (command line, configuration loading, notebook parameters, public functions);
inside, trust the validated values.
"""
from __future__ import annotations

import math
import numbers
import operator
from typing import Iterable, Mapping, Sequence

__all__ = ["ConfigError", "DataMissingError", "DataCorruptError", "MissingExtraError", "EXTRAS", "require", "missing_extra", "broken_extra", "FLOWS", "PREDICTORS", "check_choice", "check_flow", "check_mu", "check_finite",
           "check_range", "check_int", "check_positive_int", "check_levels", "check_sigma_range",
           "check_same_shape"]



class RegistryNames(Sequence):
    """The names of a registry kept in a higher layer, read live (a read-only sequence that compares equal to the
    tuple of the names): this layer cannot import the registry, so the registry binds itself here."""

    def __init__(self, what: str):
        self._what, self._source = what, None

    def bind(self, registry: Mapping) -> None:
        self._source = registry

    def _names(self) -> tuple:
        if self._source is None:
            raise RuntimeError(f"no {self._what} registry is bound yet (import gclib first)")
        return tuple(self._source)

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name) -> bool:
        try:
            return name in self._names()
        except TypeError:
            return False

    def __eq__(self, other) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, list, RegistryNames)) else other)

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self._names())


FLOWS = RegistryNames("coupling")   # the flows: gclib.couplings.REGISTRY's names ("ic", "ot", "gc", then any added)
PREDICTORS = ("ema", "online")


class ConfigError(ValueError):
    """A bad configuration key or value (a ValueError with one clear message)."""


class DataMissingError(FileNotFoundError):
    """A data set is not on disk and could not be downloaded (``gclib.data`` and ``gclib.imagesets`` raise it)."""


class DataCorruptError(ValueError):
    """A data file that is there but cannot be read (corrupt, truncated, or not what its name says)."""


# optional module -> (the name pip installs it by, the gclib extra that brings it)
EXTRAS = {"sklearn": ("scikit-learn", "data"), "torchvision": ("torchvision", "data"),
          "matplotlib": ("matplotlib", "notebooks"), "seaborn": ("seaborn", "notebooks"),
          "papermill": ("papermill", "notebooks"), "nbformat": ("nbformat", "notebooks"),
          "torch_fidelity": ("torch-fidelity", "fid"), "PIL": ("pillow", "data"), "lmdb": ("lmdb", None)}


class MissingExtraError(ModuleNotFoundError):
    """An optional package that this use of gclib needs is not installed (the message names it and the extra)."""


def missing_extra(module: str, what: str = "this") -> MissingExtraError:
    """The one-line error for optional ``module`` (a key of EXTRAS, or its top-level name) missing."""
    top = str(module).split(".")[0]
    pip_name, extra = EXTRAS.get(top, (top, None))
    how = f"pip install 'gclib[{extra}]' (or pip install {pip_name})" if extra else f"pip install {pip_name}"
    err = MissingExtraError(f"{what} needs the optional package {pip_name!r}, which is not installed: {how}")
    err.name = top
    return err


def broken_extra(module: str, what: str, err: BaseException) -> MissingExtraError:
    """The one-line error for optional ``module`` that is installed but fails to import (a broken install, a
    missing shared library, a version that does not fit): names the package, the cause and the extra."""
    top = str(module).split(".")[0]
    pip_name, extra = EXTRAS.get(top, (top, None))
    how = (f"pip install --force-reinstall 'gclib[{extra}]' (or pip install --force-reinstall {pip_name})" if extra
           else f"pip install --force-reinstall {pip_name}")
    cause = " ".join(f"{type(err).__name__}: {err}".split())[:200]
    e = MissingExtraError(f"{what} needs the optional package {pip_name!r}, which is installed but fails to import "
                          f"({cause}): reinstall it: {how}")
    e.name = top
    return e


def require(module: str, what: str = "this") -> None:
    """Check that optional ``module`` is installed and imports, before any work; else ``missing_extra`` or
    ``broken_extra`` (one line naming the package and the extra)."""
    import importlib
    import importlib.util
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise missing_extra(module, what)
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - whatever a broken package raises while it is imported
        raise broken_extra(module, what, e) from None


def _bad():
    raise TypeError


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_choice(name: str, value, allowed: Iterable, *, error: type = ValueError):
    """``value`` if it is one of ``allowed``; else ``error`` (a ValueError subclass, e.g. ConfigError)."""
    allowed = tuple(allowed)
    try:
        ok = value in allowed
    except TypeError:  # unhashable value against a dict / set
        ok = False
    if not ok:
        raise error(f"{name}={value!r} is not valid; allowed values: {', '.join(map(repr, allowed))}")
    return value


def check_flow(flow: str) -> str:
    """One of ``FLOWS``, the registered couplings: 'ic', 'ot', 'gc' and any added by ``register_coupling``."""
    return check_choice("flow", flow, FLOWS)


def check_finite(name: str, value) -> float:
    """``value`` as a float if it is a finite real number (not a bool, not inf or nan)."""
    if not _is_number(value):
        raise ValueError(f"{name}={value!r} is not a number; expected a finite real number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not finite; expected a finite real number")
    return value


def check_mu(mu: float) -> float:
    """mu, the probability that a sample is a GC sample, as a float in [0, 1]."""
    try:
        if isinstance(mu, bool):
            raise TypeError
        mu = float(mu)
    except (TypeError, ValueError):
        raise ValueError(f"mu={mu!r} is not a number; mu is the probability of a GC sample, in [0, 1]") from None
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"mu={mu!r} is outside [0, 1]; mu is the probability of a GC sample")
    return mu


def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"> {lo}" if lo_open else f">= {lo}"
    if hi is not None:
        return f"< {hi}" if hi_open else f"<= {hi}"
    return "any finite number"


def check_range(name: str, value, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False,
                what: str | None = None):
    """``value`` if ``lo <= value <= hi`` (``<`` with ``lo_open`` / ``hi_open``; None: no bound). ``what``
    replaces the allowed range in the message. NaN is always out of range."""
    if not _is_number(value):
        raise ValueError(f"{name}={value!r} is not a number; allowed: {what or _range_text(lo, hi, lo_open, hi_open)}")
    ok = value == value  # not NaN
    if lo is not None:
        ok = ok and (value > lo if lo_open else value >= lo)
    if hi is not None:
        ok = ok and (value < hi if hi_open else value <= hi)
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range; allowed: {what or _range_text(lo, hi, lo_open, hi_open)}")
    return value


def check_int(name: str, value, lo: int | None = None, hi: int | None = None, what: str | None = None) -> int:
    """``value`` as an int (an integral float such as 1e3 is accepted; a bool is not), within [lo, hi]."""
    given = value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    elif not isinstance(value, (bool, str, float)) and hasattr(value, "__index__"):
        try:
            value = operator.index(value)  # numpy / torch integer scalars
        except TypeError:
            pass
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{name}={given!r} is not an integer; allowed: "
                         f"{what or 'an integer ' + _range_text(lo, hi, False, False)}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name}={given!r} is out of range; allowed: "
                         f"{what or 'an integer ' + _range_text(lo, hi, False, False)}")
    return value


def check_positive_int(name: str, value) -> int:
    """``value`` as an int >= 1."""
    return check_int(name, value, lo=1, what="a positive integer (>= 1)")


def check_levels(name: str, values, lo: float | None = None, hi: float | None = None, allow_zero: bool = False) -> list:
    """A non-empty list of finite levels (floats), each > 0 (or == 0 if allow_zero) and within [lo, hi] when given."""
    try:
        vals = [float(v) for v in values if not isinstance(v, (bool, str)) or _bad()]
        if not all(map(math.isfinite, vals)):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{name}={values!r} is not valid; it must be a list of finite numbers") from None
    if not vals:
        raise ValueError(f"{name}={values!r} is not valid; it must be a non-empty list")
    for v in vals:
        if v == 0 and allow_zero:
            continue
        if not v > 0 or (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = (f"in [{lo}, {hi}]" if lo is not None and hi is not None else f">= {lo}" if lo is not None
                   else f"in (0, {hi}]" if hi is not None else "> 0")
            raise ValueError(f"{name}={values!r} is not valid; every level must be {rng}"
                             + (" (or 0)" if allow_zero else ""))
    return vals


def check_sigma_range(sigma_min: float, sigma_max: float) -> None:
    """0 < sigma_min < sigma_max, both finite."""
    if not (0 < sigma_min < sigma_max and math.isfinite(float(sigma_max))):
        raise ValueError(
            f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}: need 0 < sigma_min < sigma_max < inf"
        )


def check_same_shape(name_a: str, a, name_b: str, b) -> None:
    """``a`` and ``b`` (tensors or arrays) have the same shape."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; they must match")
