"""The training loop: one epoch of optimization, one pass of validation.

The hot path never waits for the device: losses and confusion matrices accumulate on it, and
the host reads them only every `log_every` steps (progress bar, TensorBoard) and at the end of
an epoch.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from segmentation.engine.distributed import DistributedContext, broadcast_flag
from segmentation.engine.optim import steps_per_iteration
from segmentation.engine.run_logger import RunLogger, logger
from segmentation.errors import UserError
from segmentation.metrics import ConfusionMatrix, predictions_from_logits
from segmentation.models import set_encoder_trainable

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; nothing after the last good checkpoint was saved."""


class TrainingInterrupted(UserError):
    """A signal stopped training after a checkpoint was saved; exits 128 + the signal number,
    as a shell reports a process killed by that signal."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number


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


@dataclass
class StopRequest:
    """Set by a signal handler; the loop stops at the next optimizer-step boundary."""

    requested: bool = False
    signal_name: str = ""
    signal_number: int = 0


@dataclass
class EpochResult:
    loss: float
    images_per_second: float
    interrupted: bool = False
    metrics: dict = field(default_factory=dict)


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class Trainer:
    """Runs epochs of a model (plain or wrapped in DDP) with its loss and optimizer."""

    def __init__(
        self,
        *,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: object,
        scaler: torch.amp.GradScaler,
        context: DistributedContext,
        class_names: tuple[str, ...],
        amp: str,
        accumulate: int,
        grad_clip: float | None,
        freeze_encoder_iters: int,
        skip_nonfinite: int,
        channels_last: bool,
        run_logger: RunLogger,
        stop: StopRequest,
        state: TrainState,
        log_every: int = 20,
    ) -> None:
        self.model = model
        self.bare_model = model.module if hasattr(model, "module") else model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.context = context
        self.device = context.device
        self.class_names = class_names
        self.amp = amp
        self.accumulate = accumulate
        self.grad_clip = grad_clip
        self.freeze_encoder_iters = freeze_encoder_iters
        self.skip_nonfinite = skip_nonfinite
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.run_logger = run_logger
        self.stop = stop
        self.state = state
        self.log_every = log_every

    @property
    def encoder_frozen(self) -> bool:
        return self.state.step < self.freeze_encoder_iters

    def _to_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        images = batch["image"].to(self.device, non_blocking=True)
        images = images.contiguous(memory_format=self.memory_format)
        target = batch["target"].to(self.device, non_blocking=True).long()
        return images, target

    def _optimizer_step(self) -> None:
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.bare_model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if steps_per_iteration(self.scheduler):
            self.scheduler.step()
        self.state.step += 1
        if self.state.step == self.freeze_encoder_iters:
            set_encoder_trainable(self.bare_model, True)

    def train_one_epoch(self, loader: DataLoader, epoch: int, total_epochs: int) -> EpochResult:
        """Optimize over the loader (which the caller set to skip batches already done)."""
        state = self.state
        self.model.train()
        set_encoder_trainable(self.bare_model, not self.encoder_frozen)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        samples = torch.zeros((), device=self.device, dtype=torch.int64)
        first_bad_step = torch.full((), -1, device=self.device, dtype=torch.int64)
        window_loss = torch.zeros((), device=self.device, dtype=torch.float64)
        window_samples, window_start = 0, time.perf_counter()
        epoch_start, epoch_images = window_start, 0
        progress = tqdm(
            total=len(loader) + state.epoch_batches,
            initial=state.epoch_batches,
            desc=f"epoch {epoch + 1}/{total_epochs}",
            disable=not (self.context.is_main and sys.stderr.isatty()),
            dynamic_ncols=True,
            leave=False,
        )
        batches_left = len(loader)
        for images, target in map(self._to_device, loader):
            batches_left -= 1
            micro = state.epoch_batches % self.accumulate
            boundary = micro == self.accumulate - 1 or batches_left == 0
            sync = contextlib.nullcontext()
            if not boundary and hasattr(self.model, "no_sync"):
                sync = self.model.no_sync()
            with sync:
                with autocast(self.device, self.amp):
                    logits = self.model(images)
                    loss = self.loss_fn(logits, target)
                if self.skip_nonfinite and not torch.isfinite(loss):
                    # Checking needs the value now: a sync per step, paid only on request.
                    self._skip_batch(epoch)
                    progress.update(1)
                    continue
                self.scaler.scale(loss / self.accumulate).backward()
            batch_size = images.shape[0]
            detached = loss.detach()
            bad = ~torch.isfinite(detached)
            first_bad_step = torch.where(
                bad & (first_bad_step < 0),
                torch.full_like(first_bad_step, state.step),
                first_bad_step,
            )
            loss_sum += detached.double() * batch_size
            window_loss += detached.double() * batch_size
            samples += batch_size
            window_samples += batch_size
            epoch_images += batch_size
            state.epoch_batches += 1
            progress.update(1)
            if boundary:
                self._optimizer_step()
            if boundary and state.step % self.log_every == 0:
                self._check_finite(first_bad_step, epoch)
                now = time.perf_counter()
                window_mean = (window_loss / max(window_samples, 1)).item()
                speed = window_samples * self.context.world_size / (now - window_start)
                progress.set_postfix(loss=f"{window_mean:.4f}", img_s=f"{speed:.1f}")
                self.run_logger.scalars(
                    {
                        "train/loss": window_mean,
                        "train/lr": self.optimizer.param_groups[0]["lr"],
                        "train/images_per_second": speed,
                    },
                    state.step,
                )
                window_loss.zero_()
                window_samples, window_start = 0, now
            if boundary and broadcast_flag(self.stop.requested, self.device):
                progress.close()
                self._check_finite(first_bad_step, epoch)
                self._carry_over(loss_sum, samples)
                return EpochResult(math.nan, 0.0, interrupted=True)
        progress.close()
        self._check_finite(first_bad_step, epoch)
        self._carry_over(loss_sum, samples)
        total_loss = torch.tensor(
            [state.epoch_loss_sum, float(state.epoch_samples)],
            device=self.device,
            dtype=torch.float64,
        )
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(total_loss)
        elapsed = time.perf_counter() - epoch_start
        result = EpochResult(
            loss=(total_loss[0] / total_loss[1].clamp(min=1)).item(),
            images_per_second=epoch_images * self.context.world_size / max(elapsed, 1e-9),
        )
        state.epoch_batches, state.epoch_loss_sum, state.epoch_samples = 0, 0.0, 0
        return result

    def _carry_over(self, loss_sum: torch.Tensor, samples: torch.Tensor) -> None:
        """Fold this session's epoch sums into the state, which a checkpoint keeps."""
        self.state.epoch_loss_sum += loss_sum.item()
        self.state.epoch_samples += int(samples.item())

    def _check_finite(self, first_bad_step: torch.Tensor, epoch: int) -> None:
        bad_step = int(first_bad_step.item())
        if bad_step >= 0:
            raise NonFiniteLossError(
                f"the training loss became NaN or infinite at step {bad_step + 1} (epoch "
                f"{epoch + 1}); training stopped and the checkpoints from before it are kept: "
                "lower optim.lr, set train.grad_clip, or let train.skip_nonfinite skip such batches"
            )

    def _skip_batch(self, epoch: int) -> None:
        self.state.skipped_batches += 1
        self.state.epoch_batches += 1
        self.optimizer.zero_grad(set_to_none=True)
        logger.warning(
            "skipped a batch with a NaN or infinite loss (epoch %d, step %d): %d of %d allowed",
            epoch + 1,
            self.state.step + 1,
            self.state.skipped_batches,
            self.skip_nonfinite,
        )
        if self.state.skipped_batches > self.skip_nonfinite:
            raise NonFiniteLossError(
                f"{self.state.skipped_batches} batches had a NaN or infinite loss, more than "
                f"train.skip_nonfinite={self.skip_nonfinite} (epoch {epoch + 1}, step "
                f"{self.state.step + 1}); training stopped and earlier checkpoints are kept: "
                "lower optim.lr or set train.grad_clip"
            )

    @torch.no_grad()
    def evaluate(self, loader: DataLoader, keep_images: int = 0) -> tuple[dict, list]:
        """Loss and confusion-matrix metrics over the loader, reduced across processes.

        Returns (metrics, kept) where kept holds up to `keep_images` (image, target, prediction)
        CPU tensors from the start of the loader, for the TensorBoard panel.
        """
        # The bare model: DDP's forward would sync buffers, and shards may differ in length.
        model = self.bare_model
        model.eval()
        if torch.distributed.is_initialized():
            # Each process updated its BatchNorm statistics on its own last batch: score the
            # model that rank 0 saves, on every shard.
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        matrix = ConfusionMatrix(len(self.class_names), self.device)
        loss_sum = torch.zeros(2, device=self.device, dtype=torch.float64)
        kept = []
        for batch in loader:
            images, target = self._to_device(batch)
            with autocast(self.device, self.amp):
                logits = model(images)
                loss = self.loss_fn(logits, target)
            loss_sum[0] += loss.double() * images.shape[0]
            loss_sum[1] += images.shape[0]
            predictions = predictions_from_logits(logits)
            matrix.update(predictions, target)
            if len(kept) < keep_images:
                for image, label, prediction in zip(batch["image"], batch["target"], predictions):
                    if len(kept) < keep_images:
                        kept.append((image, label, prediction.cpu()))
        matrix.all_reduce()
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(loss_sum)
        metrics = matrix.compute(self.class_names)
        metrics["loss"] = (loss_sum[0] / loss_sum[1].clamp(min=1)).item()
        return metrics, kept
