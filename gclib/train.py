"""The training loop: optimiser, EMA, iCT curriculum, flows, checkpoints with exact resume, logs, DDP.

Python API (what notebooks call):
    result = train(config, eval_fns=(), data=None)   # config: Config, dict or YAML path -> TrainResult
    model, ema_model, cfg = load_model(result.checkpoint)
    config_hash(config), run_dir_for(config)           # from gclib.config

Run directory ``<runs_dir>/<name>-<config_hash>`` (or ``run_dir``): ``config.yaml``, ``metrics.csv`` (one row per
step: step, loss, num_points, lr, gc_fraction, seconds, samples_per_s[, ot_batch]), ``eval.csv`` (one row per
evaluation), ``checkpoints/ckpt-<step>.pt``, ``samples/step-<step>.png``, and ``done.json`` once finished.
``train`` returns at once (``skipped=True``) when ``done.json`` says a run with the same hash finished.

Exactness: each step draws its batch from a ``BatchIterator`` whose state is the number of batches drawn, and its
noise, intervals and GC mask each from its own stream (``gclib.rng.Streams``: runs that differ only in the flow or
mu see the same data, z and intervals at one seed); dropout uses the global torch RNG. Checkpoints hold all of
them (plus numpy/python RNG), so a killed-and-resumed CPU run is bit-identical to an uninterrupted one; metrics rows
past the resumed checkpoint are dropped from the CSV first. Evaluation and sample grids run under ``preserve_rng``.

DDP (``torchrun --nproc_per_node=N -m gclib train CONFIG``): ``batch_size`` is the global batch, split evenly; each
rank draws its own noise (seed + rank) and its shard of each global batch; gradients are averaged by DDP; logged
losses are averaged over ranks; rank 0 writes logs and checkpoints (which hold every rank's RNG state). The OT flow
matches per rank (OT batch = batch_size / N, logged as ``ot_batch``). The GC predictor is the unwrapped EMA model.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import yaml

from . import nets
from .checkpoint import (atomic_save, ckpt_path, load_checkpoint, newest_valid, preserve_rng, rng_state, rotate,
                         set_rng_state)
from .config import Config, ConfigError, as_config, config_hash, from_dict, run_dir_for
from .data import IMAGE_SHAPES, BatchIterator, load_dataset
from .ema import EMA
from .optim import make_optimizer
from .precond import ConsistencyModel
from .rng import Streams
from .schedules import karras_sigmas, num_points
from .step import NonFiniteLossError, train_step

METRIC_COLUMNS = ("step", "loss", "num_points", "lr", "gc_fraction", "seconds", "samples_per_s")
EvalFn = Callable[[int, torch.nn.Module], dict]


@dataclass
class TrainResult:
    """Where a run's outputs are. ``checkpoint`` is the final checkpoint (load it with ``load_model``)."""
    run_dir: Path
    step: int
    checkpoint: Path | None
    metrics_csv: Path
    eval_csv: Path
    config: Config
    skipped: bool = False
    extra: dict = field(default_factory=dict)

    def load(self, device="cpu"):
        """(model, ema_model, config) of the final checkpoint."""
        return load_model(self.checkpoint, device)


# --------------------------------------------------------------------------------------------- model, data
def data_shape(cfg: Config) -> tuple:
    return IMAGE_SHAPES.get(cfg.dataset, (2,))


