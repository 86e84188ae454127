"""train.py under torchrun with every rank on the one GPU, through gloo: DDP on a 1-GPU box.

    torchrun --standalone --nproc_per_node=2 tests/gpu/ddp_shared_gpu.py --config ... --device cuda

Only for test_gpu_distributed.py on a machine with a single GPU (the repository root on
PYTHONPATH). train.py itself gives each rank the GPU of its LOCAL_RANK and refuses a rank
without one, and NCCL refuses two ranks on one device; so here every rank is told it is local
rank 0 and the process group is gloo. The rest is
train.py's own CUDA path: DDP with device_ids, CUDA tensors in all_reduce and broadcast, the
ranks' stop agreement over the gloo control group, rank 0 alone saving. NCCL itself is not
exercised: that needs two GPUs (the test then runs plain torchrun on train.py).
"""

from __future__ import annotations

import os
import sys

import torch.distributed as dist

_init_process_group = dist.init_process_group


def _gloo_process_group(*args: object, **kwargs: object) -> object:
    kwargs["backend"] = "gloo"
    return _init_process_group(*args, **kwargs)


def main() -> int:
    rank = os.environ.get("RANK", "0")
    os.environ["LOCAL_RANK"] = "0"  # every rank on cuda:0
    dist.init_process_group = _gloo_process_group
    print(f"[ddp_shared_gpu rank {rank}] cuda:0 shared, process group forced to gloo", flush=True)
    import train

    return train.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
