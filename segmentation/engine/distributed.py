"""Process-group setup for DistributedDataParallel, launched by torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from segmentation.devices import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_name: str) -> DistributedContext:
    """Join the process group that torchrun describes in the environment, if there is one.

    NCCL on GPUs, gloo on CPUs. Multi-node runs need nothing more here: torchrun's
    --nnodes/--node_rank/--rdzv_endpoint set the same variables.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, device)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def any_process(flag: torch.Tensor, device: torch.device) -> bool:
    """True on every process if the boolean `flag` is true on any (a stop request, a
    non-finite loss). A host sync: call it only where the loop can afford one."""
    if not dist.is_initialized():
        return bool(flag)
    value = flag.to(device=device, dtype=torch.float32).reshape(1)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
