"""Validation of a run configuration's values, before any work (``gclib.config``'s checks).

``validate(cfg)`` checks every value of a ``gclib.config.Config`` (which calls it when built): names against the
registries they come from (data sets, models, flows, distances, optimisers, objectives, metrics), ranges, the
coupling's own settings, what the chosen metrics accept, and the limits that torch, the metrics or any machine
impose (checked from the values alone, so that a run never fails after hours of training). ``preflight(cfg)``
checks what a run needs beyond its values (optional packages, weight files, a GPU; the checkpoints it starts
from). Both read the configuration by attribute only; this module imports nothing of ``gclib.config`` or
``gclib.config_schema``, which import it.
"""
from __future__ import annotations

import difflib
import re
import typing
from dataclasses import fields
from functools import lru_cache
from pathlib import Path

from .checks import PREDICTORS, ConfigError, check_choice, check_finite, check_int, check_range
from .couplings import OT_SOLVERS, REGISTRY as COUPLING_REGISTRY, coupling_of
from .data import IMAGE_SHAPES, REGISTRY as DATA_REGISTRY
from .evaluation import METRICS, REGISTRY as METRIC_REGISTRY
from .losses import DISTANCES
from .nets import MODELS
from .objectives import LOSSES, loss_name, make_loss
from .optim import OPTIMIZERS
from .precond import TRAIN_BOUNDARIES
from .schedules import ECT_R_CLIPS

DEVICES = ("auto", "cpu", "cuda")
SEED_MAX = 2 ** 63 - 1
SEED_RANGE = f"an integer in [0, 2**63 - 1 = {SEED_MAX}]"
SCHEDULES = ("ict", "ect")   # the consistency objective's schedules, each a registered loss (gclib.objectives)


def objectives() -> tuple:
    """The valid ``objective`` values: "consistency" (with a ``schedule``) and every other loss registered in
    ``gclib.objectives.LOSSES`` (``register_loss``), read live, so a registered loss is a valid objective."""
    return ("consistency",) + tuple(k for k in LOSSES if k not in SCHEDULES)




@lru_cache(maxsize=None)
def _float_fields(cls) -> tuple:
    """The fields of the configuration class ``cls`` typed float (their values must be finite)."""
    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in fields(cls) if hints[f.name] is float)


RUN_NAME = re.compile(r"[\w-][\w.-]*")


def _check_name(name: str) -> None:
    if not RUN_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"name={name!r} is not a valid run name; use letters, digits, '-', '_' and '.', not "
                          f"starting with '.' and without '..' (it names the run directory under runs_dir)")


