"""Process-group setup for ``torchrun`` (NCCL on GPUs, gloo on CPU) and small collective helpers.

Without torchrun (no ``WORLD_SIZE`` in the environment) everything degrades to one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from groupdetr.config import ConfigError
from groupdetr.names import DEVICES

__all__ = ["DistInfo", "init_distributed", "resolve_device", "all_gather_objects", "all_reduce_sum", "barrier", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device of config value ``name`` (one of :data:`groupdetr.names.DEVICES`): ``auto`` -> CUDA when
    present, else CPU. Reading a config cannot know the machine, so this is where ``cuda`` without a usable
    GPU is refused: a ConfigError with one line, before anything is built or written."""
    if name not in DEVICES:
        raise ConfigError(f"device: {name!r} is not one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device=cuda but this machine has no usable CUDA GPU (torch {torch.__version__}); "
                              "use device=auto or device=cpu")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(device_name: str) -> DistInfo:
    """Join the torchrun process group if there is one (backend by device), pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank=rank, world_size=world, device=device)


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
