"""train.py under torchrun: two DDP ranks (NCCL on two GPUs; on one GPU both ranks share it
through gloo; gloo on the CPU), and one process more than the GPUs refused in one line."""

from __future__ import annotations

import pytest
import torch
from gpu_runs import PYTHON, epochs_logged, train_arguments

from segmentation.checkpoint import load_checkpoint

pytestmark = pytest.mark.gpu

TORCHRUN = (PYTHON, "-m", "torch.distributed.run", "--standalone")


@pytest.mark.gpu(seconds=60, quick=False)
def test_ddp_with_two_ranks(cityscapes_root, device, script, work, record_property):
    """Accumulation (no_sync), a frozen encoder that thaws in the second epoch
    (find_unused_parameters), the ranks' stop agreement, rank 0 alone saving: batches of 2 of
    the 15 training images over 2 ranks, accumulate=2: 2 optimizer steps an epoch."""
    nccl = device == "cuda" and torch.cuda.device_count() >= 2
    if device == "cpu":
        mode, entry = "gloo on the CPU", "train.py"
    elif nccl:
        mode, entry = "NCCL, ranks on cuda:0 and cuda:1, SyncBatchNorm", "train.py"
    else:
        mode = "1 GPU: both ranks on cuda:0 through gloo (NCCL needs 2 GPUs)"
        entry = "tests/gpu/ddp_shared_gpu.py"
    run_dir = work / "runs" / "ddp"
    arguments = train_arguments(
        cityscapes_root, run_dir, device, "--epochs", "2", "--batch-size", "2", "--amp", "bf16",
        *("--set", "train.accumulate=2", "--set", "train.freeze_encoder_iters=3"),
        *(("--set", "model.sync_batchnorm=true") if nccl else ()),
    )  # fmt: skip
    script("ddp", [*TORCHRUN, "--nproc_per_node=2", entry, *arguments], timeout=360).wait()
    seen = epochs_logged(run_dir, 2)
    step = load_checkpoint(run_dir / "last.pt")["state"]["step"]
    assert step > 3, f"{step} optimizer steps: the encoder (frozen for 3) never thawed"
    record_property("detail", f"{seen}; {step} steps; {mode}")


@pytest.mark.gpu(seconds=30, quick=False)
def test_more_processes_than_gpus_are_refused_in_one_line(
    cityscapes_root, device, script, work, record_property
):
    """Not "invalid device ordinal", not NCCL's "duplicate GPU": the extra rank says it has no
    GPU, and no traceback goes through the project's code (torchrun prints its own)."""
    if device != "cuda":
        pytest.skip("about ranks and GPUs: needs CUDA")
    ranks = torch.cuda.device_count() + 1
    arguments = train_arguments(cityscapes_root, work / "runs" / "ranks", device, "--epochs", "1")
    run = script(
        "ranks_over_gpus", [*TORCHRUN, f"--nproc_per_node={ranks}", "train.py", *arguments]
    )
    output = run.wait(expect_success=False)
    said = next((line.strip() for line in output.splitlines() if "has no GPU" in line), None)
    ours = [line for line in output.splitlines() if 'File "' in line and "/segmentation/" in line]
    assert run.process.returncode != 0, f"{ranks} processes on {ranks - 1} GPU(s) ran"
    assert said, f"no line says a rank has no GPU (log {run.log})"
    assert not ours, f"a traceback through {ours[0].strip()}"
    record_property("detail", f"exit {run.process.returncode}: {said[:200]}")