def _validate(cfg) -> None:
    for name in _float_fields(type(cfg)):  # finite numbers only
        check_finite(name, getattr(cfg, name))
    _check_name(cfg.name)
    check_choice("dataset", cfg.dataset, DATA_REGISTRY)   # gclib.data's registry: a registered data set counts
    check_choice("model", cfg.model, MODELS)
    check_choice("flow", cfg.flow, COUPLING_REGISTRY)   # gclib.couplings' registry: a registered coupling counts
    _check_coupling_options(cfg)
    check_choice("distance", cfg.distance, DISTANCES)
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice("device", cfg.device, DEVICES)
    check_choice("ot_solver", cfg.ot_solver, OT_SOLVERS)
    _check_objective(cfg.objective)
    check_choice("schedule", cfg.schedule, SCHEDULES)
    _check_loss_options(cfg)
    check_choice("train_boundary", cfg.train_boundary, TRAIN_BOUNDARIES)
    if cfg.objective == "denoising" and cfg.flow != "ic":
        raise ConfigError(f"objective='denoising' trains a denoiser on independent pairs: flow must be 'ic', "
                          f"not {cfg.flow!r}")
    check_range("ect_q", cfg.ect_q, 1.0, lo_open=True)
    check_range("ect_stages", cfg.ect_stages, 1)
    check_range("ect_k", cfg.ect_k, 0.0)
    check_range("ect_b", cfg.ect_b, 0.0)
    check_choice("ect_stage_offset", cfg.ect_stage_offset, (0, 1))
    check_range("log_every", cfg.log_every, 0, what=">= 0 (0 logs only the last step)")
    check_choice("ect_r_clip", cfg.ect_r_clip, ECT_R_CLIPS)
    if cfg.ect_distance is not None:
        check_choice("ect_distance", cfg.ect_distance, DISTANCES)
    if cfg.init_checkpoint is not None and not str(cfg.init_checkpoint).endswith(".pt"):
        raise ConfigError(f"init_checkpoint={cfg.init_checkpoint!r} must be the path of a checkpoint file (*.pt) "
                          f"or null")
    for key in ("run_dir", "runs_dir", "data_root"):
        if getattr(cfg, key) == "":
            raise ConfigError(f"{key}='' is empty; give a folder" + (" (or null for <runs_dir>/<name>-<hash>)"
                                                                      if key == "run_dir" else ""))
    if isinstance(cfg.progress, str):
        check_choice("progress", cfg.progress, ("auto",))
    if cfg.predictor not in PREDICTORS and not cfg.predictor.endswith(".pt"):
        raise ConfigError(f"predictor={cfg.predictor!r} is not valid; allowed values: 'ema', 'online', "
                          f"or the path of a checkpoint file (*.pt) holding a frozen predictor")
    for m in cfg.eval_metrics:
        if m not in METRICS:
            raise ConfigError(f"eval_metrics={cfg.eval_metrics!r}: {m!r} is not a metric; allowed values: "
                              f"{', '.join(map(repr, METRICS))} (gclib.evaluation.METRICS)")
    check_range("mu", cfg.mu, 0.0, 1.0, what="[0, 1] (the probability of a GC sample)")
    check_int("seed", cfg.seed, 0, SEED_MAX, what=SEED_RANGE)
    for k in ("num_data", "hidden", "depth", "emb_dim", "channels", "num_blocks", "batch_size", "total_steps",
              "ema_every", "sample_n", "eval_n", "keep_checkpoints"):
        check_range(k, getattr(cfg, k), 1)
    if cfg.emb_dim % 2:
        raise ConfigError(f"emb_dim={cfg.emb_dim} must be even")
    for k in ("checkpoint_every", "sample_every", "eval_every"):
        check_range(k, getattr(cfg, k), 0, what=">= 0 (0 turns it off except at the end)")
    check_range("dropout", cfg.dropout, 0.0, 1.0, hi_open=True)
    check_range("sigma_min", cfg.sigma_min, 0.0, lo_open=True)
    check_range("sigma_max", cfg.sigma_max, cfg.sigma_min, lo_open=True, what=f"> sigma_min={cfg.sigma_min}")
    check_range("sigma_data", cfg.sigma_data, 0.0, lo_open=True)
    check_range("rho", cfg.rho, 0.0, lo_open=True)
    check_range("p_std", cfg.p_std, 0.0, lo_open=True)
    check_range("s0", cfg.s0, 1)
    check_range("s1", cfg.s1, cfg.s0, what=f">= s0={cfg.s0}")
    check_range("lr", cfg.lr, 0.0, lo_open=True)
    check_range("weight_decay", cfg.weight_decay, 0.0)
    check_range("eps", cfg.eps, 0.0, lo_open=True)
    check_range("ema_decay", cfg.ema_decay, 0.0, 1.0, hi_open=True)
    if cfg.betas is not None and (len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas)):
        raise ConfigError(f"betas={cfg.betas!r} must be two numbers in [0, 1) (or null for the optimiser's default)")
    if not cfg.channel_mult or any(m < 1 for m in cfg.channel_mult):
        raise ConfigError(f"channel_mult={cfg.channel_mult!r} must be a non-empty list of integers >= 1")
    if any(r < 1 for r in cfg.attn_resolutions):
        raise ConfigError(f"attn_resolutions={cfg.attn_resolutions!r} must be a list of integers >= 1 (resolutions)")
    if cfg.model != "mlp" and cfg.dataset not in IMAGE_SHAPES:
        raise ConfigError(f"model={cfg.model!r} needs an image dataset; dataset={cfg.dataset!r} is 2-D: use model='mlp'")
    _check_coupling(cfg)
    _check_loss(cfg)
    _check_limits(cfg)


def _check_coupling_options(cfg) -> None:
    """``coupling_options`` names only the coupling's own settings (``Coupling.own_settings``)."""
    cls = COUPLING_REGISTRY[cfg.flow]
    own = cls.own_settings()
    if own is None:
        return
    for key in cfg.coupling_options:
        if key not in own:
            fields = cls.config_fields()
            close = difflib.get_close_matches(str(key), own + fields, n=1, cutoff=0.5)
            raise ConfigError(f"coupling_options={cfg.coupling_options!r}: flow {cfg.flow!r} has no setting {key!r}; "
                              + (f"did you mean {close[0]!r}? " if close else "") +
                              f"its own settings: {', '.join(own) or 'none'}" +
                              (f" (config fields it reads: {', '.join(fields)})" if fields else ""))


