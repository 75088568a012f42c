"""Typed run configuration for ``gclib.train``, loaded from YAML (params/train/*.yaml) and validated once.

``load_config(path, overrides, flow=, overlays=)`` reads a YAML file (``gclib.yamlconf``: duplicate keys refused,
``1e-4`` read as a number as in YAML 1.2), composes it with flow overlays and applies overrides given as
``["key=value", ...]`` (the command line's ``--set``) or as a dict (notebook parameters). Validation happens before
any work, when the frozen ``Config`` is built: an unknown key is named with the closest valid key, a wrong type or
out-of-range value is named with what is allowed (one ``ConfigError``). A ``Config`` is immutable:
``cfg.replace(**changes)`` gives a new, validated one. ``config_hash(cfg)`` identifies the training-relevant
settings (used for the run directory ``<runs_dir>/<name>-<hash>`` and to skip finished runs); a setting the run's
coupling does not read does not count (``ignored_settings``: IC's hash does not see mu).

Sections. Every field belongs to one section (``SECTIONS``: run, data, network, coupling, loss, optim, eval,
speed), marked on the field itself together with its place in the hash (``dataclasses.field(metadata=...)``:
left out of the hash, hash-neutral at a value, or hashed only with schedule 'ect'). Attribute access stays flat
(``cfg.lr``); ``cfg.section("optim")`` is one section as a dict, ``cfg.to_sections()`` all of them. A YAML file or a
dict may be written flat (``lr: 1.0e-4``), by section (``optim: {lr: 1.0e-4}``) or both; ``--set optim.lr=1e-4``
names the section too. A key in the wrong section, an unknown section or a key given twice is one ConfigError.

Composition (params/train/). A preset (``digits.yaml``, ``cifar10.yaml``, ...) is the complete configuration of
one data set with its own flow (IC). ``flow="gc"`` (``gclib train PRESET --flow gc``) applies, in this order: the
flow overlay ``flows/gc.yaml`` beside the preset (the flow's own settings, a few lines; a registered flow without
such a file, e.g. a plugin's, sets only ``flow``), the preset's
``flows: {gc: {...}}`` entry (that data set's settings for that flow, e.g. CIFAR-10's dropout 0), the files
``overlays=[path, ...]`` (``--overlay FILE``; one that sets ``flow:`` is followed by the preset's entry for that
flow, so ``--overlay params/train/flows/gc.yaml`` is ``--flow gc``), then the overrides. A ``{flow}`` in ``name``
is replaced by the final flow (``name: digits_{flow}`` -> ``digits_gc``). ``--set flow=gc`` changes the flow alone
(no overlay, no entry).

Presets ship with gclib (``PRESETS_DIR``, gclib/presets: in a checkout a link to params/train, in a wheel its
files): ``load_config("cifar10", flow="gc")`` and ``gclib train cifar10 --flow gc`` read the preset by name when no
file of that name exists; a file without a ``flows/`` folder beside it takes gclib's flow overlays. A config's hash
is of its values only, never of the file it came from.

The allowed names live beside their code: datasets in ``gclib.data``, models in ``gclib.nets``, optimisers in
``gclib.optim``, distances in ``gclib.losses``, flows (the coupling registry) and OT solvers in ``gclib.couplings``,
metrics in ``gclib.evaluation.METRICS``, predictors in ``gclib.checks``.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional, Union

import yaml

from .checks import PREDICTORS, ConfigError, check_choice, check_finite, check_int, check_range
from .couplings import OT_SOLVERS, REGISTRY as COUPLING_REGISTRY, coupling_of
from .data import DATASETS, IMAGE_SHAPES, REGISTRY as DATA_REGISTRY, TOYS  # noqa: F401  (TOYS: re-exported)
from .evaluation import METRICS, REGISTRY as METRIC_REGISTRY
from .losses import DISTANCES
from .nets import MODELS
from .objectives import LOSSES
from .optim import OPTIMIZERS
from .precond import TRAIN_BOUNDARIES
from .schedules import ECT_R_CLIPS
from .yamlconf import DuplicateKeyError, loads as _yaml, read_yaml as _read_yaml  # noqa: F401 (older imports)

DEVICES = ("auto", "cpu", "cuda")
SEED_MAX = 2 ** 63 - 1
SEED_RANGE = f"an integer in [0, 2**63 - 1 = {SEED_MAX}]"
SCHEDULES = ("ict", "ect")   # the consistency objective's schedules, each a registered loss (gclib.objectives)


def objectives() -> tuple:
    """The valid ``objective`` values: "consistency" (with a ``schedule``) and every other loss registered in
    ``gclib.objectives.LOSSES`` (``register_loss``), read live, so a registered loss is a valid objective."""
    return ("consistency",) + tuple(k for k in LOSSES if k not in SCHEDULES)


# The sections, in the order they are listed; each field names its own (see _field).
SECTION_DOCS = {
    "run": "where and how the run goes: name, seed, directories, device, checkpoints, pictures, logs",
    "data": "the training data",
    "network": "the network and the weights it starts from",
    "coupling": "the flow: how data and noise are paired (gclib.couplings) and the GC predictor",
    "loss": "the consistency objective: noise levels, the iCT curriculum or ECT's schedule, the distance",
    "optim": "the optimiser, batch, steps and EMA",
    "eval": "the evaluations logged during training",
    "speed": "speed options: bf16, channels_last and compile on CUDA, the OT pairing solved ahead",
}
_UNSET = object()


def _field(section: str, default=_UNSET, *, factory=None, hashed: bool = True, neutral=_UNSET,
           ect_only: bool = False, items=None):
    """A Config field with its section and its place in the hash, kept in the field's metadata:
    hashed=False: never in the hash (the setting changes neither the trained weights nor the logged evaluations);
    neutral=v: left out of the hash while at v (a field added after runs were cached, v reproducing the training
    from before it existed, so adding a field never invalidates cached runs);
    ect_only=True: acts only with schedule 'ect', left out of the hash of every other configuration;
    items: the type of a list field's items."""
    if section not in SECTION_DOCS:
        raise ValueError(f"section={section!r} is not one of {', '.join(SECTION_DOCS)}")
    meta = {"section": section, "hashed": hashed, "ect_only": ect_only}
    if neutral is not _UNSET:
        meta["neutral"] = neutral
    if items is not None:
        meta["items"] = items
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Config:
    """Everything a training run needs. Units: steps are optimiser steps; batch_size is the GLOBAL batch.
    Fields are read flat (``cfg.lr``); ``Config.SECTIONS`` lists them by section, ``cfg.section(name)`` gives one."""
    name: str = _field("run", "run", hashed=False)
    seed: int = _field("run", 0)
    runs_dir: str = _field("run", "runs", hashed=False)
    # explicit run directory (default: <runs_dir>/<name>-<hash>)
    run_dir: Optional[str] = _field("run", None, hashed=False)
    resume: bool = _field("run", True, hashed=False)       # continue from the run directory's newest valid checkpoint
    device: str = _field("run", "auto", hashed=False)      # auto | cpu | cuda
    # tqdm bar: "auto" (only on a terminal), true, false
    progress: Union[bool, str] = _field("run", "auto", hashed=False)
    # data
    dataset: str = _field("data", "two_gaussians")
    data_root: str = _field("data", "data", hashed=False)
    download: bool = _field("data", False, hashed=False)
    num_data: int = _field("data", 8192)                   # size of the finite point set drawn for 2-D toys
    # network
    model: str = _field("network", "mlp")
    hidden: int = _field("network", 256)                   # mlp
    depth: int = _field("network", 3)                      # mlp
    emb_dim: int = _field("network", 64)                   # mlp noise embedding
    channels: int = _field("network", 64)                  # unet
    channel_mult: list = _field("network", factory=lambda: [1, 2], items=int)  # unet
    num_blocks: int = _field("network", 2)                 # unet
    attn_resolutions: list = _field("network", factory=list, items=int)     # unet
    dropout: float = _field("network", 0.0)                # unet, unet_digits, unet_cifar10
    # consistency training
    sigma_min: float = _field("loss", 0.002)
    sigma_max: float = _field("loss", 80.0)
    sigma_data: float = _field("loss", 0.5)
    rho: float = _field("loss", 7.0)
    s0: int = _field("loss", 10)
    s1: int = _field("loss", 1280)
    p_mean: float = _field("loss", -1.1)
    p_std: float = _field("loss", 2.0)
    distance: str = _field("loss", "pseudo_huber")
    flow: str = _field("coupling", "ic")
    mu: float = _field("coupling", 0.5)                    # probability of a GC sample (flow gc)
    predictor: str = _field("coupling", "ema")             # ema | online | path of a checkpoint (frozen predictor)
    ot_solver: str = _field("coupling", "auto")            # auto | emd | scipy (all exact; see gclib.couplings)
    predict_all: bool = _field("coupling", False)
    # the coupling's own settings (gclib.couplings.Coupling.own_settings), e.g. {width: 3} for a registered coupling
    # whose __init__ takes width; the built-in couplings have none
    coupling_options: dict = _field("coupling", factory=dict, neutral={})
    # consistency | denoising (diffusion pre-training, same network)
    objective: str = _field("loss", "consistency", neutral="consistency")
    # ict (discrete curriculum N(k)) | ect (continuous t, shrinking t - r)
    schedule: str = _field("loss", "ict", neutral="ict")
    # ECT's settings: their defaults are ECT's own choices, their neutral values gclib's earlier ones (docs/method.md,
    # Table 2); the last three act only with schedule 'ect' and are hashed only then
    ect_q: float = _field("loss", 2.0, neutral=2.0)        # ect: t - r = t n(t) / q^a at stage a (ECT's CIFAR-10)
    ect_stages: int = _field("loss", 8, neutral=8)         # ect: number of stages a over training
    ect_k: float = _field("loss", 8.0, neutral=8.0)        # ect: n(t) = 1 + k sigmoid(-b t)
    ect_b: float = _field("loss", 1.0, neutral=1.0)
    # ect: r = t (1 - n(t) / q^(a + offset)); 1 is ECT's, 0 gclib's earlier
    ect_stage_offset: int = _field("loss", 1, neutral=0, ect_only=True)
    # ect: r clipped at 0 with the data as target there (ECT) | "sigma_min"
    ect_r_clip: str = _field("loss", "zero", neutral="sigma_min", ect_only=True)
    # ect: the loss distance (ECT's ||.||_2); null: `distance` applies
    ect_distance: Optional[str] = _field("loss", "l2_norm", neutral=None, ect_only=True)
    # start from these weights (model and EMA), e.g. a denoising run
    init_checkpoint: Optional[str] = _field("network", None, neutral=None)
    # c_skip / c_out while the network trains: "shifted" (gclib's f(x, sigma_min) = x in both modes) or "edm" (EDM's
    # unshifted form in training mode, as locuslab/ect's ECMPrecond; the shifted one for sampling and evaluation)
    train_boundary: str = _field("network", "shifted", neutral="shifted")
    # optimisation
    optimizer: str = _field("optim", "lion")
    lr: float = _field("optim", 1e-4)
    betas: Optional[list] = _field("optim", None, items=float)  # default: adam/radam (0.9, 0.999), lion (0.9, 0.99)
    weight_decay: float = _field("optim", 0.0)
    eps: float = _field("optim", 1e-8)
    batch_size: int = _field("optim", 512)
    total_steps: int = _field("optim", 100_000)
    ema_decay: float = _field("optim", 0.9999)
    ema_every: int = _field("optim", 5)
    # bookkeeping
    checkpoint_every: int = _field("run", 1000, hashed=False)
    keep_checkpoints: int = _field("run", 3, hashed=False)
    sample_every: int = _field("run", 0, hashed=False)     # PNG sample grid every k steps (0: only at the end)
    sample_n: int = _field("run", 64, hashed=False)
    # evaluations (hashed: a cached run must carry the evaluation curve that was asked for)
    eval_every: int = _field("eval", 0)                    # evaluation hooks every k steps (0: only at the end if any)
    eval_metrics: list = _field("eval", factory=list, items=str)  # names of gclib.evaluation.METRICS
    eval_n: int = _field("eval", 1000)
    # GPU speed options (CUDA only; ignored with a warning on CPU)
    bf16: bool = _field("speed", False)
    channels_last: bool = _field("speed", False)
    compile: bool = _field("speed", False, hashed=False)
    # flow ot: solve step k+1's pairing while step k runs (the same pairs)
    ot_prefetch: bool = _field("speed", True, hashed=False)
    # logs of rank 0 (gclib.runlog): a status line on stdout and a log.jsonl record every log_every steps
    log_every: int = _field("run", 100, hashed=False)      # 0: only the last step
    # TensorBoard scalars in <run_dir>/tensorboard (the tensorboard extra)
    tensorboard: bool = _field("run", False, hashed=False)

    def __post_init__(self):
        # normalise (int -> float for float fields, 1e3 -> 1000 for int fields, tuples and comma strings -> lists;
        # new objects, nothing is mutated) and validate: a Config that exists is a valid Config
        for key in FIELD_NAMES:
            object.__setattr__(self, key, _normalise(key, getattr(self, key)))
        validate(self)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    def to_dict(self) -> dict:
        """The fields as a plain flat dict (lists copied)."""
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict:
        """The fields of section ``name`` (one of ``Config.SECTIONS``) as a dict, in field order."""
        if name not in SECTIONS:
            raise _unknown_section(name)
        return {k: _copy(getattr(self, k)) for k in SECTIONS[name]}

    def to_sections(self) -> dict:
        """{section: {field: value}} for every section (nested form; ``from_dict`` reads it back)."""
        return {s: self.section(s) for s in SECTIONS}

    def replace(self, **changes) -> "Config":
        """A new, validated Config with ``changes`` applied (flat keys or sections; unknown keys are named)."""
        return from_dict({**self.to_dict(), **flatten(changes)})


