"""Choosing the device and the autocast precision, for training and inference alike."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from segmentation.errors import UserError

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_CHOICES = ("auto", *AMP_DTYPES)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """ "auto" -> this process's GPU when CUDA works, else the CPU; "cuda" -> cuda:local_rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"device '{name}' asked for, but CUDA is not available: use --device cpu"
            )
        if name == "cuda":
            return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed precision for `amp` ("off", "bf16", "fp16") on the device, or nothing."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def forward_in_range(forward: Callable[[str], torch.Tensor], amp: str) -> tuple[torch.Tensor, bool]:
    """`forward(amp)` -> logits, computed again in float32 where fp16's were not finite.

    float16 ends at 65504: the activations of a network early in training, in evaluation mode
    (BatchNorm's running statistics not settled yet), can pass it, and logits of inf or NaN
    would give a NaN loss and arbitrary classes. Returns (logits, whether they were computed
    again). Under fp16 only, this waits for the device once per call; bf16 has float32's
    range and never needs it.
    """
    logits = forward(amp)
    if amp != "fp16" or bool(torch.isfinite(logits).all()):
        return logits, False
    return forward("off"), True


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether the device computes bf16 in hardware, and why (for logs and benchmarks).

    CUDA: compute capability 8.0 (Ampere) and newer; `torch.cuda.is_bf16_supported()` also
    says yes for older GPUs that only emulate it, slower than float32. CPU: AMX or
    AVX512-BF16 units; without them bf16 is emulated, several times slower than float32.
    """
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        return major >= 8, f"{name}, compute capability {major}.{minor} (bf16 needs 8.0+)"
    if device.type == "cpu":
        amx = torch.cpu._is_amx_tile_supported()
        avx512_bf16 = torch.cpu._is_avx512_bf16_supported()
        units = [name for name, has in (("AMX", amx), ("AVX512-BF16", avx512_bf16)) if has]
        if units:
            return True, f"CPU with {' and '.join(units)}"
        return False, "CPU without AMX or AVX512-BF16"
    return False, f"{device.type} device"


def resolve_amp(amp: str, device: torch.device) -> str:
    """The autocast mode to run: "auto" is bf16 where the device runs it natively, else off."""
    if amp != "auto":
        return amp
    native, _ = native_bf16(device)
    return "bf16" if native else "off"