def build_model(cfg: Config, shape: Sequence[int]) -> ConsistencyModel:
    """The network chosen by ``cfg.model`` for samples of ``shape``, wrapped in the consistency parameterisation."""
    shape = tuple(shape)
    if cfg.model == "mlp":
        net = nets.MLP(dim=int(np.prod(shape)), hidden=cfg.hidden, depth=cfg.depth, emb_dim=cfg.emb_dim)
    else:
        if len(shape) != 3:
            raise ConfigError(f"model={cfg.model!r} needs images (C, H, W); dataset={cfg.dataset!r} gives {shape}")
        presets = {"unet_digits": (1, 8, 8), "unet_cifar10": (3, 32, 32)}
        if cfg.model in presets and shape != presets[cfg.model]:
            raise ConfigError(f"model={cfg.model!r} is for images of shape {presets[cfg.model]}; dataset="
                              f"{cfg.dataset!r} gives {shape}: use model='unet' with its fields")
        if cfg.model == "unet_digits":
            net = nets.unet_digits(dropout=cfg.dropout)
        elif cfg.model == "unet_cifar10":
            net = nets.unet_cifar10(dropout=cfg.dropout)
        else:
            try:
                net = nets.UNet(in_channels=shape[0], resolution=shape[-1], channels=cfg.channels,
                                channel_mult=tuple(cfg.channel_mult), num_blocks=cfg.num_blocks,
                                attn_resolutions=tuple(cfg.attn_resolutions), dropout=cfg.dropout)
            except ValueError as e:
                raise ConfigError(f"model='unet' with channel_mult={cfg.channel_mult}: {e}") from None
    return ConsistencyModel(net, sigma_min=cfg.sigma_min, sigma_data=cfg.sigma_data, sigma_max=cfg.sigma_max)


def load_model(path, device="cpu"):
    """(model, ema_model, config) from a checkpoint file, both models in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    ckpt = load_checkpoint(path, map_location="cpu")
    cfg = from_dict(ckpt["config"])
    shape = tuple(ckpt.get("data_shape") or data_shape(cfg))
    model, ema_model = build_model(cfg, shape), build_model(cfg, shape)
    model.load_state_dict(ckpt["model"])
    ema_model.load_state_dict(ckpt["ema"])
    model.data_shape = ema_model.data_shape = shape
    return model.to(device).eval(), ema_model.to(device).eval().requires_grad_(False), cfg


# --------------------------------------------------------------------------------------------- distributed
@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(cfg: Config) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but CUDA is not available; allowed values here: 'auto', 'cpu'")
    if world <= 1:
        return _Dist(), torch.device("cuda" if want_cuda else "cpu")
    import torch.distributed as dist
    d = _Dist(rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    if want_cuda:
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
        d.initialised_here = True
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size={cfg.batch_size} must be divisible by the number of processes ({world})")
    return d, device


def _all_mean(values: list[float], d: _Dist, device) -> list[float]:
    if d.world_size == 1:
        return values
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / d.world_size).tolist()


def _gather(obj, d: _Dist) -> list:
    if d.world_size == 1:
        return [obj]
    import torch.distributed as dist
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def _barrier(d: _Dist):
    if d.world_size > 1:
        import torch.distributed as dist
        dist.barrier()


# --------------------------------------------------------------------------------------------- logging
def _rewrite_csv_upto(path: Path, step: int) -> None:
    """Keep the header and the rows with step <= ``step`` (rows logged after the checkpoint are replayed)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and int(float(r[0])) <= step]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, path)


def _fmt(v):
    return repr(float(v)) if isinstance(v, float) else v


def _write_eval(path: Path, rows: list[dict]) -> None:
    keys = ["step"] + sorted({k for r in rows for k in r} - {"step"})
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
    os.replace(tmp, path)


def _read_eval(path: Path, step: int) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if k != "step" else int(v)) for k, v in r.items() if v != ""}
                for r in csv.DictReader(f) if int(r["step"]) <= step]


