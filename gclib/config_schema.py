"""The run configuration's schema: the frozen ``Config`` dataclass, its fields' sections and places in the hash,
the canonical types of their values, and the flat or sectioned dicts it is built from (``gclib.config`` is the face
that loads, composes and identifies configurations; the value checks are in ``gclib.config_checks``).

Sections. Every field belongs to one section (``SECTIONS``: run, data, network, coupling, loss, optim, eval,
speed), marked on the field itself together with its place in the hash (``dataclasses.field(metadata=...)``:
left out of the hash, hash-neutral at a value, or hashed only with schedule 'ect'). Attribute access stays flat
(``cfg.lr``); ``cfg.section("optim")`` is one section as a dict, ``cfg.to_sections()`` all of them. A YAML file or a
dict may be written flat (``lr: 1.0e-4``), by section (``optim: {lr: 1.0e-4}``) or both; ``--set optim.lr=1e-4``
names the section too. A key in the wrong section, an unknown section or a key given twice is one ConfigError.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field, fields
from typing import Optional, Union

import yaml

from .checks import ConfigError
from .config_checks import SCHEDULES, SEED_RANGE, validate
from .yamlconf import loads as _yaml

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
    # the loss's own settings (gclib.objectives.Loss.own_settings), e.g. {width: 3} for a registered loss whose
    # __init__ takes width; the built-in losses have none
    loss_options: dict = _field("loss", factory=dict, neutral={})
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


def _unknown(key) -> ConfigError:
    close = difflib.get_close_matches(str(key), FIELD_NAMES, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(FIELD_NAMES)}"
    return ConfigError(f"unknown configuration key {key!r}{hint}")



# ------------------------------------------------------------------------------------------------ sections
PER_FLOW_KEY = "flows"   # a preset's per-flow settings: flows: {gc: {dropout: 0.0}, ...}
# EDM-style sections: ``name`` in a section names its part, the registry entry the part is built from, and is the
# field given here (``coupling: {name: gc, mu: 0.5}`` is ``flow: gc, mu: 0.5``: one config, one hash). The one place
# that maps it; the run section's ``name`` stays the run's name.
PART_NAME = {"data": "dataset", "network": "model", "coupling": "flow", "loss": "objective", "optim": "optimizer"}
# A key of the coupling or the loss section that is no config field is that part's own setting: it goes to the
# section's field given here (``coupling: {name: wide, width: 3}`` is ``flow: wide, coupling_options: {width: 3}``,
# ``loss: {name: mine, gamma: 2}`` is ``objective: mine, loss_options: {gamma: 2}``), checked against the part's
# ``own_settings`` (``gclib.couplings.Coupling``, ``gclib.objectives.Loss``) when the Config is built.
OWN_SETTINGS = {"coupling": "coupling_options", "loss": "loss_options"}


def _unknown_section(name) -> ConfigError:
    close = difflib.get_close_matches(str(name), list(SECTIONS), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(f"unknown configuration section {name!r}; {hint}sections: {', '.join(SECTIONS)}")


def _in_section(key, section: str) -> str:
    """The field ``key`` names in ``section``: ``key`` itself if it is a field of ``section``, the part's field for
    ``name`` (``PART_NAME``); a ConfigError naming the key's own section otherwise."""
    if key == "name" and section in PART_NAME:
        return PART_NAME[section]
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
    fields. In a section ``name`` names its part (``PART_NAME``: ``coupling: {name: gc}`` is ``flow: gc``), and a key
    of the coupling section that is no field is the coupling's own setting (``OWN_SETTINGS``: ``coupling: {name:
    wide, width: 3}`` is ``flow: wide, coupling_options: {width: 3}``). Values are not checked here (the Config does
    that); keys are: an unknown key or section, a key in the wrong section or a key given twice is one ConfigError
    naming it."""
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
                if key in OWN_SETTINGS and k != "name" and k not in _HINTS:   # the part's own setting
                    put((OWN_SETTINGS[key], k), v, f"in section {key!r}")
                    continue
                place = f"in section {key!r}" + (" (as name)" if k == "name" else "")
                if key == "loss" and k == "name" and v in SCHEDULES:   # loss: {name: ect}: the ect loss
                    for field_name, field_value in schedule_loss(v).items():
                        put(field_name, field_value, place)
                    continue
                put(_in_section(k, key), v, place)
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
    return _gather_own(out, where)


def schedule_loss(name: str) -> dict:
    """The fields that ``loss: {name: ict}`` or ``{name: ect}`` sets: the consistency objective with that schedule
    (the registered losses "ict" and "ect" are the consistency objective's two schedules; ``objective: consistency,
    schedule: ect`` is the flat form, the same config and hash)."""
    return {"objective": "consistency", "schedule": name}


def _gather_own(out: dict, where: dict) -> dict:
    """A part's own settings given one by one in its section (keys (coupling_options, name) and (loss_options,
    name) of ``flatten``) gathered into that field; one also given at the top level is a key given twice."""
    flat = {k: v for k, v in out.items() if not isinstance(k, tuple)}
    for section, field_name in OWN_SETTINGS.items():
        own = {k[1]: v for k, v in out.items() if isinstance(k, tuple) and k[0] == field_name}
        if not own:
            continue
        given = flat.get(field_name, {})
        if isinstance(given, dict):
            for name in own:
                if name in given:
                    raise ConfigError(f"the {section}'s setting {name!r} is given twice, {where[field_name]} (in "
                                      f"{field_name}) and {where[(field_name, name)]}; keep one")
            flat[field_name] = {**given, **own}
        elif field_name in flat:   # not a mapping: the Config names the wrong type
            raise ConfigError(f"{field_name}={given!r} has the wrong type; expected a mapping of name: value")
    return flat


# ------------------------------------------------------------------------------------------------ building
def from_dict(d: dict | None) -> Config:
    """Build and validate a Config from a plain dict of typed values, flat or by section (unknown keys, types and
    ranges are checked). Strings are not read as numbers here: that leniency is for text (``--set``, YAML files)."""
    return Config(**flatten(d))