def _copy(value):
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


_HINTS = typing.get_type_hints(Config)
FIELD_NAMES = tuple(f.name for f in fields(Config))
_META = {f.name: f.metadata for f in fields(Config)}
# section -> its field names (in field order); field -> its section
SECTIONS: dict = {s: tuple(n for n in FIELD_NAMES if _META[n]["section"] == s) for s in SECTION_DOCS}
SECTION_OF: dict = {n: _META[n]["section"] for n in FIELD_NAMES}
Config.SECTIONS = SECTIONS
# Derived from the fields' metadata (kept for older imports): the fields never hashed, the hash-neutral values,
# the fields hashed only with schedule 'ect', the item type of each list field.
NOT_HASHED = tuple(n for n in FIELD_NAMES if not _META[n]["hashed"])
HASH_NEUTRAL: dict = {n: _META[n]["neutral"] for n in FIELD_NAMES if "neutral" in _META[n]}
ECT_ONLY = tuple(n for n in FIELD_NAMES if _META[n]["ect_only"])
LIST_ITEMS = {n: _META[n]["items"] for n in FIELD_NAMES if "items" in _META[n]}


def fields_of(section: str) -> tuple:
    """The field names of ``section`` (ConfigError naming the closest section for an unknown one)."""
    if section not in SECTIONS:
        raise _unknown_section(section)
    return SECTIONS[section]


