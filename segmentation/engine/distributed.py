"""Process-group setup for DistributedDataParallel, launched by torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from segmentation.devices import resolve_device
from segmentation.errors import UserError


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    # Small host-side agreements (stop now?) go through gloo on CPU tensors: under NCCL they
    # would wait for the GPU's queue of work.
    control_group: object | None = None

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
    if world_size == 1:
        return DistributedContext(rank, world_size, local_rank, device)
    if device.type == "cuda":
        device = _rank_device(device, local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    control = dist.new_group(backend="gloo") if device.type == "cuda" else dist.group.WORLD
    return DistributedContext(rank, world_size, local_rank, device, control)


def _rank_device(device: torch.device, local_rank: int) -> torch.device:
    """Under torchrun each process drives the GPU of its local rank."""
    if device.index is not None and device.index != local_rank:
        raise UserError(
            f"--device {device} under torchrun would put every process on one GPU: use "
            "--device cuda (each process takes the GPU of its LOCAL_RANK), and choose GPUs "
            "with CUDA_VISIBLE_DEVICES"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise UserError(
            f"process of local rank {local_rank} has no GPU: this machine shows {count}; "
            f"start at most {count} processes per node (--nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def any_process(flag: bool, context: DistributedContext) -> bool:
    """True on every process if `flag` is true on any (a stop request, a non-finite loss):
    all processes must call it at the same point of the loop."""
    if not context.enabled or not dist.is_initialized():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=context.control_group)
    return bool(value.item())
