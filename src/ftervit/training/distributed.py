"""torch.distributed helpers: the same commands run single-process or under ``torchrun``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ftervit.device import resolve_device


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: rank, world size and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> DistEnv:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1); pick the device.

    NCCL on GPUs, gloo on CPUs. Each process uses the GPU of its ``LOCAL_RANK``.
    """
    dev = resolve_device(device)
    kind = dev.type
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if kind == "cuda":
        if dev.index is None:  # plain "cuda": the GPU of this process's LOCAL_RANK
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    return DistEnv(rank, world, dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (a one-element list when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over all processes (``values`` itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every process if ``flag`` is true on any (so that all stop together)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor(float(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