def _in_hash(cfg: Config, key: str, value) -> bool:
    meta = _META[key]
    if not meta["hashed"]:
        return False
    if "neutral" in meta and value == meta["neutral"]:
        return False
    return not (meta["ect_only"] and cfg.schedule != "ect")


# ------------------------------------------------------------------------------------------------ types
def _type_name(hint) -> str:
    args = typing.get_args(hint)
    if args:
        return " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
    return getattr(hint, "__name__", str(hint))


def _wrong_type(key: str, value, expected: str) -> ConfigError:
    extra = ""
    if isinstance(value, bool):
        extra = " (a bool is not a number)" if expected in ("int", "float") else ""
    elif isinstance(value, str) and expected in ("int", "float"):
        try:
            float(value)
            extra = " (a string: give the number without quotes, e.g. 1.0e-4)"
        except ValueError:
            pass
    return ConfigError(f"{key}={value!r} has the wrong type; expected {expected}{extra}")


def _item_from_text(text: str):
    try:
        return _yaml(text.strip())
    except yaml.YAMLError:
        return text.strip()


def _as_kind(key: str, value, kind):
    """``value`` as ``kind`` (float, int, bool, str, list) or ConfigError naming the key."""
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and not isinstance(value, bool):
        given = value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int):
            if not -2 ** 63 <= value < 2 ** 63:
                allowed = SEED_RANGE if key == "seed" else "an integer in [-2**63, 2**63 - 1] (64 bits)"
                raise ConfigError(f"{key}={given!r} is out of range; allowed: {allowed}")
            return value
        if isinstance(value, float):
            raise ConfigError(f"{key}={value!r} is not an integer; expected int")
    if kind in (bool, str) and isinstance(value, kind):
        return value
    if kind is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise ConfigError(f"{key}={value!r} has the wrong type; expected a mapping of name: value")
    if kind is list:
        item = LIST_ITEMS[key]
        if isinstance(value, str):  # "1,2,2" or "[w2, nn_dist]"
            text = value.strip()
            if (text.startswith(("[", "(")) or text.endswith(("]", ")"))) and text[:1] + text[-1:] not in ("[]", "()"):
                raise ConfigError(f"{key}={value!r} is not a list: its brackets do not match; write [a, b]")
            value = [_item_from_text(v) for v in text.strip("[]()").split(",") if v.strip()]
        if isinstance(value, (list, tuple)):
            try:
                return [_as_kind(key, v, item) for v in value]
            except ConfigError:
                raise ConfigError(f"{key}={value!r} has the wrong type; expected a list of {item.__name__}") from None
        raise ConfigError(f"{key}={value!r} has the wrong type; expected a list of {item.__name__}")
    raise _wrong_type(key, value, kind.__name__)


