"""Typed run configuration for ``gclib.train``, loaded from YAML (params/train/*.yaml) and validated.

``load_config(path, overrides)`` reads a YAML file with ``yaml.safe_load`` and applies overrides given as
``["key=value", ...]`` (the command line's ``--set``) or as a dict (notebook parameters). Validation happens
before any work: an unknown key is named with the closest valid key, a wrong type or out-of-range value is
named with what is allowed. ``config_hash(cfg)`` identifies the training-relevant settings (used for the run
directory ``<runs_dir>/<name>-<hash>`` and to skip finished runs).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional, Union

import yaml

from ._checks import FLOWS, PREDICTORS
from .losses import DISTANCES

TOYS = ("two_diracs", "two_gaussians", "8gaussians", "moons", "checkerboard")
DATASETS = TOYS + ("digits", "mnist", "cifar10")
MODELS = ("mlp", "unet", "unet_digits", "unet_cifar10")
OPTIMIZERS = ("adam", "radam", "lion")
DEVICES = ("auto", "cpu", "cuda")
from .couplings import OT_SOLVERS  # noqa: E402

# Settings that change neither the trained weights nor the logged evaluations: left out of the configuration
# hash. (The evaluation settings are hashed: a cached run must carry the evaluation curve that was asked for.)
NOT_HASHED = ("name", "runs_dir", "run_dir", "resume", "progress", "checkpoint_every", "keep_checkpoints",
              "sample_every", "sample_n", "data_root", "download", "device", "compile")


# Fields added after runs were cached, with the value that reproduces the training from before they existed: a
# field at its neutral value is left out of the hash, so adding a field never invalidates cached runs.
HASH_NEUTRAL: dict = {}


class ConfigError(ValueError):
    """A bad configuration key or value (a ValueError with one clear message)."""


@dataclass
class Config:
    """Everything a training run needs. Units: steps are optimiser steps; batch_size is the GLOBAL batch."""
    # run
    name: str = "run"
    seed: int = 0
    runs_dir: str = "runs"
    run_dir: Optional[str] = None          # explicit run directory (default: <runs_dir>/<name>-<hash>)
    resume: bool = True                    # continue from the newest valid checkpoint in the run directory
    device: str = "auto"                   # auto | cpu | cuda
    progress: Union[bool, str] = "auto"    # tqdm bar: "auto" (only on a terminal), true, false
    # data
    dataset: str = "two_gaussians"
    data_root: str = "data"
    download: bool = False
    num_data: int = 8192                   # size of the finite point set drawn for 2-D toys
    # model
    model: str = "mlp"
    hidden: int = 256                      # mlp
    depth: int = 3                         # mlp
    emb_dim: int = 64                      # mlp noise embedding
    channels: int = 64                     # unet
    channel_mult: list = field(default_factory=lambda: [1, 2])  # unet
    num_blocks: int = 2                    # unet
    attn_resolutions: list = field(default_factory=list)     # unet
    dropout: float = 0.0                   # unet, unet_digits, unet_cifar10
    # consistency training
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0
    s0: int = 10
    s1: int = 1280
    p_mean: float = -1.1
    p_std: float = 2.0
    distance: str = "pseudo_huber"
    flow: str = "ic"
    mu: float = 0.5                        # probability of a GC sample (flow gc)
    predictor: str = "ema"                 # ema | online | path of a checkpoint (frozen predictor)
    ot_solver: str = "auto"                # auto | emd | scipy (all exact; see gclib.couplings)
    predict_all: bool = False
    # optimisation
    optimizer: str = "lion"
    lr: float = 1e-4
    betas: Optional[list] = None           # default: adam/radam (0.9, 0.999), lion (0.9, 0.99)
    weight_decay: float = 0.0
    eps: float = 1e-8
    batch_size: int = 512
    total_steps: int = 100_000
    ema_decay: float = 0.9999
    ema_every: int = 5
    # bookkeeping
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 0                  # PNG sample grid every k steps (0: only at the end)
    sample_n: int = 64
    eval_every: int = 0                    # evaluation hooks every k steps (0: only at the end if any)
    eval_metrics: list = field(default_factory=list)  # names for gclib.train's built-in/metrics evaluation
    eval_n: int = 1000
    # GPU speed options (CUDA only; ignored with a warning on CPU)
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Config":
        return from_dict({**self.to_dict(), **changes})


_HINTS = typing.get_type_hints(Config)
FIELD_NAMES = tuple(f.name for f in fields(Config))


def _type_name(hint) -> str:
    args = typing.get_args(hint)
    if args:
        return " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
    return getattr(hint, "__name__", str(hint))


def _coerce(key: str, value, hint):
    """Coerce a YAML / command-line value to the field's type or raise ConfigError naming the key."""
    args = typing.get_args(hint)
    if args:  # Optional / Union
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("null", "none") and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}={value!r} has the wrong type; expected {_type_name(hint)}")
    bad = ConfigError(f"{key}={value!r} has the wrong type; expected {_type_name(hint)}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise bad
    if hint is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.replace("_", ""))
            except ValueError:
                raise bad from None
            if f.is_integer():
                return int(f)
        raise bad
    if hint is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad
    if hint is list:
        item = _str_item if key in STR_LISTS else _scalar
        if isinstance(value, (list, tuple)):
            return [item(key, v) for v in value]
        if isinstance(value, str):
            s = value.strip().strip("[]()")
            return [item(key, yaml.safe_load(v.strip())) for v in s.split(",") if v.strip()]
        raise bad
    raise bad


