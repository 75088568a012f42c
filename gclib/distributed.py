"""Distributed set-up for ``torchrun`` (one process per GPU, or gloo on CPU) and the few collectives the
training loop needs. Single-process runs use the same calls, which then do nothing."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .config import Config, ConfigError
from .device import resolve_device


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_size() -> int:
    """The number of processes torchrun started (WORLD_SIZE; 1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} is not a number of processes") from None


def setup(cfg: Config) -> tuple[Dist, torch.device]:
    """(Dist, device) from torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK) and ``cfg.device``."""
    world = world_size()
    want_cuda = resolve_device(cfg.device, error=ConfigError) == "cuda"
    if world <= 1:
        return Dist(), torch.device("cuda" if want_cuda else "cpu")
    import torch.distributed as dist
    d = Dist(rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size={cfg.batch_size} must be divisible by the number of processes ({world})")
    if want_cuda:
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
        d.initialised_here = True
    return d, device


def teardown(d: Dist) -> None:
    if d.initialised_here:
        import torch.distributed as dist
        dist.destroy_process_group()


def all_mean(values: list[float], d: Dist, device) -> list[float]:
    """The mean over ranks of each value (float64)."""
    if d.world_size == 1:
        return values
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / d.world_size).tolist()


def all_max(value: float, d: Dist, device) -> float:
    """The largest ``value`` over ranks (float64)."""
    if d.world_size == 1:
        return value
    import torch.distributed as dist
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def gather(obj, d: Dist) -> list:
    """Every rank's ``obj``, in rank order."""
    if d.world_size == 1:
        return [obj]
    import torch.distributed as dist
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj, d: Dist):
    """Rank 0's ``obj`` on every rank."""
    if d.world_size == 1:
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.world_size > 1:
        import torch.distributed as dist
        dist.barrier()