def _normalise(key: str, value):
    """The value of field ``key`` in its canonical type (int -> float for float fields, integral float -> int for
    int fields, tuple or comma string -> list); ConfigError naming the key when the type is wrong."""
    hint = _HINTS[key]
    kinds = typing.get_args(hint) or (hint,)
    if value is None and type(None) in kinds:
        return None
    for kind in kinds:
        if kind is type(None):
            continue
        if len(kinds) == 1 or kind is list:
            return _as_kind(key, value, kind)
        try:
            return _as_kind(key, value, kind)
        except ConfigError:
            pass
    raise _wrong_type(key, value, _type_name(hint))


def _from_text(key: str, value):
    """A ``--set`` value as YAML read it, made lenient for text: 'inf' / 'nan' and the like for number fields,
    'none' / 'null' for fields that can be null."""
    if not isinstance(value, str):
        return value
    kinds = typing.get_args(_HINTS[key]) or (_HINTS[key],)
    if type(None) in kinds and value.strip().lower() in ("null", "none"):
        return None
    if float in kinds or int in kinds:
        try:
            return float(value)
        except ValueError:
            return value
    return value


# ------------------------------------------------------------------------------------------------ checks
def _unknown(key) -> ConfigError:
    close = difflib.get_close_matches(str(key), FIELD_NAMES, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(FIELD_NAMES)}"
    return ConfigError(f"unknown configuration key {key!r}{hint}")


