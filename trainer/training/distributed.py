"""Process context: single process (CPU or one GPU) or PyTorch DDP under ``torchrun``.

``torchrun --nproc_per_node=N -m trainer.cli.train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; the same
command without torchrun runs single-process. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessContext:
    """Where this process runs.

    Attributes:
        rank, world_size, local_rank: DDP coordinates (0, 1, 0 single-process).
        device: the torch device this process trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this rank's GPU) if available else CPU; ``cuda`` -> this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"run.device={name} asked for CUDA, but torch sees no CUDA device")
    return device


def init_process(device_name: str) -> ProcessContext:
    """Read torchrun's environment, join the process group if there is one, pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ProcessContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def barrier(ctx: ProcessContext) -> None:
    if ctx.distributed:
        dist.barrier()


def mean_over_ranks(values: dict[str, float], ctx: ProcessContext) -> dict[str, float]:
    """Average scalar metrics across ranks (identity when single-process)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    tensor /= ctx.world_size
    return dict(zip(keys, tensor.tolist(), strict=True))


def shutdown(ctx: ProcessContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