def _check_objective(objective) -> None:
    """``objective`` (``loss: {name: ...}``) is a registered loss: one line naming the closest and the names a loss
    section takes (``loss: {name: ict}`` / ``{name: ect}`` are the consistency objective with that schedule)."""
    valid = objectives()
    if isinstance(objective, str) and objective in valid:
        return
    names = valid + SCHEDULES
    close = difflib.get_close_matches(str(objective), names, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if objective in SCHEDULES:
        hint = f"{objective!r} is a schedule of the consistency objective: write loss: {{name: {objective}}} or " \
               f"schedule: {objective}; "
    raise ConfigError(f"objective={objective!r} (loss: {{name: ...}}) is not a registered loss; {hint}allowed "
                      f"values: {', '.join(map(repr, valid))}, and in the loss section also "
                      f"{', '.join(map(repr, SCHEDULES))} (the consistency objective's schedules)")


def _check_loss_options(cfg) -> None:
    """``loss_options`` names only the loss's own settings (``Loss.own_settings``); a loss built by its own
    ``from_config`` reads none."""
    if not cfg.loss_options:
        return
    name = loss_name(cfg)
    cls = LOSSES[name]
    if cls.builds_itself():
        raise ConfigError(f"loss_options={cfg.loss_options!r}: loss {name!r} is built by its own from_config, which "
                          f"reads no settings of the loss section; declare them (Loss.config_settings, its __init__'s "
                          f"keywords) instead of overriding from_config")
    own = cls.own_settings()
    if own is None:
        return
    for key in cfg.loss_options:
        if key not in own:
            fields = tuple(dict.fromkeys(f for v in cls.config_settings.values()
                                         for f in ((v,) if isinstance(v, str) else v)))
            section = tuple(k for k in getattr(type(cfg), "SECTIONS", {}).get("loss", ()) if k not in fields)
            close = difflib.get_close_matches(str(key), own + fields + section, n=1, cutoff=0.5)
            raise ConfigError(f"loss_options={cfg.loss_options!r}: loss {name!r} has no setting {key!r}; "
                              + (f"did you mean {close[0]!r}? " if close else "") +
                              f"its own settings: {', '.join(own) or 'none'}" +
                              (f" (config fields it reads: {', '.join(fields)})" if fields else ""))


def _check_loss(cfg) -> None:
    """A loss with its own settings builds from the configuration (its own checks of their values, as one
    ConfigError); the built-in losses' settings are config fields, checked above."""
    if not cfg.loss_options:
        return
    try:
        make_loss(cfg)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"loss {loss_name(cfg)!r} does not build from this configuration "
                          f"(loss_options={cfg.loss_options!r}): {' '.join(str(e).split())}") from None


def _check_coupling(cfg) -> None:
    """The coupling builds from the configuration (its own checks of its settings' values, as one ConfigError)."""
    try:
        coupling_of(cfg)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"flow={cfg.flow!r} does not build from this configuration "
                          f"(coupling_options={cfg.coupling_options!r}): {' '.join(str(e).split())}") from None


# Limits that torch, the metrics or any machine impose, checked from the values alone so that a run never fails
# after hours of training (evaluation runs before the final checkpoint, so a late failure also loses that).
MULTINOMIAL_MAX = 2 ** 24           # torch.multinomial's largest number of categories (the s1 intervals)
MAX_PARAMETERS = 2 ** 31            # model + EMA + two optimiser moments: >= 32 GiB of float32 beyond this
MAX_SAMPLE_N = 10_000               # the sample picture: a grid or scatter plot of sample_n samples
MAX_EVAL_N = 1_000_000              # evaluation samples (FID uses 50,000)
MAX_EVAL_ELEMENTS = 2 ** 30         # eval_n samples of the data shape in float32: 4 GiB
MAX_EXACT_OT_N = 20_000             # w2 / w2sq: exact OT on an eval_n x eval_n float64 cost matrix (3.2 GB)
MAX_LR = 1.0                        # Adam, RAdam and Lion move each weight by about lr per step


def _shape(cfg) -> tuple:
    return tuple(DATA_REGISTRY[cfg.dataset].shape)   # the data set is validated (registered) before this


def _parameters(cfg, dim: int) -> int:
    """The number of weights of the configured network (exact for the MLP; a close upper estimate for the
    configurable U-Net, whose 3x3 convolutions dominate; the presets are of fixed, known size)."""
    if cfg.model == "mlp":
        h = cfg.hidden
        return cfg.emb_dim * h + h + dim * h + h + cfg.depth * (h * h + h) + h * dim + dim
    if cfg.model != "unet":
        return 0
    per_level = [(cfg.channels * m) ** 2 for m in cfg.channel_mult]
    return 2 * 2 * 9 * (cfg.num_blocks + 1) * sum(per_level)