STR_LISTS = ("eval_metrics",)


def _str_item(key, v):
    if not isinstance(v, str):
        raise ConfigError(f"{key}: list item {v!r} is not a name (string)")
    return v


def _scalar(key, v):
    if isinstance(v, str):
        try:
            return float(v) if any(c in v for c in ".eE") else int(v)
        except ValueError:
            raise ConfigError(f"{key}: list item {v!r} is not a number") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{key}: list item {v!r} is not a number")
    return v


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELD_NAMES, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(FIELD_NAMES)}"
    return ConfigError(f"unknown configuration key {key!r}{hint}")


def _choice(key, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; allowed values: {', '.join(map(repr, allowed))}")


def _range(key, value, lo=None, hi=None, lo_open=False, hi_open=False, what=None):
    ok = True
    if lo is not None:
        ok &= value > lo if lo_open else value >= lo
    if hi is not None:
        ok &= value < hi if hi_open else value <= hi
    if not ok:
        lb = "" if lo is None else ("(" if lo_open else "[") + f"{lo}"
        ub = "" if hi is None else f"{hi}" + (")" if hi_open else "]")
        rng = what or (f"in {lb}, {ub}" if lo is not None and hi is not None else
                       (f"> {lo}" if lo_open else f">= {lo}") if lo is not None else (f"< {hi}" if hi_open else f"<= {hi}"))
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {rng}")


def validate(cfg: Config) -> Config:
    """Check every value (types were coerced already); raise ConfigError naming the key and what is allowed."""
    _choice("dataset", cfg.dataset, DATASETS)
    _choice("model", cfg.model, MODELS)
    _choice("flow", cfg.flow, FLOWS)
    _choice("distance", cfg.distance, DISTANCES)
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("device", cfg.device, DEVICES)
    _choice("ot_solver", cfg.ot_solver, OT_SOLVERS)
    if isinstance(cfg.progress, str):
        _choice("progress", cfg.progress, ("auto",))
    if cfg.predictor not in PREDICTORS and not cfg.predictor.endswith(".pt"):
        raise ConfigError(f"predictor={cfg.predictor!r} is not valid; allowed values: 'ema', 'online', "
                          f"or the path of a checkpoint file (*.pt) holding a frozen predictor")
    _range("mu", cfg.mu, 0.0, 1.0, what="[0, 1] (the probability of a GC sample)")
    _range("seed", cfg.seed, 0)
    _range("num_data", cfg.num_data, 1)
    for k in ("hidden", "depth", "emb_dim", "channels", "num_blocks", "batch_size", "total_steps", "ema_every",
              "sample_n", "eval_n", "keep_checkpoints"):
        _range(k, getattr(cfg, k), 1)
    if cfg.emb_dim % 2:
        raise ConfigError(f"emb_dim={cfg.emb_dim} must be even")
    for k in ("checkpoint_every", "sample_every", "eval_every"):
        _range(k, getattr(cfg, k), 0, what=">= 0 (0 turns it off except at the end)")
    _range("dropout", cfg.dropout, 0.0, 1.0, hi_open=True)
    _range("sigma_min", cfg.sigma_min, 0.0, lo_open=True)
    _range("sigma_max", cfg.sigma_max, cfg.sigma_min, lo_open=True, what=f"> sigma_min={cfg.sigma_min}")
    _range("sigma_data", cfg.sigma_data, 0.0, lo_open=True)
    _range("rho", cfg.rho, 0.0, lo_open=True)
    _range("p_std", cfg.p_std, 0.0, lo_open=True)
    _range("s0", cfg.s0, 1)
    _range("s1", cfg.s1, cfg.s0, what=f">= s0={cfg.s0}")
    _range("lr", cfg.lr, 0.0, lo_open=True)
    _range("weight_decay", cfg.weight_decay, 0.0)
    _range("eps", cfg.eps, 0.0, lo_open=True)
    _range("ema_decay", cfg.ema_decay, 0.0, 1.0, hi_open=True)
    if cfg.betas is not None:
        if len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas):
            raise ConfigError(f"betas={cfg.betas!r} must be two numbers in [0, 1) (or null for the optimiser's default)")
        cfg.betas = [float(b) for b in cfg.betas]
    if not cfg.channel_mult or any(int(m) != m or m < 1 for m in cfg.channel_mult):
        raise ConfigError(f"channel_mult={cfg.channel_mult!r} must be a non-empty list of integers >= 1")
    cfg.channel_mult = [int(m) for m in cfg.channel_mult]
    cfg.attn_resolutions = [int(r) for r in cfg.attn_resolutions]
    if any(not isinstance(m, str) for m in cfg.eval_metrics):
        raise ConfigError(f"eval_metrics={cfg.eval_metrics!r} must be a list of metric names")
    image = cfg.dataset in ("digits", "mnist", "cifar10")
    if cfg.model != "mlp" and not image:
        raise ConfigError(f"model={cfg.model!r} needs an image dataset; dataset={cfg.dataset!r} is 2-D: use model='mlp'")
    return cfg


