"""Typed run configuration for ``gclib.train``, loaded from YAML (params/train/*.yaml) and validated once.

``load_config(path, overrides, flow=, overlays=)`` reads a YAML file (``gclib.yamlconf``: duplicate keys refused,
``1e-4`` read as a number as in YAML 1.2), composes it with flow overlays and applies overrides given as
``["key=value", ...]`` (the command line's ``--set``) or as a dict (notebook parameters). Validation happens before
any work, when the frozen ``Config`` is built: an unknown key is named with the closest valid key, a wrong type or
out-of-range value is named with what is allowed (one ``ConfigError``). A ``Config`` is immutable:
``cfg.replace(**changes)`` gives a new, validated one. ``config_hash(cfg)`` identifies the training-relevant
settings (used for the run directory ``<runs_dir>/<name>-<hash>`` and to skip finished runs); a setting the run's
coupling does not read does not count (``ignored_settings``: IC's hash does not see mu).

The configuration is in three modules, one way up: ``gclib.config_checks`` (value checks, ``validate`` and
``preflight``), ``gclib.config_schema`` (the ``Config`` dataclass, its fields' sections and places in the hash, the
types of their values, flat and sectioned dicts) and this face (files, composition, overrides, run identity),
which re-exports the names of the other two, so ``from gclib.config import ...`` finds them all.

Parts (EDM-style). ``name`` in a section names its part (``PART_NAME``: ``coupling: {name: gc, mu: 0.5}`` is ``flow:
gc, mu: 0.5``, the same config and hash), and ``part(cfg, section)`` gives the part's builder its section's settings:
``make_coupling(**part(cfg, "coupling"))``, ``make_optimizer(params=..., **part(cfg, "optim"))``,
``build_network(shape, **part(cfg, "network"))``, ``load_dataset(**part(cfg, "data"), seed=cfg.seed)``,
``build_loss(**part(cfg, "loss"), coupling=..., predictor=..., total_steps=cfg.total_steps)`` (``loss: {name: ect}``
is the consistency objective with schedule ect; a key of the loss section that is no field is the loss's own
setting, ``loss_options``) and ``make_evaluation(**part(cfg, "eval"), seed=cfg.seed, sigma_max=cfg.sigma_max)``.

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
import hashlib
import json
import os
import typing
from dataclasses import fields
from pathlib import Path
from typing import Callable

import yaml

from .checks import ConfigError, check_choice
from .config_checks import (ARCHITECTURE, DEVICES, MAX_EVAL_ELEMENTS, MAX_EVAL_N, MAX_EXACT_OT_N, MAX_LR,
                            MAX_PARAMETERS, MAX_SAMPLE_N, MULTINOMIAL_MAX, RUN_NAME, SCHEDULES, SEED_MAX, SEED_RANGE,
                            check_checkpoint_inputs, objectives, preflight, validate)
from .config_schema import (ECT_ONLY, FIELD_NAMES, HASH_NEUTRAL, LIST_ITEMS, NOT_HASHED, OWN_SETTINGS, PART_NAME,
                            PER_FLOW_KEY, SECTION_DOCS,
                            SECTION_OF, SECTIONS, Config, _copy, _from_text, _HINTS, _in_hash, _in_section,
                            _unknown, _unknown_section, fields_of, flatten, from_dict, schedule_loss)
from .couplings import REGISTRY as COUPLING_REGISTRY, coupling_settings
from .data import DATASETS, IMAGE_SHAPES, SETTINGS as DATA_SETTINGS, TOYS  # DATASETS, IMAGE_SHAPES, TOYS: older imports
from .evaluation import SETTINGS as EVAL_SETTINGS
from .nets import MODELS, SETTINGS as NETWORK_SETTINGS
from .objectives import loss_settings
from .optim import OPTIMIZERS, SETTINGS as OPTIMIZER_SETTINGS
from .yamlconf import DuplicateKeyError, loads as _yaml, read_yaml as _read_yaml

__all__ = [  # the face: every public name the configuration's users import from here
    "Config", "ConfigError", "DuplicateKeyError", "load_config", "as_config", "from_dict", "flatten", "compose",
    "parse_overrides", "path_value", "config_file", "preset_names", "flow_overlay_names", "flow_overlay",
    "part", "PARTS", "PART_NAME", "OWN_SETTINGS", "config_hash", "identity", "ignored_settings", "pairs_per_rank", "run_dir_for", "validate", "preflight",
    "check_checkpoint_inputs", "objectives", "fields_of", "SECTIONS", "SECTION_OF", "SECTION_DOCS", "FIELD_NAMES",
    "NOT_HASHED", "HASH_NEUTRAL", "ECT_ONLY", "LIST_ITEMS", "PER_FLOW_KEY", "FLOW_MARK", "PRESETS_DIR", "PATH_KEYS",
    "NULL_WORDS", "ARCHITECTURE", "DEVICES", "SCHEDULES", "SEED_MAX", "SEED_RANGE", "RUN_NAME", "MULTINOMIAL_MAX",
    "MAX_PARAMETERS", "MAX_SAMPLE_N", "MAX_EVAL_ELEMENTS", "MAX_EVAL_N", "MAX_EXACT_OT_N", "MAX_LR", "DATASETS",
    "IMAGE_SHAPES", "TOYS", "MODELS", "OPTIMIZERS"]


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
        given, value = item.split("=", 1)
        key = _override_key(given)
        if key in PATH_KEYS:
            out[key] = path_value(key, value)
            continue
        try:
            v = _yaml(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}={value}: the value is not valid YAML ({_yaml_problem(e)}); quote it, or "
                              f"write a list as [a, b]") from None
        out[key] = _from_text(key, v)
        if given.strip() == "loss.name" and out[key] in SCHEDULES:   # --set loss.name=ect: the ect loss
            out.update(schedule_loss(out.pop(key)))
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


# ------------------------------------------------------------------------------------------------ parts
def _settings(section: str, names) -> Callable[[Config], dict]:
    """The builder settings of ``section``: ``name`` (a section with a ``PART_NAME``) and the fields ``names`` (a
    dict: field -> builder keyword)."""
    names = names if isinstance(names, dict) else {k: k for k in names}

    def of(cfg: Config) -> dict:
        named = {"name": getattr(cfg, PART_NAME[section])} if section in PART_NAME else {}
        return {**named, **{kw: _copy(getattr(cfg, k)) for k, kw in names.items()}}
    return of


# The sections whose part is built from its own settings, EDM-style: section -> its builder's settings, each declared
# beside its builder. coupling: ``make_coupling(**part)``; optim: ``make_optimizer(params=..., **part)``; network:
# ``models.build_network(shape, **part)`` (the data's shape; ``build_model`` wraps it with the loss section's sigmas);
# data: ``load_dataset(**part, seed=cfg.seed)``; loss: ``build_loss(**part, coupling=..., predictor=...,
# total_steps=cfg.total_steps)`` (the registered loss's ``config_settings`` and own settings; the parts it takes from
# other sections given explicitly); eval: ``make_evaluation(**part, seed=cfg.seed, sigma_max=cfg.sigma_max)``.
PARTS = {"data": _settings("data", DATA_SETTINGS), "network": _settings("network", NETWORK_SETTINGS),
         "coupling": coupling_settings, "loss": loss_settings, "optim": _settings("optim", OPTIMIZER_SETTINGS),
         "eval": _settings("eval", EVAL_SETTINGS)}


def part(config, section: str) -> dict:
    """The settings the part of ``section`` is built from, EDM-style: ``name`` (its registry entry, ``PART_NAME``) and
    its builder's settings from that section (``PARTS``). ``part(cfg, "coupling")`` is ``{name: flow, mu, ot_solver,
    predict_all, **coupling_options}`` (``make_coupling(**part(cfg, "coupling"))``), ``part(cfg, "optim")``
    ``{name: optimizer, lr, betas, weight_decay, eps}``, ``part(cfg, "data")`` ``{name: dataset, root, download,
    n}``, ``part(cfg, "network")`` ``{name: model, hidden, ..., dropout}``, ``part(cfg, "loss")`` ``{name: ict,
    distance, p_mean, ..., **loss_options}`` (the registered loss's keywords: ``objectives.loss_settings``),
    ``part(cfg, "eval")`` ``{metrics, n, every}`` (``evaluation.SETTINGS``). Another section is one ConfigError."""
    cfg = as_config(config)
    if section not in PARTS:
        raise ConfigError(f"section {section!r} has no part built from its settings alone; those that do: "
                          f"{', '.join(PARTS)}")
    return PARTS[section](cfg)


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
