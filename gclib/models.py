"""Building a configured model, loading one from a checkpoint or an export, and exporting weights to share.

    model = build_model(cfg, shape)                  # the network of cfg.model wrapped in ConsistencyModel
    model, ema_model, cfg = load_model(path)         # both in eval mode; ema_model is the one to sample from
    export_model("runs/toy_gc-<hash>", "model.safetensors")   # EMA weights + model.json (the composed config)

``load_model`` reads both forms: a training checkpoint (``ckpt-<step>.pt``: model and EMA weights) and an export
(``*.safetensors`` holding the EMA weights, with the run's config as JSON beside it, ``model.json``; both
returned models then hold the EMA weights). An export is what the field shares weights in: safetensors (no
pickle), a config any gclib reads back (``gclib train model.json`` trains the same run, same hash).

Used by the training loop, the ``gclib sample`` / ``gclib evaluate`` / ``gclib export`` commands, frozen GC
predictors and the notebooks. A missing, corrupt or mismatched file raises ``CheckpointError`` naming it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from . import nets
from .checkpoint import CheckpointError, load_checkpoint
from .config import Config, ConfigError, from_dict, part
from .data import REGISTRY
from .precond import ConsistencyModel

# presets: name -> (constructor taking dropout, the image shape it is built for), from the data-set registry: a
# preset is the default model of the data sets of that shape (gclib.data.DataSet.model)
PRESETS = {d.model: (getattr(nets, d.model), tuple(d.shape)) for d in REGISTRY.values()
           if d.is_image and d.model.startswith("unet_") and hasattr(nets, d.model)}


def data_shape(cfg: Config) -> tuple:
    """The shape of one training sample of ``cfg.dataset`` (its registry entry's): (C, H, W) for images, (2,) for
    the 2-D toys (and for a name that is no longer registered, as older checkpoints' toys)."""
    return tuple(REGISTRY[cfg.dataset].shape) if cfg.dataset in REGISTRY else (2,)


def build_model(cfg: Config, shape: Sequence[int]) -> ConsistencyModel:
    """The network of ``cfg``'s network section (``build_network(shape, **part(cfg, "network"))``) for samples of
    ``shape``, wrapped in the consistency parameterisation (its sigmas from the loss section, train_boundary)."""
    net = build_network(shape, **part(cfg, "network"), data=f"dataset={cfg.dataset!r}")
    return ConsistencyModel(net, sigma_min=cfg.sigma_min, sigma_data=cfg.sigma_data, sigma_max=cfg.sigma_max,
                            train_boundary=cfg.train_boundary)


def build_network(shape: Sequence[int], name: str, *, hidden: int = 256, depth: int = 3, emb_dim: int = 64,
                  channels: int = 64, channel_mult=(1, 2), num_blocks: int = 2, attn_resolutions=(),
                  dropout: float = 0.0, data: str = "the data") -> nets.nn.Module:
    """The network ``name`` (``nets.MODELS``) for samples of ``shape`` from its settings (``nets.SETTINGS``, the
    network section): ``build_network(shape, **part(cfg, "network"))``. ``data`` names the samples' source in
    errors."""
    shape = tuple(shape)
    if name == "mlp":
        return nets.MLP(dim=int(np.prod(shape)), hidden=hidden, depth=depth, emb_dim=emb_dim)
    if len(shape) != 3:
        raise ConfigError(f"model={name!r} needs images (C, H, W); {data} gives {shape}")
    if name in PRESETS:
        make, preset_shape = PRESETS[name]
        if shape != preset_shape:
            raise ConfigError(f"model={name!r} is for images of shape {preset_shape}; {data} gives {shape}: use "
                              f"model='unet' with its fields")
        return make(dropout=dropout)
    try:
        return nets.UNet(in_channels=shape[0], resolution=shape[-1], channels=channels,
                         channel_mult=tuple(channel_mult), num_blocks=num_blocks,
                         attn_resolutions=tuple(attn_resolutions), dropout=dropout)
    except ValueError as e:
        raise ConfigError(f"model='unet' with channel_mult={list(channel_mult)}: {e}") from None


def load_weights(module, state: dict, path, what: str) -> None:
    """``module.load_state_dict(state)``, a shape or key mismatch reported as CheckpointError naming the file."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((l.strip() for l in first[1:] if l.strip()), first[0] if first else "")
        raise CheckpointError(f"checkpoint {path}: its {what} weights do not fit the configured model ({detail}); "
                              f"was it written by another model or data set?") from None


def load_model(path, device="cpu"):
    """(model, ema_model, config) from a checkpoint file or an export (``*.safetensors`` with its JSON config
    beside it: both models then hold the exported EMA weights), both models in eval mode on ``device``."""
    if str(path).endswith(EXPORT_SUFFIX):
        state, shape, cfg = _read_export(path)
        states = {"model": state, "EMA": state}
    else:
        ckpt = load_checkpoint(path, map_location="cpu")  # CheckpointError naming a missing, folder or corrupt file
        cfg = _config_of(ckpt["config"], f"checkpoint {path}")
        shape = tuple(ckpt.get("data_shape") or data_shape(cfg))
        states = {"model": ckpt["model"], "EMA": ckpt["ema"]}
    model, ema_model = build_model(cfg, shape), build_model(cfg, shape)
    load_weights(model, states["model"], path, "model")
    load_weights(ema_model, states["EMA"], path, "EMA")
    model.data_shape = ema_model.data_shape = shape
    return model.to(device).eval(), ema_model.to(device).eval().requires_grad_(False), cfg


def _config_of(d, what: str) -> Config:
    try:
        return from_dict(d)
    except ConfigError as e:
        raise CheckpointError(f"{what} holds a configuration this gclib cannot read ({e})") from None


# --------------------------------------------------------------------------------------------- export
EXPORT_SUFFIX = ".safetensors"
EXPORT_FORMAT = "gclib-ema/1"     # the safetensors header's "format": EMA weights of a ConsistencyModel


def config_beside(weights) -> Path:
    """The JSON config that goes with an exported weights file: ``model.safetensors`` -> ``model.json``."""
    return Path(weights).with_suffix(".json")


def checkpoint_of(run_or_ckpt) -> Path:
    """The checkpoint that ``run_or_ckpt`` names: a checkpoint file as given; for a run directory its final
    checkpoint (done.json's), else its newest one. CheckpointError naming the folder when it holds none."""
    from .checkpoint import list_checkpoints
    from .rundir import RunPaths, done_checkpoint, read_json_guarded
    p = Path(run_or_ckpt)
    if not p.is_dir():
        return p                      # load_checkpoint names a missing or unreadable file
    paths = RunPaths(p)
    done = read_json_guarded(paths.done_json) if paths.done_json.is_file() else None
    if done:
        ckpt = done_checkpoint(p, done)
        if ckpt.is_file():
            return ckpt
    found = list_checkpoints(paths.ckpt_dir) if paths.ckpt_dir.is_dir() else []
    if not found:
        raise CheckpointError(f"{p} is a folder without checkpoints (give a run directory, runs/<name>-<hash>, or a "
                              f"checkpoint file, .../checkpoints/ckpt-<step>.pt)")
    return found[0]                   # newest first


def export_model(run_or_ckpt, out) -> tuple[Path, Path]:
    """Write the EMA weights of a run's final checkpoint (or of the checkpoint given) to ``out`` (safetensors; its
    header holds the format, config hash, step and data shape) and the run's composed configuration beside it as
    JSON (``config_beside``). Both files are written atomically; returns their paths."""
    from safetensors.torch import save
    from .config import config_hash
    from .io import atomic_write
    out = Path(out)
    if out.suffix != EXPORT_SUFFIX:
        raise ValueError(f"--out {str(out)!r}: an export is a safetensors file; the name must end with "
                         f"{EXPORT_SUFFIX} (its config goes beside it as JSON)")
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; give a file name ending with {EXPORT_SUFFIX}")
    src = checkpoint_of(run_or_ckpt)
    ckpt = load_checkpoint(src, map_location="cpu")
    cfg = _config_of(ckpt["config"], f"checkpoint {src}")
    shape = tuple(ckpt.get("data_shape") or data_shape(cfg))
    ema = build_model(cfg, shape)
    load_weights(ema, ckpt["ema"], src, "EMA")                     # the weights fit the configured model
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in ema.state_dict().items()}
    meta = {"format": EXPORT_FORMAT, "config_hash": config_hash(cfg), "step": str(int(ckpt["step"])),
            "data_shape": json.dumps(list(shape))}
    data = save(tensors, metadata=meta)
    weights = atomic_write(out, lambda f: f.write(data))
    text = json.dumps(cfg.to_dict(), indent=2) + "\n"
    config = atomic_write(config_beside(out), lambda f: f.write(text), binary=False)
    return weights, config


def _read_export(path):
    """(state dict, data shape, Config) of an export; CheckpointError naming the file for a missing, corrupt or
    foreign file, a missing config or a config of another run."""
    from safetensors import safe_open
    from .config import config_hash
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"exported weights {str(path)!r} do not exist" + (" (it is a folder)" if path.is_dir()
                                                                                 else ""))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors' own errors: a truncated or foreign file
        raise CheckpointError(f"exported weights {path} are corrupt or not a safetensors file "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{path} is not a gclib export (its header's format is {meta.get('format')!r}, "
                              f"expected {EXPORT_FORMAT!r}: write one with gclib export)")
    beside = config_beside(path)
    try:
        d = json.loads(beside.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"the config of {path} is missing: {beside} must lie beside it (gclib export "
                              f"writes both)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"the config {beside} of {path} cannot be read ({e})") from None
    cfg = _config_of(d, f"config file {beside}")
    if config_hash(cfg) != meta.get("config_hash"):
        raise CheckpointError(f"{beside} is not the config of {path}: its hash {config_hash(cfg)} differs from the "
                              f"weights' {meta.get('config_hash')} (export them again together)")
    try:
        shape = tuple(json.loads(meta["data_shape"]))
    except (KeyError, ValueError, TypeError):
        shape = data_shape(cfg)
    return state, shape, cfg