RUN_NAME = re.compile(r"[\w-][\w.-]*")


def _check_name(name: str) -> None:
    if not RUN_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"name={name!r} is not a valid run name; use letters, digits, '-', '_' and '.', not "
                          f"starting with '.' and without '..' (it names the run directory under runs_dir)")


def _validate(cfg: Config) -> None:
    for f in fields(cfg):  # finite numbers only
        if _HINTS[f.name] is float:
            check_finite(f.name, getattr(cfg, f.name))
    _check_name(cfg.name)
    check_choice("dataset", cfg.dataset, DATA_REGISTRY)   # gclib.data's registry: a registered data set counts
    check_choice("model", cfg.model, MODELS)
    check_choice("flow", cfg.flow, COUPLING_REGISTRY)   # gclib.couplings' registry: a registered coupling counts
    _check_coupling_options(cfg)
    check_choice("distance", cfg.distance, DISTANCES)
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice("device", cfg.device, DEVICES)
    check_choice("ot_solver", cfg.ot_solver, OT_SOLVERS)
    check_choice("objective", cfg.objective, objectives())
    check_choice("schedule", cfg.schedule, SCHEDULES)
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
    _check_limits(cfg)


def _check_coupling_options(cfg: Config) -> None:
    """``coupling_options`` names only the coupling's own settings (``Coupling.own_settings``)."""
    cls = COUPLING_REGISTRY[cfg.flow]
    own = cls.own_settings()
    if own is None:
        return
    for key in cfg.coupling_options:
        if key not in own:
            fields = cls.config_fields()
            raise ConfigError(f"coupling_options={cfg.coupling_options!r}: flow {cfg.flow!r} has no setting {key!r}; "
                              f"its own settings: {', '.join(own) or 'none'}" +
                              (f" (config fields it reads: {', '.join(fields)})" if fields else ""))


def _check_coupling(cfg: Config) -> None:
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


def _shape(cfg: Config) -> tuple:
    return tuple(DATA_REGISTRY[cfg.dataset].shape)   # the data set is validated (registered) before this


def _parameters(cfg: Config, dim: int) -> int:
    """The number of weights of the configured network (exact for the MLP; a close upper estimate for the
    configurable U-Net, whose 3x3 convolutions dominate; the presets are of fixed, known size)."""
    if cfg.model == "mlp":
        h = cfg.hidden
        return cfg.emb_dim * h + h + dim * h + h + cfg.depth * (h * h + h) + h * dim + dim
    if cfg.model != "unet":
        return 0
    per_level = [(cfg.channels * m) ** 2 for m in cfg.channel_mult]
    return 2 * 2 * 9 * (cfg.num_blocks + 1) * sum(per_level)


def _curriculum_sizes(cfg: Config) -> list:
    """Every grid size N(k) the iCT curriculum reaches (``gclib.schedules.num_points``)."""
    sizes, n = set(), cfg.s0
    while n < cfg.s1:
        sizes.add(n + 1)
        n *= 2
    sizes.add(cfg.s1 + 1)
    return sorted(sizes)


def _check_grids(cfg: Config) -> None:
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


def _check_limits(cfg: Config) -> None:
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


def preflight(cfg: Config) -> Config:
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


def check_checkpoint_inputs(cfg: Config) -> None:
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


def validate(cfg: Config) -> Config:
    """Check every value of ``cfg`` (a Config validates itself when built; this never changes it); raise one
    ConfigError naming the key and what is allowed."""
    try:
        _validate(cfg)
    except ConfigError:
        raise
    except ValueError as e:  # from gclib.checks
        raise ConfigError(str(e)) from None
    return cfg


# ------------------------------------------------------------------------------------------------ sections
PER_FLOW_KEY = "flows"   # a preset's per-flow settings: flows: {gc: {dropout: 0.0}, ...}