def from_dict(d: dict | None) -> Config:
    """Build and validate a Config from a plain dict (unknown keys, types and ranges are checked)."""
    d = dict(d or {})
    kwargs = {}
    for key, value in d.items():
        if key not in _HINTS:
            raise _unknown(key)
        kwargs[key] = _coerce(key, value, _HINTS[key])
    return validate(Config(**kwargs))


def parse_overrides(items) -> dict:
    """["key=value", ...] -> {key: value}; values are parsed as YAML scalars (then coerced per field)."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in _HINTS:
            raise _unknown(key)
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def load_config(path=None, overrides=None) -> Config:
    """Read a YAML config (or start from the defaults when path is None) and apply overrides.

    overrides: a dict (notebook parameters) or a list of "key=value" strings (``--set``).
    """
    d = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of key: value")
    if overrides:
        ov = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        for k in ov:
            if k not in _HINTS:
                raise _unknown(k)
        d.update(ov)
    return from_dict(d)


def as_config(config) -> Config:
    """Accept a Config, a dict or a YAML path."""
    if isinstance(config, Config):
        return validate(from_dict(config.to_dict()))
    if isinstance(config, dict):
        return from_dict(config)
    if isinstance(config, (str, Path)):
        return load_config(config)
    raise ConfigError(f"config={config!r}: pass a Config, a dict or the path of a YAML file")


def config_hash(config, length: int = 10) -> str:
    """Hex digest of the settings that change the trained weights (see NOT_HASHED), ``length`` characters."""
    cfg = as_config(config)
    d = {k: v for k, v in cfg.to_dict().items()
         if k not in NOT_HASHED and not (k in HASH_NEUTRAL and v == HASH_NEUTRAL[k])}
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def run_dir_for(config) -> Path:
    """``run_dir`` if set, else ``<runs_dir>/<name>-<config_hash>``."""
    cfg = as_config(config)
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return Path(cfg.runs_dir) / f"{cfg.name}-{config_hash(cfg)}"
