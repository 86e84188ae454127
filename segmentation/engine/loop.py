"""The training loop, top to bottom.

`train` builds a run (setup.py) and calls `fit`; `fit` runs epochs of `train_one_epoch` and
`validate`, steps the plateau schedule and saves checkpoints (`fit_iterations` the same for a
run of train.iters, validating every train.val_every steps); `train_one_epoch` runs optimizer
steps, each over `train.accumulate` micro-batches, and logs every `train.log_every` steps.

The hot path never waits for the device: losses accumulate on it, and the host reads them only
every `log_every` steps and at the end of an epoch. Skipping non-finite batches is the one
opt-in exception (it must know each loss before the backward pass).
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn

from segmentation.checkpoint import copy_checkpoint, save_checkpoint
from segmentation.config import Config, check_amp_device, config_to_dict
from segmentation.data.build import with_dataset_classes
from segmentation.data.kinds.catalog import kind_of
from segmentation.data.labels import IGNORE_INDEX
from segmentation.data.loading import announce_stop, progress_bar
from segmentation.devices import autocast, forward_in_range, native_bf16, resolve_amp
from segmentation.engine.compile import (
    begin_step,
    clear_gradients,
    reporting_cuda_graph_skips,
)
from segmentation.engine.distributed import (
    any_process,
    cleanup_distributed,
    setup_distributed,
)
from segmentation.engine.full_resolution import validate_full_resolution
from segmentation.engine.optim import is_stepped_per_iteration
from segmentation.engine.run_logger import ValidationPictures, logger
from segmentation.engine.setup import build_training, wrap_model
from segmentation.engine.state import (
    NonFiniteLossError,
    StopRequest,
    Training,
    TrainingInterrupted,
)
from segmentation.errors import UserError
from segmentation.evaluation.kitti_road import NUM_LEVELS, level_histograms
from segmentation.evaluation.loop import evaluate
from segmentation.metrics import ConfusionMatrix, all_reduce_sum, predictions_from_logits
from segmentation.models import set_encoder_trainable


def train(config: Config, *, resume: Path | None = None, init_from: Path | None = None) -> dict:
    """Train as configured (possibly one process of a torchrun job). Returns the last
    validation metrics."""
    check_amp_device(config)
    context = setup_distributed(config.train.device)
    try:
        # The classes file of a folder dataset goes into the config that checkpoints carry.
        config = config.model_copy(update={"data": with_dataset_classes(config.data)})
        training = build_training(with_resolved_amp(config, context), context, resume, init_from)
        try:
            with reporting_cuda_graph_skips(
                training.compile_mode, context.device, warn=context.is_main
            ):
                return fit(training)
        finally:
            training.run_logger.close()
            training.run_directory.release()
    finally:
        cleanup_distributed()


def with_resolved_amp(config: Config, context) -> Config:
    """train.amp "auto" made concrete for this device; the checkpoints record the choice."""
    amp = resolve_amp(config.train.amp, context.device)
    if amp == config.train.amp:
        return config
    if context.is_main:
        logger.info("train.amp auto: %s (%s)", amp, native_bf16(context.device)[1])
    return config.model_copy(update={"train": config.train.model_copy(update={"amp": amp})})


def fit(training: Training) -> dict:
    """Train the remaining epochs, validating and saving after each (or, with train.iters,
    the remaining iterations: `fit_iterations`). Returns the last validation metrics."""
    config, state = training.config.train, training.state
    if config.iters is not None:
        return fit_iterations(training)
    metrics: dict = {}
    if state.epoch >= config.epochs:
        logger.info(
            "the run already has %d of %d epochs: nothing to do", state.epoch, config.epochs
        )
    with stop_on_signals(training.stop):
        while state.epoch < config.epochs:
            started = time.perf_counter()
            if state.trained_epoch is not None:  # stopped in its validation: validate again
                result = EpochResult(**state.trained_epoch)
            else:
                training.train_sampler.set_epoch(
                    state.epoch, start=state.epoch_batches * config.batch_size
                )
                result = train_one_epoch(training)
            if result.interrupted:
                stopped(training, save(training, "last.pt"), f"epoch {state.epoch + 1}")
            metrics, pictures, improved = validate_after(
                training, result, f"the validation of epoch {state.epoch + 1}"
            )
            state.epoch += 1
            save_epoch(training, metrics, improved)
            seconds = time.perf_counter() - started
            training.run_logger.log_epoch(training, result, metrics, pictures, seconds, improved)
    return metrics


def fit_iterations(training: Training) -> dict:
    """Train until train.iters optimizer steps, over as many passes of the training set as
    they take (each pass reshuffled, as in `fit`); validate every train.val_every steps and
    at the last, save last.pt every train.save_every steps and at each validation. Returns the
    last validation metrics."""
    config, state = training.config.train, training.state
    metrics: dict = {}
    if state.step >= config.iters and state.trained_epoch is None:
        logger.info(
            "the run already has %d of %d iterations: nothing to do", state.step, config.iters
        )
    with stop_on_signals(training.stop):
        while state.step < config.iters or state.trained_epoch is not None:
            started = time.perf_counter()
            if state.trained_epoch is not None:  # stopped in its validation: validate again
                result = EpochResult(**state.trained_epoch)
            else:
                result = train_steps(training, until=next_stop(state.step, config))
                if result.interrupted:
                    stopped(training, save(training, "last.pt"), f"iteration {state.step}")
                if not validates_at(state.step, config):
                    save(training, "last.pt")
                    continue
            metrics, pictures, improved = validate_after(
                training, result, f"the validation at iteration {state.step}"
            )
            save_epoch(training, metrics, improved)
            seconds = time.perf_counter() - started
            training.run_logger.log_epoch(training, result, metrics, pictures, seconds, improved)
    return metrics


def validate_after(
    training: Training, result: EpochResult, where: str
) -> tuple[dict, ValidationPictures, bool]:
    """Validate after the training that `result` sums up, step the plateau scheduler and
    keep the best metric: (metrics, pictures, whether it improved). A stop request inside the
    validation saves last.pt with `result`, so that a resume validates again, and ends the
    run (`where` names the validation in the message)."""
    state, config = training.state, training.config.train
    # Validation draws no random numbers a resume would need, but its loader's iterator takes
    # a seed from the generator: a resume that validates again must start from the state
    # before it, as a straight run did.
    rng = rng_state(training.device)
    validated = validate(training)
    if validated is None:
        state.trained_epoch = {"loss": result.loss, "images_per_second": result.images_per_second}
        stopped(training, save(training, "last.pt", rng=rng), where)
    state.trained_epoch = None
    metrics, pictures = validated
    step_plateau(training, metrics["loss"])
    improved = metrics[config.key_metric] is not None and (
        metrics[config.key_metric] > state.best_metric
    )
    if improved:
        state.best_metric = metrics[config.key_metric]
    return metrics, pictures, improved


def validates_at(step: int, config) -> bool:
    """Whether a run of train.iters validates after optimizer step `step` (counted from 1)."""
    return step == config.iters or (config.val_every is not None and step % config.val_every == 0)


def next_stop(step: int, config) -> int:
    """The next optimizer step after `step` at which a run of train.iters validates or saves."""
    stops = [config.iters]
    for every in (config.val_every, config.save_every):
        if every is not None:
            stops.append((step // every + 1) * every)
    return min(stops)


def stopped(training: Training, path: Path, where: str) -> NoReturn:
    """End the run after a stop request, once `path` (last.pt) is saved."""
    stop = training.stop
    raise TrainingInterrupted(
        f"stopped by {stop.signal_name} in {where} after step {training.state.step}; saved "
        f"{path}: continue with --resume {path}",
        stop.signal_number,
        silent=not training.context.is_main,
    )


@dataclass
class EpochResult:
    loss: float
    images_per_second: float
    interrupted: bool = False


def train_one_epoch(training: Training) -> EpochResult:
    """Optimizer steps over the loader (which skips the batches a resumed run already did)."""
    _start_training_steps(training)
    sums = LossSums(training.device)
    outcome = _steps_over_loader(training, sums)
    sums.carry_over(training)
    if outcome == "stopped":
        return EpochResult(float("nan"), 0.0, interrupted=True)
    return EpochResult(
        loss=sums.epoch_mean(training),
        images_per_second=sums.epoch_images * training.context.world_size / sums.elapsed(),
    )


def train_steps(training: Training, until: int) -> EpochResult:
    """Optimizer steps until step `until`, across passes of the training set: each pass is an
    epoch of the sampler (its own shuffle and augmentation seeds), resumed where a stopped run
    left it. The loss is the mean since the last validation (kept in the state, which a
    checkpoint saves); it is taken, and reset, only where the run validates."""
    config, state = training.config.train, training.state
    _start_training_steps(training)
    sums = LossSums(training.device)
    outcome = "until"
    while state.step < until:
        training.train_sampler.set_epoch(state.epoch, start=state.epoch_batches * config.batch_size)
        outcome = _steps_over_loader(training, sums, until=until)
        if outcome == "stopped":
            break
        if outcome == "end":  # the pass is done: the next one is a new epoch of the sampler
            state.epoch += 1
            state.epoch_batches = 0
    sums.carry_over(training)
    if outcome == "stopped":
        return EpochResult(float("nan"), 0.0, interrupted=True)
    images_per_second = sums.epoch_images * training.context.world_size / sums.elapsed()
    if not validates_at(state.step, config):
        return EpochResult(float("nan"), images_per_second)
    return EpochResult(
        loss=sums.mean_since_validation(training), images_per_second=images_per_second
    )


def _start_training_steps(training: Training) -> None:
    config, state = training.config.train, training.state
    training.model.train()
    set_encoder_trainable(training.bare_model, state.step >= config.freeze_encoder_iters)
    clear_gradients(training.optimizer, training.compile_mode, training.device)


def _steps_over_loader(training: Training, sums: LossSums, until: int | None = None) -> str:
    """Optimizer steps over the rest of the loader's epoch: "end" when it is done, "until"
    at step `until`, "stopped" after a stop request."""
    config, state = training.config.train, training.state
    progress = _epoch_progress(training)
    for micro_batches in _groups(training.train_loader, config.accumulate):
        step = first_compiled_step if training.compile_pending else accumulate_gradients
        if step(training, micro_batches, sums):
            optimizer_step(training)
            if training.compile_pending:
                training.compile_pending = False
                logger.info(
                    "torch.compile (%s): the first step took %.1f s",
                    training.compile_mode,
                    sums.elapsed(),
                )
        progress.update(len(micro_batches))
        if state.step % config.log_every == 0 and sums.window_samples:
            log_window(training, sums, progress)
        if stop_agreed(training):
            progress.close()
            return "stopped"
        if until is not None and state.step >= until:
            progress.close()
            return "until"
    progress.close()
    return "end"


def accumulate_gradients(training: Training, micro_batches: list, sums: LossSums) -> bool:
    """Forward and backward over one optimizer step's micro-batches; gradients are averaged
    over them. False if the step is skipped for a non-finite loss (train.skip_nonfinite)."""
    config, state = training.config.train, training.state
    for index, batch in enumerate(micro_batches):
        images, target = to_device(batch, training)
        last = index == len(micro_batches) - 1
        # DDP averages gradients across processes once, on the step's last backward pass.
        no_sync = getattr(training.model, "no_sync", None)
        with contextlib.nullcontext() if last or no_sync is None else no_sync():
            begin_step(training.compile_mode, training.device)
            with autocast(training.device, config.amp):
                logits = training.model(images)
                # Outside the compiled model: the loss is no CUDA graph output, which the next
                # replay would overwrite, and the sums below can keep it.
                loss = training.loss_fn(logits, target)
            # Every process takes part in the check, so that all skip the same steps.
            if config.skip_nonfinite and any_process(
                not bool(torch.isfinite(loss)), training.context
            ):
                skip_step(training, batches=len(micro_batches) - index)
                return False
            training.scaler.scale(loss / len(micro_batches)).backward()
        sums.add(loss.detach(), images.shape[0], state.step)
        state.epoch_batches += 1
    return True


def first_compiled_step(training: Training, micro_batches: list, sums: LossSums) -> bool:
    """`accumulate_gradients` for the first step of a compiled model, which compiles it. In a
    mode other than default, an error there (a step that cannot be captured or tuned) makes
    the run compile in the default mode and do the step again, with one warning saying why."""
    mode, state = training.compile_mode, training.state
    if mode == "default":
        return accumulate_gradients(training, micro_batches, sums)
    before = sums.snapshot(), state.epoch_batches, state.skipped_batches
    try:
        return accumulate_gradients(training, micro_batches, sums)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the mode's compiler raised
        if training.context.is_main:
            logger.warning(
                "train.compile %s: the first step failed (%s): compiling in the default mode",
                mode,
                _first_line(error),
            )
    sums.restore(before[0])
    state.epoch_batches, state.skipped_batches = before[1], before[2]
    training.compile_mode = "default"
    clear_gradients(training.optimizer, training.compile_mode, training.device)
    torch.compiler.reset()  # nothing compiled in the failed mode is reused
    training.model = wrap_model(
        training.bare_model, training.config, training.context, state, training.compile_mode
    )
    return accumulate_gradients(training, micro_batches, sums)


def _first_line(error: Exception, limit: int = 300) -> str:
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def optimizer_step(training: Training) -> None:
    config, state = training.config.train, training.state
    if config.grad_clip:
        training.scaler.unscale_(training.optimizer)
        nn.utils.clip_grad_norm_(training.bare_model.parameters(), config.grad_clip)
    training.scaler.step(training.optimizer)
    training.scaler.update()
    clear_gradients(training.optimizer, training.compile_mode, training.device)
    step_schedule(training)
    state.step += 1
    if state.step == config.freeze_encoder_iters:
        set_encoder_trainable(training.bare_model, True)
        clear_gradients(training.optimizer, training.compile_mode, training.device)
        if training.context.enabled:
            training.model = wrap_model(
                training.bare_model,
                training.config,
                training.context,
                state,
                training.compile_mode,
            )


def step_schedule(training: Training) -> None:
    """Per-iteration schedules advance after every optimizer step."""
    if is_stepped_per_iteration(training.scheduler):
        training.scheduler.step()


def step_plateau(training: Training, val_loss: float | None) -> None:
    """The plateau schedule advances after each validation, on its loss (val_mode resized: the
    config refuses plateau with the full-resolution modes, which compute no loss)."""
    if not is_stepped_per_iteration(training.scheduler) and val_loss is not None:
        training.scheduler.step(val_loss)


def skip_step(training: Training, batches: int) -> None:
    """Drop the gradients of a step with a non-finite loss, within train.skip_nonfinite."""
    config, state = training.config.train, training.state
    clear_gradients(training.optimizer, training.compile_mode, training.device)
    state.skipped_batches += 1
    state.epoch_batches += batches
    logger.warning(
        "skipped a batch with a NaN or infinite loss (epoch %d, step %d): %d of %d allowed",
        state.epoch + 1,
        state.step + 1,
        state.skipped_batches,
        config.skip_nonfinite,
    )
    if state.skipped_batches > config.skip_nonfinite:
        raise NonFiniteLossError(
            f"{state.skipped_batches} batches had a NaN or infinite loss, more than "
            f"train.skip_nonfinite={config.skip_nonfinite} (epoch {state.epoch + 1}, step "
            f"{state.step + 1}); training stopped and earlier checkpoints are kept: "
            "lower optim.lr or set train.grad_clip"
        )


def log_window(training: Training, sums: LossSums, progress) -> None:
    """Loss, learning rate and speed since the last log: the one host sync of the window."""
    sums.raise_if_nonfinite(training.state.epoch)
    loss, images_per_second = sums.take_window(training.context.world_size)
    progress.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_per_second:.1f}")
    training.run_logger.scalars(
        {
            "train/loss": loss,
            "train/lr": training.optimizer.param_groups[0]["lr"],
            "train/images_per_second": images_per_second,
        },
        training.state.step,
    )


def stop_agreed(training: Training) -> bool:
    """Whether to stop after this step: on every process of a job at the same step, which a
    signal delivered to each at slightly different times would not give. A host-side
    agreement: it does not wait for the device."""
    return any_process(training.stop.requested, training.context)


class UntilStopAgreed:
    """The loader's batches until every process agrees to stop (`stopped` then), each after
    the same number of batches. A process's shard of a validation set may be a batch shorter
    than another's: it takes part in the agreement for the batches it lacks, so that none
    waits alone."""

    def __init__(self, training: Training, loader) -> None:
        self.training = training
        self.loader = loader
        self.stopped = False

    def __iter__(self) -> Iterator:
        context = self.training.context
        longest = torch.tensor([len(self.loader)], dtype=torch.int64)
        if context.enabled and torch.distributed.is_initialized():
            torch.distributed.all_reduce(
                longest, op=torch.distributed.ReduceOp.MAX, group=context.control_group
            )
        batches = iter(self.loader)
        for _ in range(int(longest.item())):
            batch = next(batches, None)
            if batch is not None:
                yield batch
            if stop_agreed(self.training):
                self.stopped = True
                return


@torch.no_grad()
def validate(training: Training) -> tuple[dict, ValidationPictures] | None:
    """Loss and confusion-matrix metrics over the validation loader, reduced across processes,
    and what TensorBoard draws of them: up to `train.log_images` (uint8 (H, W, 3) image,
    target, prediction) for the panel, the confusion matrix, and for KITTI schemes the positive
    class's probability histograms (its precision-recall curve). None when a stop request
    ended it early (on every process at the same batch)."""
    model = training.bare_model  # DDP's forward would sync buffers; shards differ in length
    model.eval()
    if torch.distributed.is_initialized():
        # Each process updated its BatchNorm statistics on its own batches: score the model
        # that rank 0 saves, on every shard.
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)
    if training.config.train.val_mode != "resized":
        until_stop = UntilStopAgreed(training, training.val_loader)
        return validate_full_resolution(training, until_stop, lambda: until_stop.stopped)
    loss_sum = torch.zeros(2, device=training.device, dtype=torch.float64)
    panel: list = []
    keep = training.config.train.log_images
    # Only binary KITTI schemes get a PR curve: counted on the device, no wait for it.
    road = None
    if kind_of(training.config.data).precision_recall_curve:
        road = torch.zeros(2, NUM_LEVELS, dtype=torch.int64, device=training.device)

    batches = {"all": 0, "in_float32": 0}

    def forward(images: torch.Tensor, amp: str) -> torch.Tensor:
        with autocast(training.device, amp):
            return model(images)

    def predict(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        images, target = to_device(batch, training)
        logits, again = forward_in_range(partial(forward, images), training.config.train.amp)
        batches["all"] += 1
        batches["in_float32"] += again
        loss = training.loss_fn(logits, target)  # computed in float32 whatever the logits
        loss_sum[0] += loss.double() * images.shape[0]
        loss_sum[1] += images.shape[0]
        predictions = predictions_from_logits(logits)
        if road is not None:
            positive = positive_probability(logits, training.config.model.head)
            road.add_(level_histograms(positive, target == 1, target != IGNORE_INDEX).sum(0))
        for image, label, prediction in zip(batch["image"], batch["target"], predictions):
            if len(panel) < keep:
                panel.append((image, label, prediction.cpu()))
        return predictions, target

    matrix = ConfusionMatrix(training.scheme.num_classes, training.device)
    until_stop = UntilStopAgreed(training, training.val_loader)
    evaluate(predict, until_stop, matrix, show_progress=False)
    if until_stop.stopped:
        return None
    if batches["in_float32"]:
        logger.warning(
            "validation: %d of %d batches overflowed float16 (activations past 65504, common "
            "early in training) and were computed again in float32; train.amp bf16 (GPUs of "
            "compute capability 8.0 and newer) has float32's range",
            batches["in_float32"],
            batches["all"],
        )
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss_sum)
    if road is not None:
        all_reduce_sum(road)
    metrics = matrix.compute(training.scheme.class_names)
    metrics["loss"] = (loss_sum[0] / loss_sum[1].clamp(min=1)).item()
    pictures = ValidationPictures(
        panel=panel,
        confusion=matrix.matrix.cpu().numpy(),
        road_histograms=None if road is None else road.cpu().numpy(),
    )
    return metrics, pictures


def positive_probability(logits: torch.Tensor, head: str) -> torch.Tensor:
    """(B, H, W) float32 probability of class 1 of a binary scheme's logits: one sigmoid
    channel, or two channels of a softmax (or sigmoid) head."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return logits[:, 0].sigmoid()
    if head == "softmax":
        return logits.softmax(dim=1)[:, 1]
    return logits[:, 1].sigmoid()


