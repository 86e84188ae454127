"""Optimizers and learning-rate schedules, by name."""

from __future__ import annotations

import math

import torch
from torch import nn

from segmentation.config import OPTIMIZERS, SCHEDULERS, OptimConfig
from segmentation.errors import UserError


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """Adam (the original project's), AdamW or SGD with momentum over all parameters.

    Frozen parameters (requires_grad False while the encoder warms up) stay in the optimizer:
    they get no gradient, so it leaves them alone until they are unfrozen.
    """
    parameters = list(model.parameters())
    # Fused kernels: one pass over all parameters instead of a loop over tensors, on CUDA and
    # on the CPU alike (bench/bench_train_step.py measures the difference).
    fused = all(parameter.device.type in ("cuda", "cpu") for parameter in parameters)
    if config.optimizer == "adam":
        return torch.optim.Adam(
            parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused
        )
    if config.optimizer == "sgd":
        # Fused too: it also spares GradScaler the per-step host read that unfused optimizers
        # need to skip a step with inf/NaN gradients under fp16.
        return torch.optim.SGD(
            parameters,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            fused=fused,
        )
    raise UserError(f"unknown optimizer '{config.optimizer}': use one of {', '.join(OPTIMIZERS)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, total_iters: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """ "plateau" (the original project's: divide the rate when the validation loss stalls,
    stepped once an epoch) or a per-iteration schedule: "poly", "cosine" or constant "none",
    each after an optional linear warmup over `warmup_iters`."""
    if config.scheduler not in SCHEDULERS:
        raise UserError(
            f"unknown scheduler '{config.scheduler}': use one of {', '.join(SCHEDULERS)}"
        )
    if config.scheduler == "plateau":
        if config.warmup_iters:
            raise UserError(
                "optim.warmup_iters works with the poly, cosine and none schedulers, not plateau"
            )
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=config.plateau_factor,
            patience=config.plateau_patience,
            min_lr=config.min_lr,
        )
    warmup = config.warmup_iters
    floor = config.min_lr / config.lr if config.lr > 0 else 0.0
    decay_iters = max(total_iters - warmup, 1)

    def factor(iteration: int) -> float:
        if iteration < warmup:
            return (iteration + 1) / warmup
        progress = min((iteration - warmup) / decay_iters, 1.0)
        if config.scheduler == "poly":
            decayed = (1.0 - progress) ** config.poly_power
        elif config.scheduler == "cosine":
            decayed = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            decayed = 1.0
        return floor + (1.0 - floor) * decayed

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def is_stepped_per_iteration(scheduler: object) -> bool:
    """True if the schedule advances every optimizer step, False if once an epoch on the
    validation loss (plateau)."""
    return not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