def _unknown_section(name) -> ConfigError:
    close = difflib.get_close_matches(str(name), list(SECTIONS), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(f"unknown configuration section {name!r}; {hint}sections: {', '.join(SECTIONS)}")


def _in_section(key, section: str) -> str:
    """``key`` if it is a field of ``section``; a ConfigError naming the key's own section otherwise."""
    if key not in _HINTS:
        close = difflib.get_close_matches(str(key), SECTIONS[section], n=1, cutoff=0.5) or \
            difflib.get_close_matches(str(key), FIELD_NAMES, n=1, cutoff=0.5)
        if close:
            own = SECTION_OF[close[0]]
            hint = f"did you mean {close[0]!r}" + ("" if own == section else f" (section {own!r})") + "?"
        else:
            hint = f"keys of {section}: {', '.join(SECTIONS[section])}"
        raise ConfigError(f"unknown configuration key {key!r} in section {section!r}; {hint}")
    if SECTION_OF[key] != section:
        raise ConfigError(f"key {key!r} is in section {section!r} but belongs to section {SECTION_OF[key]!r}; "
                          f"move it there (or write it flat, without a section)")
    return key


def flatten(d: dict | None) -> dict:
    """``d`` written flat (``lr: 1.0e-4``), by section (``optim: {lr: 1.0e-4}``) or both, as one flat dict of
    fields. Values are not checked here (the Config does that); keys are: an unknown key or section, a key in the
    wrong section or a key given twice is one ConfigError naming it."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"config={d!r}: expected a mapping of key: value")
    out, where = {}, {}

    def put(key, value, place):
        if key in out:
            raise ConfigError(f"key {key!r} is given twice, {where[key]} and {place}; keep one")
        out[key], where[key] = value, place

    for key, value in d.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"section {key!r} must hold a mapping of key: value (keys of {key}: "
                                  f"{', '.join(SECTIONS[key])}), not {value!r}")
            for k, v in value.items():
                put(_in_section(k, key), v, f"in section {key!r}")
        elif key in _HINTS:
            if isinstance(value, dict) and _HINTS[key] is not dict:
                raise ConfigError(f"{key!r} is a key of section {SECTION_OF[key]!r}, not a section: give "
                                  f"{key}: <value>; sections: {', '.join(SECTIONS)}")
            put(key, value, "at the top level")
        elif key == PER_FLOW_KEY:
            raise ConfigError(f"{PER_FLOW_KEY!r} (a preset's settings per flow) is read from a preset file by "
                              f"load_config, not from a dict, an overlay or an override")
        elif isinstance(value, dict):
            raise _unknown_section(key)
        else:
            raise _unknown(key)
    return out


# ------------------------------------------------------------------------------------------------ building
def from_dict(d: dict | None) -> Config:
    """Build and validate a Config from a plain dict of typed values, flat or by section (unknown keys, types and
    ranges are checked). Strings are not read as numbers here: that leniency is for text (``--set``, YAML files)."""
    return Config(**flatten(d))


def _override_key(key: str) -> str:
    """A --set key: a field name, or section.field."""
    key = key.strip()
    if key not in _HINTS and "." in key:
        section, _, name = key.partition(".")
        if section not in SECTIONS:
            raise _unknown_section(section)
        return _in_section(name, section)
    if key not in _HINTS:
        raise _unknown(key)
    return key


def parse_overrides(items) -> dict:
    """["key=value", ...] -> {key: value} (key: a field name, or section.field); values are read as YAML (1e-4 is
    a number) and, for number fields, as numbers ('inf' -> inf, which validation then refuses by name). A value
    that is not valid YAML (``[w2,``) is one ConfigError naming the key. The values of path keys (``PATH_KEYS``)
    are paths, never YAML: taken as written, ``~`` expanded (``path_value``)."""
    if isinstance(items, str):
        items = [items]
    out = {}
    for item in items or ():
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        key = _override_key(key)
        if key in PATH_KEYS:
            out[key] = path_value(key, value)
            continue
        try:
            v = _yaml(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}={value}: the value is not valid YAML ({_yaml_problem(e)}); quote it, or "
                              f"write a list as [a, b]") from None
        out[key] = _from_text(key, v)
    return out


# The presets that ship with gclib (package data): gclib/presets/<name>.yaml and gclib/presets/flows/<flow>.yaml. In a
# checkout gclib/presets is a link to params/train, the one copy of the files; a wheel holds them as files.
PRESETS_DIR = Path(__file__).parent / "presets"


def preset_names() -> list:
    """The names of the presets that ship with gclib (``gclib presets``), sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def flow_overlay_names() -> list:
    """The flows that have a packaged overlay (``--flow``), sorted."""
    return sorted(p.stem for p in (PRESETS_DIR / "flows").glob("*.yaml"))


def config_file(path) -> Path:
    """The YAML file that ``path`` names: an existing file or folder as given (a folder is refused when read), else
    a preset of gclib by name (``cifar10`` or ``cifar10.yaml``, no folder part). ConfigError listing the presets
    when it is neither."""
    p = Path(path)
    if p.exists():
        return p
    text = str(path)
    if p.name == text:                          # a bare name: a preset's
        preset = PRESETS_DIR / (text if text.endswith(".yaml") else f"{text}.yaml")
        if preset.is_file():
            return preset
    names = preset_names()
    raise ConfigError(f"config file {text!r} does not exist" + (
        f" and is not a preset of gclib; presets: {', '.join(names)} (gclib presets)" if p.name == text else
        f" (a preset is named without a folder: {', '.join(names)})"))


# Config fields that hold a path (or, for predictor, a keyword or a path): --set gives them as written.
PATH_KEYS = ("run_dir", "runs_dir", "data_root", "predictor", "init_checkpoint")
NULL_WORDS = ("null", "Null", "NULL", "None", "none", "~")


def path_value(key: str, text: str):
    """The value of path key ``key`` given as text on the command line: the path as written (no YAML: '#', ':',
    '2024' or 'on' stay as they are), '~' at its start expanded as a shell does. For a key that may be null (run_dir,
    init_checkpoint) an empty value and YAML's null words (null, ~; also None) mean null; ./null names a folder."""
    kinds = typing.get_args(_HINTS[key]) or (_HINTS[key],)
    if type(None) in kinds and (text == "" or text in NULL_WORDS):
        return None
    if text == "":
        raise ConfigError(f"--set {key}=: give a path")
    if "\0" in text:
        raise ConfigError(f"--set {key}={text!r}: a path cannot hold a NUL character")
    return os.path.expanduser(text)


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    text = f"column {mark.column + 1}: {problem}" if mark and problem else str(e)
    return " ".join(text.split())


def flow_overlay(preset, flow: str) -> Path | None:
    """The overlay file of the registered ``flow`` for the preset file ``preset``: ``flows/<flow>.yaml`` beside it
    when a ``flows/`` folder is there, else gclib's packaged overlay (so ``gclib train ./my.yaml --flow gc`` works for
    any file); None when there is none (a coupling registered by a plugin: its settings are its own defaults, the
    config's fields and ``coupling_options``)."""
    check_choice("flow", flow, COUPLING_REGISTRY, error=ConfigError)
    folder = Path(preset).parent / "flows"
    if not folder.is_dir():
        folder = PRESETS_DIR / "flows"
    path = folder / f"{flow}.yaml"
    return path if path.is_file() else None


def _per_flow(raw, path) -> dict:
    """A preset's ``flows:`` entry, checked whole: {flow: flat dict of that data set's settings for the flow}."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r}: {PER_FLOW_KEY} must map a flow name to its settings "
                          f"(e.g. gc: {{dropout: 0.0}}), not {raw!r}")
    out = {}
    for flow, settings in raw.items():
        check_choice(f"{PER_FLOW_KEY}.{flow}", flow, COUPLING_REGISTRY, error=ConfigError)
        if not isinstance(settings, dict):
            raise ConfigError(f"config file {str(path)!r}: {PER_FLOW_KEY}.{flow} must hold key: value settings, "
                              f"not {settings!r}")
        out[flow] = flatten(settings)
        if "flow" in out[flow]:
            raise ConfigError(f"config file {str(path)!r}: {PER_FLOW_KEY}.{flow} sets flow; it holds the settings "
                              f"that go with flow {flow!r}, not the flow")
    return out


def compose(path=None, flow: str | None = None, overlays=()) -> dict:
    """The flat, not yet validated settings of the config file ``path`` (a file, or a preset's name:
    ``config_file``) composed, in this order, with the overlay of ``flow`` (``flow_overlay``: ``flows/<flow>.yaml``
    beside it, else gclib's) and the files ``overlays``. Right after a file that sets the flow (the
    flow's overlay, or an overlay file with ``flow:``), the preset's ``flows:`` entry for that flow is applied, so
    ``overlays=["params/train/flows/gc.yaml"]`` is ``flow="gc"`` and a later file still wins over the entry.
    ``{flow}`` in the name is not replaced yet (``load_config`` does it after the overrides)."""
    if isinstance(overlays, (str, Path)):
        overlays = [overlays]
    if path is None:
        if flow is not None:
            raise ConfigError(f"flow={flow!r} composes a preset with its flow overlay: give the preset file too "
                              f"(e.g. digits, a preset of gclib, or params/train/digits.yaml)")
        raw, per_flow = {}, {}
    else:
        path = config_file(path)
        raw = _read_yaml(path)
        per_flow = _per_flow(raw.pop(PER_FLOW_KEY, None), path)
    d = flatten(raw)
    own = d.get("flow", Config.flow)
    if isinstance(own, str) and own in per_flow:
        raise ConfigError(f"config file {str(path)!r}: {PER_FLOW_KEY}.{own} is the preset's own flow; write its "
                          f"settings in the preset itself ({PER_FLOW_KEY} entries are for the other flows)")
    files = []
    if flow is not None:
        file = flow_overlay(path, flow)
        o = flatten(_read_yaml(file)) if file is not None else {}
        if o.get("flow", flow) != flow:
            raise ConfigError(f"overlay {str(file)!r} sets flow={o['flow']!r}; the overlay of flow {flow!r} must "
                              f"set flow: {flow} or leave it out")
        files.append({**o, "flow": flow})
    files += [flatten(_read_yaml(file)) for file in overlays or ()]
    for settings in files:
        d.update(settings)
        if isinstance(settings.get("flow"), str):
            d.update(per_flow.get(settings["flow"], {}))
    return d


FLOW_MARK = "{flow}"   # in a preset's name: replaced by the composed flow


def _named(d: dict) -> dict:
    name = d.get("name")
    if isinstance(name, str) and FLOW_MARK in name:
        d = {**d, "name": name.replace(FLOW_MARK, str(d.get("flow", Config.flow)))}
    return d


def load_config(path=None, overrides=None, *, flow: str | None = None, overlays=()) -> Config:
    """Read a YAML config (or start from the defaults when path is None), compose it with the overlay of ``flow``
    and the files ``overlays`` (see the module docstring) and apply overrides.

    overrides: a dict of typed values (notebook parameters; flat or by section) or a list of "key=value" strings
    (``--set``). ``{flow}`` in the resulting name is replaced by the resulting flow.
    """
    d = compose(path, flow, overlays)
    if overrides:
        d.update(flatten(overrides) if isinstance(overrides, dict) else parse_overrides(overrides))
    return from_dict(_named(d))


def as_config(config) -> Config:
    """Accept a Config (returned as it is: it was validated when built), a dict or a YAML path."""
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return from_dict(config)
    if isinstance(config, (str, Path)):
        return load_config(config)
    raise ConfigError(f"config={config!r}: pass a Config, a dict or the path of a YAML file")


# ------------------------------------------------------------------------------------------------ run identity
def _default(name: str):
    f = _FIELDS[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


_FIELDS = {f.name: f for f in fields(Config)}


def ignored_settings(config) -> dict:
    """{field: default} of the settings this configuration's parts do not use; its run identity (``config_hash``)
    reads them at their defaults. The one place that maps such configurations to their runs.

    The fields of the coupling section that the configured coupling does not read (``Coupling.config_fields``):
    IC reads none of mu, ot_solver, predict_all and predictor; OT reads ot_solver; GC reads mu, predict_all and
    predictor; a registered coupling those its ``settings`` name (and predictor when it ``needs_predictor``).
    A configuration that leaves them at their defaults hashes exactly as before this rule (every cached run and
    every committed profile keeps its run directory); one that sets an ignored field (``--set mu=0.9`` with flow
    ic) hashes as the default one, so it reuses that run instead of training the same weights again under
    another hash."""
    cfg = as_config(config)
    read = set(COUPLING_REGISTRY[cfg.flow].config_fields()) | {"flow", "coupling_options"}
    return {k: _default(k) for k in SECTIONS["coupling"] if k not in read}


def identity(config) -> dict:
    """The settings that identify a run, the input of ``config_hash``: the fields that count for the hash (each
    field's metadata, see ``_field``), with ``ignored_settings`` at their defaults."""
    cfg = as_config(config)
    d = {**cfg.to_dict(), **ignored_settings(cfg)}
    return {k: v for k, v in d.items() if _in_hash(cfg, k, v)}


def _digest(cfg: Config, world_size: int = 1) -> str:
    d = identity(cfg)
    if world_size > 1 and pairs_per_rank(cfg):
        d["world_size"] = int(world_size)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def pairs_per_rank(cfg: Config) -> bool:
    """Whether the flow's pairing depends on the batch (OT: ``Coupling.per_batch``), which under DDP is each rank's
    share of it, so that runs on different numbers of processes are different experiments."""
    return bool(getattr(COUPLING_REGISTRY.get(cfg.flow), "per_batch", False))


def config_hash(config, length: int = 10, world_size: int = 1) -> str:
    """Hex digest of the settings that change the trained weights (``identity``: each field's metadata says whether
    it counts, see ``_field``; settings the run's parts ignore count at their defaults, see ``ignored_settings``),
    ``length`` characters. Computed once per Config (a Config never changes). ``world_size``: the number of
    training processes, part of the identity only where it changes the experiment (> 1 with a flow that pairs
    within a batch, ``pairs_per_rank``): one process's hash is the same as ever."""
    cfg = as_config(config)
    key = "_digest" if world_size <= 1 or not pairs_per_rank(cfg) else f"_digest_{int(world_size)}"
    digest = cfg.__dict__.get(key)
    if digest is None:
        digest = _digest(cfg, world_size)
        object.__setattr__(cfg, key, digest)
    return digest[:length]


def run_dir_for(config, world_size: int = 1) -> Path:
    """``run_dir`` if set, else ``<runs_dir>/<name>-<config_hash>`` (of ``world_size`` processes)."""
    cfg = as_config(config)
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return Path(cfg.runs_dir) / f"{cfg.name}-{config_hash(cfg, world_size=world_size)}"