def save_samples(samples: torch.Tensor, path, data_ref: torch.Tensor | None = None) -> Path:
    """PNG of samples: an image grid for (B, C, H, W) in [-1, 1], a scatter plot for 2-D points."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = samples.detach().float().cpu()
    if samples.ndim == 4:
        from torchvision.utils import save_image
        save_image(((samples.clamp(-1, 1) + 1) / 2), str(path), nrow=max(1, int(math.ceil(math.sqrt(len(samples))))))
        return path
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4, 4))
    if data_ref is not None and data_ref.shape[-1] == 2:
        ax.scatter(*data_ref[:2000].float().T.numpy(), s=2, c="0.7", label="data")
    pts = samples.reshape(len(samples), -1)
    if pts.shape[1] >= 2:
        ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=3, c="C0", label="samples")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- train
def _gpu_flags(cfg: Config, device: torch.device) -> dict:
    flags = {"bf16": cfg.bf16, "channels_last": cfg.channels_last, "compile": cfg.compile}
    if device.type != "cuda":
        for k, v in flags.items():
            if v:
                warnings.warn(f"{k}=true is a CUDA speed option; ignored on device {device.type!r}", RuntimeWarning,
                              stacklevel=3)
        return {k: False for k in flags}
    if cfg.channels_last and cfg.model == "mlp":
        warnings.warn("channels_last=true has no effect with model='mlp'; ignored", RuntimeWarning, stacklevel=3)
        flags["channels_last"] = False
    return flags


def _resolve_predictor(cfg: Config, raw_model, device):
    if cfg.predictor == "ema":
        return "ema"
    if cfg.predictor == "online":
        return raw_model  # unwrapped: a no-grad forward outside DDP's bookkeeping
    p = Path(cfg.predictor)
    if not p.is_file():
        raise ConfigError(f"predictor={cfg.predictor!r}: the frozen predictor's checkpoint file does not exist")
    _, frozen, _ = load_model(p, device)
    return frozen


def train(config, eval_fns: Sequence[EvalFn] = (), data: torch.Tensor | None = None) -> TrainResult:
    """Train a consistency model as configured; returns a ``TrainResult``.

    config: a ``Config``, a dict of its fields or a YAML path. eval_fns: callables ``fn(step, ema_model) -> dict``
    run every ``eval_every`` steps and at the end (rank 0), rows appended to eval.csv with the built-in
    ``eval_metrics``. data: an optional training set tensor (N, ...) replacing ``dataset`` (float32 in the model's
    scale, or uint8 images); it is not part of the config hash, so give such runs their own ``run_dir`` or name.
    Raises NonFiniteLossError naming the step if the loss becomes NaN/inf (the checkpoints already written stay).
    """
    cfg = as_config(config)
    chash = config_hash(cfg)
    run_dir = run_dir_for(cfg)
    ckpt_dir = run_dir / "checkpoints"
    metrics_csv, eval_csv, done_json = run_dir / "metrics.csv", run_dir / "eval.csv", run_dir / "done.json"

    if done_json.exists() and cfg.resume:
        done = json.loads(done_json.read_text())
        final = Path(done.get("checkpoint", ""))
        if done.get("config_hash") == chash and done.get("step") == cfg.total_steps and final.is_file():
            return TrainResult(run_dir, cfg.total_steps, final, metrics_csv, eval_csv, cfg, skipped=True)

    d, device = _setup_distributed(cfg)
    try:
        return _train(cfg, chash, run_dir, ckpt_dir, metrics_csv, eval_csv, done_json, d, device, eval_fns, data)
    finally:
        if d.initialised_here:
            import torch.distributed as dist
            dist.destroy_process_group()


def _train(cfg, chash, run_dir, ckpt_dir, metrics_csv, eval_csv, done_json, d, device, eval_fns, data):
    flags = _gpu_flags(cfg, device)
    if data is None:
        data = load_dataset(cfg.dataset, root=cfg.data_root, download=cfg.download and d.main, n=cfg.num_data,
                            seed=cfg.seed)
        if cfg.download and d.world_size > 1:
            _barrier(d)
            if not d.main:
                data = load_dataset(cfg.dataset, root=cfg.data_root, n=cfg.num_data, seed=cfg.seed)
    shape = tuple(data.shape[1:])

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    raw_model = build_model(cfg, shape).to(device)
    if flags["channels_last"]:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    ema = EMA(raw_model, every=cfg.ema_every, max_decay=cfg.ema_decay)
    optimizer = make_optimizer(cfg.optimizer, raw_model.parameters(), cfg.lr, cfg.betas, cfg.weight_decay, cfg.eps)
    predictor = _resolve_predictor(cfg, raw_model, device)

    per_rank_batch = cfg.batch_size // d.world_size
    batches = BatchIterator(data, per_rank_batch, seed=cfg.seed, rank=d.rank, world_size=d.world_size)
    rank_seed = cfg.seed + 100_003 * d.rank
    torch.manual_seed(rank_seed)
    np.random.seed(rank_seed % 2 ** 32)
    random.seed(rank_seed)
    generator = Streams.from_seed(rank_seed)  # CPU: noise, intervals, GC mask, each its own stream

    start, elapsed, last_ckpt = 0, 0.0, None
    if cfg.resume:
        last_ckpt, ckpt = newest_valid(ckpt_dir)
        if ckpt is not None:
            if ckpt.get("config_hash") != chash:
                warnings.warn(f"checkpoint {last_ckpt} was written by a run with another configuration hash "
                              f"({ckpt.get('config_hash')} != {chash}); resuming from it anyway", RuntimeWarning)
            raw_model.load_state_dict(ckpt["model"])
            ema.load_state_dict(ckpt["ema"])
            optimizer.load_state_dict(ckpt["optimizer"])
            batches.load_state_dict(ckpt["data"])
            states = ckpt["rng"]
            if len(states) == d.world_size:
                set_rng_state(states[d.rank], generator, device)
            else:
                warnings.warn(f"checkpoint {last_ckpt} holds RNG states of {len(states)} processes, this run has "
                              f"{d.world_size}: continuing with fresh per-rank seeds (not bit-identical)", RuntimeWarning)
                generator = Streams.from_seed(rank_seed + 1 + int(ckpt["step"]))
            start, elapsed = int(ckpt["step"]), float(ckpt.get("elapsed", 0.0))
        else:
            last_ckpt = None

    model = raw_model
    if d.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    if flags["compile"]:
        model = torch.compile(model)

    columns = list(METRIC_COLUMNS) + (["ot_batch"] if cfg.flow == "ot" else [])
    eval_rows = []
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump({**cfg.to_dict(), "config_hash": chash}, sort_keys=False))
        if start > 0 and metrics_csv.exists():
            _rewrite_csv_upto(metrics_csv, start)
            eval_rows = _read_eval(eval_csv, start)
        else:
            with open(metrics_csv, "w", newline="") as f:
                csv.writer(f).writerow(columns)
            eval_csv.unlink(missing_ok=True)

    def checkpoint(step: int) -> Path | None:
        states = _gather(rng_state(generator, device), d)
        path = None
        if d.main:
            path = atomic_save({
                "step": step, "model": raw_model.state_dict(), "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(), "rng": states, "data": batches.state_dict(),
                "config": cfg.to_dict(), "config_hash": chash, "world_size": d.world_size,
                "data_shape": list(shape), "elapsed": elapsed, "format": 1,
            }, ckpt_path(ckpt_dir, step))
            rotate(ckpt_dir, cfg.keep_checkpoints)
        _barrier(d)
        return path if d.main else ckpt_path(ckpt_dir, step)

    fixed_noise = None

    def side_tasks(step: int, final: bool):
        nonlocal fixed_noise
        do_eval = (eval_fns or cfg.eval_metrics) and ((cfg.eval_every and step % cfg.eval_every == 0) or final)
        do_samples = (cfg.sample_every and step % cfg.sample_every == 0) or final
        if not d.main or not (do_eval or do_samples):
            return
        with preserve_rng(device):
            if do_samples:
                if fixed_noise is None:
                    g = torch.Generator().manual_seed(cfg.seed + 7)
                    fixed_noise = torch.randn((cfg.sample_n, *shape), generator=g).to(device)
                with torch.no_grad():
                    x = ema.model(cfg.sigma_max * fixed_noise, cfg.sigma_max)
                save_samples(x, run_dir / "samples" / f"step-{step:08d}.png", data if len(shape) == 1 else None)
            if do_eval:
                row = {"step": step}
                if cfg.eval_metrics:
                    from .evaluation import evaluate_model
                    row.update(evaluate_model(ema.model, data, cfg.eval_metrics, n=cfg.eval_n, seed=cfg.seed,
                                              sigma_max=cfg.sigma_max))
                for fn in eval_fns:
                    out = fn(step, ema.model)
                    if not isinstance(out, dict):
                        raise TypeError(f"eval function {fn!r} returned {type(out).__name__}; it must return a dict")
                    row.update({k: float(v) for k, v in out.items()})
                eval_rows.append(row)
                _write_eval(eval_csv, eval_rows)

    show = cfg.progress if isinstance(cfg.progress, bool) else sys.stderr.isatty()
    from tqdm import tqdm
    bar = tqdm(total=cfg.total_steps, initial=start, disable=not (show and d.main), desc=cfg.name, dynamic_ncols=True)
    sigma_cache: dict[int, torch.Tensor] = {}
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if flags["bf16"] else contextlib.nullcontext())
    log = open(metrics_csv, "a", newline="") if d.main else None
    writer = csv.writer(log) if log else None
    step = start
    try:
        for step in range(start + 1, cfg.total_steps + 1):
            k = step - 1
            n = num_points(k, cfg.total_steps, cfg.s0, cfg.s1)
            if n not in sigma_cache:
                sigma_cache[n] = karras_sigmas(n, cfg.sigma_min, cfg.sigma_max, cfg.rho)
            x = next(batches).to(device, non_blocking=True)
            if flags["channels_last"] and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            t0 = time.perf_counter()
            try:
                with autocast:
                    res = train_step(model, optimizer, x, sigma_cache[n], step=k, ema=ema, flow=cfg.flow, mu=cfg.mu,
                                     predictor=predictor, distance=cfg.distance, generator=generator,
                                     ot_solver=cfg.ot_solver, predict_all=cfg.predict_all, p_mean=cfg.p_mean,
                                     p_std=cfg.p_std)
            except NonFiniteLossError as e:
                kept = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                raise NonFiniteLossError(f"non-finite loss at step {step} of run {run_dir}: training stopped "
                                         f"({e}); {kept}") from e
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            elapsed += dt
            loss, gc_frac = _all_mean([res.loss, res.gc_fraction], d, device)
            if writer:
                row = [step, repr(loss), n, repr(float(optimizer.param_groups[0]["lr"])), repr(gc_frac),
                       f"{elapsed:.4f}", f"{cfg.batch_size / max(dt, 1e-9):.1f}"]
                if cfg.flow == "ot":
                    row.append(per_rank_batch)
                writer.writerow(row)
                log.flush()
            bar.update(1)
            if bar.n % 10 == 0 or step == cfg.total_steps:
                bar.set_postfix(loss=f"{loss:.4g}", N=n)
            final = step == cfg.total_steps
            if final or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                last_ckpt = checkpoint(step)
            side_tasks(step, final)
    finally:
        bar.close()
        if log:
            log.close()

    if start == cfg.total_steps and last_ckpt is None:
        last_ckpt = checkpoint(step)
    final_ckpt = ckpt_path(ckpt_dir, cfg.total_steps)
    checksums = _gather(float(sum(p.detach().double().sum().item() for p in raw_model.parameters())), d)
    if d.main:
        done_json.write_text(json.dumps({"config_hash": chash, "step": cfg.total_steps, "checkpoint": str(final_ckpt),
                                         "world_size": d.world_size, "param_checksums": checksums,
                                         "seconds": elapsed}, indent=1))
    _barrier(d)
    return TrainResult(run_dir, cfg.total_steps, final_ckpt, metrics_csv, eval_csv, cfg,
                       extra={"world_size": d.world_size, "param_checksums": checksums})
