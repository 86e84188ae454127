"""What a training run holds while it runs: the built pieces, where it stands, how it stops."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from segmentation.config import Config
from segmentation.data.labels import LabelScheme
from segmentation.data.normalize import Normalizer
from segmentation.engine.distributed import DistributedContext
from segmentation.engine.run_dir import RunDirectory
from segmentation.engine.run_logger import RunLogger
from segmentation.engine.sampler import EpochSampler
from segmentation.errors import UserError


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps done
    epoch_batches: int = 0  # batches done in the unfinished epoch (a mid-epoch stop)
    epoch_loss_sum: float = 0.0  # training loss summed over those batches' samples
    epoch_samples: int = 0
    best_metric: float = -math.inf
    skipped_batches: int = 0
    # The training result (loss, images_per_second) of an epoch whose validation a stop
    # request cut short: a resume validates that epoch again instead of training it.
    trained_epoch: dict | None = None


@dataclass
class StopRequest:
    """Set by a signal handler; the loop stops at the next optimizer step's or validation
    batch's end."""

    requested: bool = False
    signal_name: str = ""
    signal_number: int = 0


@dataclass
class Training:
    """Everything the loop works with, built by `setup.build_training` (or by a benchmark from
    its own pieces). The loop in `loop.py` is the only code that changes it."""

    config: Config
    scheme: LabelScheme
    model: nn.Module  # what the loop calls: the DDP wrapper in a distributed job
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    train_loader: DataLoader
    context: DistributedContext
    val_loader: DataLoader | None = None
    train_sampler: EpochSampler | None = None
    run_logger: RunLogger | None = None
    state: TrainState = field(default_factory=TrainState)
    stop: StopRequest = field(default_factory=StopRequest)
    # The encoder's input normalization, applied on the device to the loader's uint8 images
    # (to_device); the default (mean 0, std 1) only scales them to [0, 1].
    normalizer: Normalizer = field(default_factory=lambda: Normalizer((0.0,) * 3, (1.0,) * 3))
    run_directory: RunDirectory | None = None
    # train.compile as the device allows it (compile.compile_mode_for), or `default` after a
    # first step that failed in another mode
    compile_mode: str = "off"
    compile_pending: bool = False  # the first step of a compiled model is still to come
    run_id: str = ""  # saved in every checkpoint: a resume recognizes its run directory by it

    @property
    def bare_model(self) -> nn.Module:
        """The model without its torch.compile and DDP wrappers: what checkpoints hold (plain
        state_dict keys) and validation runs."""
        model = getattr(self.model, "_orig_mod", self.model)
        return getattr(model, "module", model)

    @property
    def device(self) -> torch.device:
        return self.context.device

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir)


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; nothing after the last good checkpoint was saved."""


class TrainingInterrupted(UserError):
    """A signal stopped training after a checkpoint was saved; exits 128 + the signal number,
    as a shell reports a process killed by that signal."""

    def __init__(self, message: str, signal_number: int, silent: bool = False) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number
        self.silent = silent  # the other processes of a job: the main one says it once
