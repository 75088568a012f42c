"""Building a configured model and loading one from a checkpoint, without the training loop.

    model = build_model(cfg, shape)                  # the network of cfg.model wrapped in ConsistencyModel
    model, ema_model, cfg = load_model(path)         # both in eval mode; ema_model is the one to sample from

Used by the training loop, the ``gclib sample`` / ``gclib evaluate`` commands, frozen GC predictors and the
notebooks. A missing, corrupt or mismatched checkpoint raises ``CheckpointError`` naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from . import nets
from .checkpoint import CheckpointError, load_checkpoint
from .config import Config, ConfigError, from_dict
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
    """The network chosen by ``cfg.model`` for samples of ``shape``, wrapped in the consistency parameterisation."""
    shape = tuple(shape)
    if cfg.model == "mlp":
        net = nets.MLP(dim=int(np.prod(shape)), hidden=cfg.hidden, depth=cfg.depth, emb_dim=cfg.emb_dim)
    else:
        if len(shape) != 3:
            raise ConfigError(f"model={cfg.model!r} needs images (C, H, W); dataset={cfg.dataset!r} gives {shape}")
        if cfg.model in PRESETS:
            make, preset_shape = PRESETS[cfg.model]
            if shape != preset_shape:
                raise ConfigError(f"model={cfg.model!r} is for images of shape {preset_shape}; dataset="
                                  f"{cfg.dataset!r} gives {shape}: use model='unet' with its fields")
            net = make(dropout=cfg.dropout)
        else:
            try:
                net = nets.UNet(in_channels=shape[0], resolution=shape[-1], channels=cfg.channels,
                                channel_mult=tuple(cfg.channel_mult), num_blocks=cfg.num_blocks,
                                attn_resolutions=tuple(cfg.attn_resolutions), dropout=cfg.dropout)
            except ValueError as e:
                raise ConfigError(f"model='unet' with channel_mult={cfg.channel_mult}: {e}") from None
    return ConsistencyModel(net, sigma_min=cfg.sigma_min, sigma_data=cfg.sigma_data, sigma_max=cfg.sigma_max,
                            train_boundary=cfg.train_boundary)


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
    """(model, ema_model, config) from a checkpoint file, both models in eval mode on ``device``."""
    ckpt = load_checkpoint(path, map_location="cpu")  # CheckpointError naming a missing, folder or corrupt file
    try:
        cfg = from_dict(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {path} holds a configuration this gclib cannot read ({e})") from None
    shape = tuple(ckpt.get("data_shape") or data_shape(cfg))
    model, ema_model = build_model(cfg, shape), build_model(cfg, shape)
    load_weights(model, ckpt["model"], path, "model")
    load_weights(ema_model, ckpt["ema"], path, "EMA")
    model.data_shape = ema_model.data_shape = shape
    return model.to(device).eval(), ema_model.to(device).eval().requires_grad_(False), cfg
