"""train.py on the GPU: what the machine is, bf16 and fp16 training and resume (the GradScaler
and the CUDA RNG state in the checkpoint), SGD under fp16."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from gpu_runs import PYTHON, epochs_logged

from segmentation.checkpoint import load_checkpoint

pytestmark = pytest.mark.gpu


def test_environment(device, out, record_property):
    """The versions and the GPU (one line of the summary), and a finite matrix product."""
    said = f"torch {torch.__version__}, CUDA build {torch.version.cuda}"
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        try:
            nccl = ".".join(str(v) for v in torch.cuda.nccl.version())
        except Exception as error:  # a build without NCCL: DDP on 2 GPUs then fails, not this
            nccl = f"unavailable ({error!r})"
        said = (
            f"{torch.cuda.get_device_name(0)}, capability {props.major}.{props.minor}, "
            f"{props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} GPU(s); "
            f"cuDNN {torch.backends.cudnn.version()}, NCCL {nccl}, "
            f"bf16 {torch.cuda.is_bf16_supported()}; {said}"
        )
        if shutil.which("nvidia-smi"):
            result = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False)
            (out / "nvidia-smi.txt").write_text(result.stdout + result.stderr)
    else:
        said = f"no CUDA: on the CPU (SEGMENTATION_GPU_TESTS_ON_CPU=1); {said}"
    record_property("detail", said)
    x = torch.randn(256, 256, device=device)
    assert torch.isfinite(x @ x).all(), f"a matrix product on {device} is not finite"


def test_bf16_training(bf16_run, record_property):
    record_property("detail", epochs_logged(bf16_run, 2, "best.pt"))


def largest_weight_gap(first: dict, second: dict) -> tuple[int, float, str]:
    """(tensors that differ, the largest gap relative to its tensor's largest value, where)."""
    unequal, worst, worst_key = 0, 0.0, ""
    for key, tensor in first.items():
        other = second[key]
        if torch.equal(tensor, other):
            continue
        unequal += 1
        if tensor.is_floating_point():
            # Relative: BatchNorm's running variances reach thousands in an untrained
            # network, where an absolute gap says nothing.
            gap = (tensor.float() - other.float()).abs().max()
            relative = (gap / tensor.float().abs().max().clamp_min(1e-12)).item()
            if relative > worst:
                worst, worst_key = relative, key
    return unequal, worst, worst_key


def test_bf16_resume_continues_the_run(bf16_part_run, bf16_run, script, device, record_property):
    """The second epoch from the first one's checkpoint: on the CPU the same weights as the
    straight run (a guarantee); on a GPU close, reported (cudnn.benchmark picks kernels by
    timing)."""
    last = bf16_part_run / "last.pt"
    script("resume_bf16", [PYTHON, "train.py", "--resume", str(last), "--epochs", "2"]).wait()
    seen = epochs_logged(bf16_part_run, 2)
    straight, resumed = load_checkpoint(bf16_run / "last.pt"), load_checkpoint(last)
    unequal, worst, where = largest_weight_gap(straight["model"], resumed["model"])
    steps = straight["state"]["step"], resumed["state"]["step"]
    record_property(
        "detail",
        f"{seen}; {unequal} of {len(straight['model'])} weight tensors differ from the straight "
        f"run's, largest gap {worst:.2%} ({where or 'none'}); steps {steps[0]} and {steps[1]}",
    )
    assert steps[0] == steps[1]
    if device == "cpu":
        assert unequal == 0, f"the resumed run's weights differ from the straight run's ({where})"


def test_fp16_training_keeps_the_scaler_and_the_cuda_rng(fp16_run, record_property):
    seen = epochs_logged(fp16_run, 2)
    state = load_checkpoint(fp16_run / "last.pt")
    scaler, rng = state.get("scaler") or {}, state.get("rng") or {}
    assert scaler.get("scale", 0) > 0, f"no GradScaler state with a positive scale: {scaler}"
    assert "cuda" in rng, f"no CUDA RNG state in the checkpoint (only {sorted(rng)})"
    step = state["state"]["step"]
    assert step > 2, f"{step} optimizer steps: the encoder (frozen for 2) never trained"
    record_property(
        "detail",
        f"{seen}; {step} steps; GradScaler scale {scaler['scale']:g}, growth tracker "
        f"{scaler.get('_growth_tracker')}, CUDA RNG state saved",
    )


def test_fp16_resume(fp16_run, work, script, record_property):
    """A third epoch from the fp16 run's checkpoint (in a copy: the run stays as it was)."""
    copy = work / "runs" / "fp16_resumed"
    shutil.copytree(fp16_run, copy)
    command = [PYTHON, "train.py", "--resume", str(copy / "last.pt"), "--epochs", "3"]
    script("resume_fp16", command).wait()
    record_property("detail", epochs_logged(copy, 3))


@pytest.mark.gpu(quick=False)
def test_sgd_under_fp16(sgd_fp16_run, record_property):
    record_property("detail", epochs_logged(sgd_fp16_run, 1))