def save_epoch(training: Training, metrics: dict, improved: bool) -> None:
    """last.pt after every epoch; best.pt first when the key metric improved, so that last.pt
    never records a best metric that no best.pt holds."""
    if improved:
        best = save(training, "best.pt", metrics)
        if training.context.is_main:
            copy_checkpoint(best, training.run_dir / "last.pt")
    else:
        save(training, "last.pt", metrics)


def save(
    training: Training, name: str, metrics: dict | None = None, rng: dict | None = None
) -> Path:
    """Write a checkpoint of the run (main process only) and return its path. `rng`: the
    generators' state to record, if not their state now."""
    path = training.run_dir / name
    if not training.context.is_main:
        return path
    if not _params_finite(training.bare_model):
        raise UserError(
            f"the model's weights hold NaN or infinite values: {name} was not written, "
            "earlier checkpoints are kept; lower optim.lr or set train.grad_clip"
        )
    save_checkpoint(checkpoint_state(training, metrics, rng), path)
    return path


def rng_state(device: torch.device) -> dict:
    """The random number generators' state that a resume restores."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def checkpoint_state(
    training: Training, metrics: dict | None = None, rng: dict | None = None
) -> dict:
    """Plain tensors and data: everything --resume needs, and the config for inference."""
    return {
        "model": training.bare_model.state_dict(),
        "optimizer": training.optimizer.state_dict(),
        "scheduler": training.scheduler.state_dict(),
        "scaler": training.scaler.state_dict(),
        "state": asdict(training.state),
        "config": config_to_dict(training.config),
        "run_id": training.run_id,
        "class_names": list(training.scheme.class_names),
        "rng": rng_state(training.device) if rng is None else rng,
        "metrics": metrics or {},
    }


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """SIGINT and SIGTERM ask the loop to stop after the current step and save. A second
    Ctrl-C quits at once; a repeated SIGTERM does not (a job's SIGTERM can reach a process
    twice: sent to the process group, and forwarded by torchrun)."""

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        if stop.requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        stop.requested = True
        announce_stop()  # the DataLoader workers may have got the signal too: they stay
        stop.signal_name = signal.Signals(signum).name
        stop.signal_number = signum
        logger.warning(
            "%s received: finishing the current step (or validation batch) and saving last.pt",
            stop.signal_name,
        )

    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, handler) for signum in stop_signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class LossSums:
    """Training-loss sums kept on the device: for the epoch, for the current log window, and
    the first step whose loss was not finite."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.epoch_loss = torch.zeros((), device=device, dtype=torch.float64)
        self.epoch_count = torch.zeros((), device=device, dtype=torch.int64)
        self.window_loss = torch.zeros((), device=device, dtype=torch.float64)
        self.first_bad_step = torch.full((), -1, device=device, dtype=torch.int64)
        self.window_samples = 0
        self.epoch_images = 0
        self.started = self.window_started = time.perf_counter()

    def add(self, loss: torch.Tensor, batch_size: int, step: int) -> None:
        bad = ~torch.isfinite(loss) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(bad, step, self.first_bad_step)
        weighted = loss.double() * batch_size
        self.epoch_loss += weighted
        self.window_loss += weighted
        self.epoch_count += batch_size
        self.window_samples += batch_size
        self.epoch_images += batch_size

    def snapshot(self) -> dict:
        """The sums as they are, for `restore`."""
        return {
            name: value.clone() if isinstance(value, torch.Tensor) else value
            for name, value in vars(self).items()
        }

    def restore(self, snapshot: dict) -> None:
        vars(self).update(snapshot)

    def take_window(self, world_size: int) -> tuple[float, float]:
        """(mean loss, images per second of the whole job) since the last call."""
        now = time.perf_counter()
        loss = (self.window_loss / max(self.window_samples, 1)).item()
        speed = self.window_samples * world_size / max(now - self.window_started, 1e-9)
        self.window_loss.zero_()
        self.window_samples, self.window_started = 0, now
        return loss, speed

    def raise_if_nonfinite(self, epoch: int) -> None:
        bad_step = int(self.first_bad_step.item())
        if bad_step >= 0:
            raise NonFiniteLossError(
                f"the training loss became NaN or infinite at step {bad_step + 1} (epoch "
                f"{epoch + 1}); training stopped and the checkpoints from before it are kept: "
                "lower optim.lr, set train.grad_clip, or let train.skip_nonfinite skip such batches"
            )

    def carry_over(self, training: Training) -> None:
        """Fold this session's sums into the state, which a checkpoint keeps (a resumed epoch
        reports the loss of all its batches)."""
        self.raise_if_nonfinite(training.state.epoch)
        training.state.epoch_loss_sum += self.epoch_loss.item()
        training.state.epoch_samples += int(self.epoch_count.item())

    def mean_since_validation(self, training: Training) -> float:
        """A run of train.iters: the mean training loss over all processes since the last
        validation; resets the state's sums (the position in the epoch stays)."""
        state = training.state
        batches = state.epoch_batches
        mean = self.epoch_mean(training)
        state.epoch_batches = batches
        return mean

    def epoch_mean(self, training: Training) -> float:
        """The epoch's mean training loss over all processes; resets the state's sums."""
        state = training.state
        totals = torch.tensor(
            [state.epoch_loss_sum, float(state.epoch_samples)],
            device=self.device,
            dtype=torch.float64,
        )
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        state.epoch_batches, state.epoch_loss_sum, state.epoch_samples = 0, 0.0, 0
        return (totals[0] / totals[1].clamp(min=1)).item()

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)


