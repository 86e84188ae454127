"""Choosing the device and the autocast precision, for training and inference alike."""

from __future__ import annotations

import contextlib

import torch

from segmentation.errors import UserError

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