def _curriculum_sizes(cfg) -> list:
    """Every grid size N(k) the iCT curriculum reaches (``gclib.schedules.num_points``)."""
    sizes, n = set(), cfg.s0
    while n < cfg.s1:
        sizes.add(n + 1)
        n *= 2
    sizes.add(cfg.s1 + 1)
    return sorted(sizes)


def _check_grids(cfg) -> None:
    """The sigma grids and interval distributions of the whole curriculum are finite and valid for
    torch.multinomial (extreme rho, p_mean or p_std make them overflow or put no mass on the grid)."""
    import math

    import torch

    from .schedules import interval_probs, karras_sigmas
    for n in _curriculum_sizes(cfg):
        try:
            sigmas = karras_sigmas(n, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        except (OverflowError, ZeroDivisionError, ValueError):
            sigmas = None
        if sigmas is None or not bool(torch.isfinite(sigmas).all()) or not bool((sigmas[1:] > sigmas[:-1]).all()):
            raise ConfigError(f"rho={cfg.rho!r} is out of range for sigma_min={cfg.sigma_min}, sigma_max="
                              f"{cfg.sigma_max}: the Karras grid of {n} points is not finite and increasing; "
                              f"allowed: a rho that keeps it so (the paper uses 7)")
        p = interval_probs(sigmas, cfg.p_mean, cfg.p_std)
        if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or not float(p.sum()) > 0:
            lo, hi = math.log(cfg.sigma_min), math.log(cfg.sigma_max)
            raise ConfigError(f"p_mean={cfg.p_mean!r}, p_std={cfg.p_std!r} put no probability on the sigma grid "
                              f"[sigma_min, sigma_max] (log sigma in [{lo:.3g}, {hi:.3g}]), so torch.multinomial "
                              f"cannot draw intervals; allowed: p_mean within a few p_std of that range (the paper "
                              f"uses -1.1 and 2)")


def _check_limits(cfg) -> None:
    import math
    shape = _shape(cfg)
    dim = math.prod(shape)
    for m in cfg.eval_metrics:
        why = METRIC_REGISTRY[m].refusal(cfg.dataset)   # the metric entry says which data sets it accepts
        if why:
            accepted = [n for n, e in METRIC_REGISTRY.items() if e.accepts(cfg.dataset)]
            raise ConfigError(f"eval_metrics={cfg.eval_metrics!r}: {m!r} cannot score dataset={cfg.dataset!r}: it "
                              f"{why}; metrics that accept it: {', '.join(accepted)}")
        if METRIC_REGISTRY[m].same_size and cfg.eval_n > MAX_EXACT_OT_N:
            raise ConfigError(f"eval_n={cfg.eval_n} is too large for eval_metrics {m!r} (exact OT builds an eval_n x "
                              f"eval_n cost matrix); allowed: eval_n <= {MAX_EXACT_OT_N}")
    check_range("s1", cfg.s1, cfg.s0, MULTINOMIAL_MAX,
                what=f">= s0={cfg.s0} and <= 2**24 = {MULTINOMIAL_MAX} (torch.multinomial draws one of s1 intervals)")
    check_range("lr", cfg.lr, 0.0, MAX_LR, lo_open=True,
                what=f"in (0, {MAX_LR}] (the optimisers move each weight by about lr per step)")
    check_range("sample_n", cfg.sample_n, 1, MAX_SAMPLE_N, what=f"in [1, {MAX_SAMPLE_N}] (samples in one picture)")
    check_range("eval_n", cfg.eval_n, 1, MAX_EVAL_N, what=f"in [1, {MAX_EVAL_N}] (samples generated per evaluation)")
    if cfg.eval_n * dim > MAX_EVAL_ELEMENTS:
        raise ConfigError(f"eval_n={cfg.eval_n} is too large: {cfg.eval_n} samples of shape {shape} need "
                          f"{cfg.eval_n * dim * 4 / 2 ** 30:.0f} GiB; allowed: eval_n <= {MAX_EVAL_ELEMENTS // dim}")
    n_params = _parameters(cfg, dim)
    if n_params > MAX_PARAMETERS:
        keys = "hidden, depth, emb_dim" if cfg.model == "mlp" else "channels, channel_mult, num_blocks"
        raise ConfigError(f"model={cfg.model!r} with these sizes ({keys}: "
                          f"{', '.join(f'{k}={getattr(cfg, k)!r}' for k in keys.split(', '))}) has about "
                          f"{n_params:.3g} parameters; allowed: at most 2**31 (model, EMA and optimiser states "
                          f"would need more than 32 GiB)")
    if cfg.objective == "consistency" and cfg.schedule == "ict":
        _check_grids(cfg)


def preflight(cfg) -> object:
    """What a run needs beyond valid values, checked before anything is written: the optional packages its data
    set and evaluation metrics import (one line naming the extra to install), the Inception weights of fid / kid
    / isc, and a GPU for device='cuda'. Raises ConfigError, MissingExtraError or FileNotFoundError naming it."""
    from .checks import require
    for module in DATA_REGISTRY[cfg.dataset].requires:   # the optional modules the data set's loader imports
        require(module, f"dataset={cfg.dataset!r}")
    metrics = [METRIC_REGISTRY[m] for m in cfg.eval_metrics]
    for module in dict.fromkeys(mod for m in metrics for mod in m.requires):   # and those of its metrics
        require(module, f"eval_metrics={cfg.eval_metrics!r}")
    if any(m.weights for m in metrics):
        from .metrics.fid import inception_weights_path
        inception_weights_path(None)
    from .device import resolve_device
    resolve_device(cfg.device, error=ConfigError)   # ConfigError for device='cuda' without a GPU
    check_checkpoint_inputs(cfg)
    return cfg


ARCHITECTURE = {"mlp": ("hidden", "depth", "emb_dim"),   # the fields that shape a model's weights, per model
                "unet": ("channels", "channel_mult", "num_blocks", "attn_resolutions")}


def check_checkpoint_inputs(cfg) -> None:
    """The checkpoints a run starts from, read (their configuration, tensors mapped, not loaded) before anything is
    written: a frozen ``predictor`` must be a model of this run's data set (else its first GC step fails on a
    shape, or pairs with another distribution), and ``init_checkpoint``'s network must be this run's network
    (model and the fields that shape its weights) on samples of this run's shape. One error naming the file."""
    from .checkpoint import CheckpointError, load_checkpoint
    shape = _shape(cfg)
    uses_predictor = getattr(COUPLING_REGISTRY.get(cfg.flow), "needs_predictor", False)
    if uses_predictor and cfg.predictor not in PREDICTORS:   # a coupling without one never reads the file
        if not Path(cfg.predictor).is_file():
            raise ConfigError(f"predictor={cfg.predictor!r}: the frozen predictor's checkpoint file does not exist")
        other, its_shape = _checkpoint_config(load_checkpoint(cfg.predictor, mmap=True))
        if other.get("dataset") != cfg.dataset or its_shape != shape:
            raise ConfigError(f"predictor={cfg.predictor!r} is a model of dataset {other.get('dataset')!r} (samples "
                              f"of shape {its_shape}); this run trains on {cfg.dataset!r} ({shape}): give the "
                              f"checkpoint of a {cfg.dataset} run as the frozen predictor")
    if cfg.init_checkpoint:
        other, its_shape = _checkpoint_config(load_checkpoint(cfg.init_checkpoint, mmap=True))
        keys = ("model",) + ARCHITECTURE.get(cfg.model, ())
        diff = [f"{k}={other.get(k)!r} there, {getattr(cfg, k)!r} here" for k in keys if other.get(k) != getattr(cfg, k)]
        if its_shape != shape:
            diff.append(f"samples of shape {its_shape} there, {shape} here")
        if diff:
            raise CheckpointError(f"init_checkpoint={cfg.init_checkpoint!r}: its weights do not fit this run's "
                                  f"network ({'; '.join(diff)}): give a checkpoint of this architecture, or change the "
                                  f"network settings to its own")


def _checkpoint_config(ckpt: dict) -> tuple[dict, tuple]:
    """(the flat configuration a checkpoint was written with, its sample shape)."""
    other = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    other = {k: list(v) if isinstance(v, tuple) else v for k, v in other.items()}
    ds = other.get("dataset")
    shape = tuple(ckpt.get("data_shape") or (DATA_REGISTRY[ds].shape if ds in DATA_REGISTRY else (2,)))
    return other, shape


def validate(cfg) -> object:
    """Check every value of ``cfg`` (a Config validates itself when built; this never changes it); raise one
    ConfigError naming the key and what is allowed."""
    try:
        _validate(cfg)
    except ConfigError:
        raise
    except ValueError as e:  # from gclib.checks
        raise ConfigError(str(e)) from None
    return cfg