def to_device(batch: dict, training: Training) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, target) of a loader batch on the training device: images normalized float32
    (B, 3, H, W) in the model's memory layout, target int64 (B, H, W).

    The loader ships uint8 (B, H, W, 3), pinned for a GPU: a quarter of float32's bytes cross
    to the device. There, `permute` views the batch as (B, 3, H, W) without a copy (its
    strides are channels_last's), and one kernel converts, normalizes and lays it out."""
    memory_format = (
        torch.channels_last if training.config.model.channels_last else torch.contiguous_format
    )
    images = batch["image"].to(training.device, non_blocking=True).permute(0, 3, 1, 2)
    images = training.normalizer(images, memory_format)
    target = batch["target"].to(training.device, non_blocking=True).long()
    return images, target


def _groups(loader, size: int) -> Iterator[list]:
    """The loader's batches in lists of `size` (the last may be shorter)."""
    batches = iter(loader)
    while group := list(itertools.islice(batches, size)):
        yield group


def _epoch_progress(training: Training):
    state, config = training.state, training.config.train
    if config.iters is not None:
        description = f"epoch {state.epoch + 1}, step {state.step}/{config.iters}"
    else:
        description = f"epoch {state.epoch + 1}/{config.epochs}"
    return progress_bar(
        len(training.train_loader) + state.epoch_batches,
        description,
        enabled=training.context.is_main,
        initial=state.epoch_batches,
    )


def _params_finite(model: nn.Module) -> bool:
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all().item())
