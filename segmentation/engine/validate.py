"""Checks of a configuration's values that its types alone cannot express."""

from __future__ import annotations

import torch

from segmentation.config import Config
from segmentation.errors import UserError

AMP_MODES = ("off", "bf16", "fp16")
KEY_METRICS = ("mIoU", "mDice", "pixel_accuracy")


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise UserError(f"{key} '{value}' is not valid: use one of {', '.join(valid)}")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"{key} must be positive, got {value}")


def validate_config(config: Config) -> None:
    train, data = config.train, config.data
    _choice("train.amp", train.amp, AMP_MODES)
    _choice("train.key_metric", train.key_metric, KEY_METRICS)
    for key, value in [
        ("train.epochs", train.epochs),
        ("train.batch_size", train.batch_size),
        ("train.accumulate", train.accumulate),
        ("train.log_every", train.log_every),
        ("optim.lr", config.optim.lr),
        ("data.image_size height", data.image_size[0]),
        ("data.image_size width", data.image_size[1]),
    ]:
        _positive(key, value)
    if data.workers < 0:
        raise UserError(f"data.workers must be 0 or more, got {data.workers}")
    if train.amp == "fp16" and not (
        train.device.startswith("cuda") or (train.device == "auto" and torch.cuda.is_available())
    ):
        raise UserError("--amp fp16 needs a CUDA GPU: use --amp bf16 on the CPU, or --amp off")
    if train.grad_clip is not None and train.grad_clip <= 0:
        raise UserError(f"train.grad_clip must be positive or null, got {train.grad_clip}")
