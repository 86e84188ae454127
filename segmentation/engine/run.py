"""A whole training run: build everything from the config, loop over epochs, save checkpoints."""

from __future__ import annotations

import math
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from segmentation.checkpoint import copy_checkpoint, load_checkpoint, save_checkpoint
from segmentation.config import Config, config_to_dict, save_config
from segmentation.data.build import build_training_datasets, label_reader, scheme_for
from segmentation.data.class_counts import pixel_counts
from segmentation.data.io import limit_opencv_threads
from segmentation.data.labels import LabelScheme
from segmentation.engine.distributed import (
    DistributedContext,
    cleanup_distributed,
    setup_distributed,
)
from segmentation.engine.optim import build_optimizer, build_scheduler, steps_per_iteration
from segmentation.engine.resume import check_compatible, check_resumable
from segmentation.engine.run_logger import RunLogger, logger
from segmentation.engine.sampler import EpochSampler
from segmentation.engine.trainer import StopRequest, Trainer, TrainingInterrupted, TrainState
from segmentation.errors import UserError
from segmentation.losses import build_loss, class_weights_from_pixel_counts
from segmentation.models import (
    check_input_size,
    encoder_normalization,
    model_from_config,
    required_input_multiple,
)
from segmentation.visualize import denormalize, overlay


def _make_loader(dataset, sampler, batch_size, workers, device, drop_last) -> DataLoader:
    if workers:
        limit_opencv_threads()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=drop_last,
        worker_init_fn=_worker_init,
        # A private generator: the loader must not draw from the global torch RNG, whose
        # state the checkpoints carry for dropout.
        generator=torch.Generator(),
    )


def _worker_init(worker_id: int) -> None:
    # Each worker decodes one image at a time; threads inside it would only fight each other.
    torch.set_num_threads(1)


def _class_weights(config: Config, train_dataset, scheme: LabelScheme) -> torch.Tensor | None:
    weights = config.loss.class_weights
    if weights is None:
        return None
    if weights == "auto":
        counts = pixel_counts(train_dataset.samples, scheme, label_reader(config.data.dataset))
        return torch.as_tensor(class_weights_from_pixel_counts(counts), dtype=torch.float32)
    if isinstance(weights, str):
        raise UserError(f"loss.class_weights '{weights}' is not valid: use null, auto or a list")
    if len(weights) != scheme.num_classes:
        raise UserError(
            f"loss.class_weights has {len(weights)} values but the '{scheme.name}' scheme has "
            f"{scheme.num_classes} classes ({', '.join(scheme.class_names)})"
        )
    return torch.tensor(weights, dtype=torch.float32)


def _prepare_run_dir(run_dir: Path, resuming: bool) -> None:
    if not resuming and run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(
            f"run directory {run_dir} already exists and is not empty: continue it with "
            f"--resume {run_dir / 'last.pt'}, or choose a new --output-dir"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"cannot write to run directory {run_dir} ({error.strerror or error}): "
            "choose a writable --output-dir"
        ) from None


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _params_finite(model: nn.Module) -> bool:
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all().item())


def _install_signal_handlers(stop: StopRequest) -> dict:
    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        if stop.requested:
            # A second signal: the user wants out now, checkpoint or not.
            raise KeyboardInterrupt
        stop.requested = True
        stop.signal_name = signal.Signals(signum).name
        stop.signal_number = signum
        logger.warning(
            "%s received: finishing the current step and saving last.pt", stop.signal_name
        )

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous


def _panel(kept: list, scheme: LabelScheme, mean, std) -> np.ndarray:
    """(N, H, 3W, 3) uint8: input, ground truth over input, prediction over input."""
    rows = []
    for image, target, prediction in kept:
        rgb = denormalize(image.float().numpy(), mean, std)
        rows.append(
            np.concatenate(
                [
                    rgb,
                    overlay(rgb, target.numpy(), scheme),
                    overlay(rgb, prediction.numpy().astype(np.uint8), scheme),
                ],
                axis=1,
            )
        )
    return np.stack(rows) if rows else np.zeros((0, 1, 1, 3), np.uint8)


class TrainingRun:
    """Everything one `train.py` invocation builds, on one process of a possibly larger job."""

    def __init__(
        self,
        config: Config,
        context: DistributedContext,
        *,
        resume: Path | None,
        init_from: Path | None,
    ) -> None:
        self.config = config
        self.context = context
        self.device = context.device
        self.scheme = scheme_for(config.data)
        self.run_dir = Path(config.output_dir)
        resume_state = load_checkpoint(resume) if resume else None
        if resume_state is not None:
            check_resumable(resume_state, config, resume)
        init_state = load_checkpoint(init_from) if init_from else None
        if init_state is not None:
            check_compatible(init_state, config, init_from)
        height, width = config.data.image_size
        check_input_size(
            height, width, required_input_multiple(config.model.arch), config.model.arch
        )
        self.mean, self.std = encoder_normalization(config.model.backbone)
        self.train_set, self.val_set = build_training_datasets(config.data, self.mean, self.std)
        # Only once the inputs are known good: a failed start leaves no folder behind.
        if context.is_main:
            _prepare_run_dir(self.run_dir, resuming=resume_state is not None)

        torch.manual_seed(config.train.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = config.train.cudnn_benchmark
        pretrained = None if (resume_state or init_state) else config.model.pretrained
        model = model_from_config(
            config.model, self.scheme.num_outputs(config.model.head), pretrained
        )
        if init_state is not None:
            model.load_state_dict(init_state["model"])
        model.to(self.device)
        if config.model.channels_last:
            model.to(memory_format=torch.channels_last)

        train_config = config.train
        self.train_sampler = EpochSampler(
            len(self.train_set),
            shuffle=True,
            seed=train_config.seed,
            rank=context.rank,
            world_size=context.world_size,
        )
        val_sampler = EpochSampler(
            len(self.val_set),
            shuffle=False,
            rank=context.rank,
            world_size=context.world_size,
            pad=False,
            seeded=False,
        )
        batch_size = train_config.batch_size
        if len(self.train_set) < batch_size * context.world_size:
            raise UserError(
                f"the training split has {len(self.train_set)} images, fewer than one batch "
                f"({batch_size} x {context.world_size} processes): lower --batch-size"
            )
        workers = config.data.workers
        self.train_loader = _make_loader(
            self.train_set, self.train_sampler, batch_size, workers, self.device, drop_last=True
        )
        self.val_loader = _make_loader(
            self.val_set, val_sampler, batch_size, workers, self.device, drop_last=False
        )

        weights = _class_weights(config, self.train_set, self.scheme)
        loss_fn = build_loss(
            config.loss.name, self.scheme.num_classes, class_weights=weights, **config.loss.options
        ).to(self.device)
        optimizer = build_optimizer(model, config.optim)
        steps_per_epoch = math.ceil(len(self.train_loader) / train_config.accumulate)
        scheduler = build_scheduler(optimizer, config.optim, steps_per_epoch * train_config.epochs)
        scaler = torch.amp.GradScaler(self.device.type, enabled=train_config.amp == "fp16")

        state = TrainState()
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            scaler.load_state_dict(resume_state["scaler"])
            state = TrainState(**resume_state["state"])
            _set_rng_state(resume_state["rng"], self.device)
        self.bare_model = model
        if context.enabled:
            if config.model.sync_batchnorm and self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self.bare_model = model
            elif config.model.sync_batchnorm and context.is_main:
                logger.warning("model.sync_batchnorm needs CUDA: plain BatchNorm on the CPU")
            model = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # Parameters frozen for a while get no gradient; DDP must not wait for them.
                find_unused_parameters=train_config.freeze_encoder_iters > 0,
            )
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.stop = StopRequest()
        self.run_logger = RunLogger(
            self.run_dir, context.is_main, purge_step=state.step if resume_state else None
        )
        self.trainer = Trainer(
            model=model,
            loss_fn=loss_fn,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            context=context,
            class_names=self.scheme.class_names,
            amp=train_config.amp,
            accumulate=train_config.accumulate,
            grad_clip=train_config.grad_clip,
            freeze_encoder_iters=train_config.freeze_encoder_iters,
            skip_nonfinite=train_config.skip_nonfinite,
            channels_last=config.model.channels_last,
            run_logger=self.run_logger,
            stop=self.stop,
            state=state,
            log_every=train_config.log_every,
        )
        self.state = state
        if context.is_main:
            save_config(config, self.run_dir / "config.yaml")
            if resume_state is not None:
                self._truncate_metrics(state.epoch)

    def checkpoint_state(self, metrics: dict | None = None) -> dict:
        return {
            "model": self.bare_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": asdict(self.state),
            "config": config_to_dict(self.config),
            "class_names": list(self.scheme.class_names),
            "rng": _rng_state(self.device),
            "metrics": metrics or {},
        }

    def _save(self, name: str, metrics: dict | None = None) -> Path:
        path = self.run_dir / name
        if self.context.is_main:
            if not _params_finite(self.bare_model):
                raise UserError(
                    f"the model's weights hold NaN or infinite values: {name} was not written, "
                    "earlier checkpoints are kept; lower optim.lr or set train.grad_clip"
                )
            save_checkpoint(self.checkpoint_state(metrics), path)
        return path

    def _truncate_metrics(self, epochs_done: int) -> None:
        """Drop records of epochs after the checkpoint: they are about to be trained again."""
        path = self.run_logger.metrics_path
        if not path.is_file():
            return
        import json

        kept = [
            line
            for line in path.read_text().splitlines()
            if json.loads(line)["epoch"] <= epochs_done
        ]
        temporary = path.with_suffix(".tmp")
        temporary.write_text("".join(line + "\n" for line in kept))
        temporary.replace(path)

    def fit(self) -> dict:
        """Train the remaining epochs. Returns the last validation metrics."""
        config, state = self.config, self.state
        epochs = config.train.epochs
        key = config.train.key_metric
        previous = _install_signal_handlers(self.stop)
        metrics: dict = {}
        try:
            if state.epoch >= epochs:
                logger.info(
                    "the run already has %d of %d epochs: nothing to do", state.epoch, epochs
                )
            while state.epoch < epochs:
                epoch = state.epoch
                self.train_sampler.set_epoch(
                    epoch, start=state.epoch_batches * config.train.batch_size
                )
                started = time.perf_counter()
                result = self.trainer.train_one_epoch(self.train_loader, epoch, epochs)
                if result.interrupted:
                    path = self._save("last.pt")
                    raise TrainingInterrupted(
                        f"stopped by {self.stop.signal_name} in epoch {epoch + 1} after step "
                        f"{state.step}; saved {path}: continue with --resume {path}",
                        self.stop.signal_number,
                    )
                metrics, kept = self.trainer.evaluate(self.val_loader, config.train.log_images)
                if not steps_per_iteration(self.scheduler):
                    self.scheduler.step(metrics["loss"])
                state.epoch += 1
                improved = metrics[key] is not None and metrics[key] > state.best_metric
                if improved:
                    state.best_metric = metrics[key]
                self._save("last.pt", metrics)
                if improved and self.context.is_main:
                    copy_checkpoint(self.run_dir / "last.pt", self.run_dir / "best.pt")
                self._log_epoch(result, metrics, kept, time.perf_counter() - started, improved)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.run_logger.close()
        return metrics

    def _log_epoch(self, result, metrics: dict, kept: list, seconds: float, improved: bool) -> None:
        state, key = self.state, self.config.train.key_metric
        lr = self.optimizer.param_groups[0]["lr"]
        record = {
            "epoch": state.epoch,
            "step": state.step,
            "lr": lr,
            "train_loss": result.loss,
            "train_images_per_second": result.images_per_second,
            "val_loss": metrics["loss"],
            "val_mIoU": metrics["mIoU"],
            "val_mDice": metrics["mDice"],
            "val_pixel_accuracy": metrics["pixel_accuracy"],
            "per_class": metrics["per_class"],
            "seconds": seconds,
        }
        self.run_logger.epoch_record(record)
        scalars = {
            "val/loss": metrics["loss"],
            "val/mIoU": metrics["mIoU"],
            "val/mDice": metrics["mDice"],
            "val/pixel_accuracy": metrics["pixel_accuracy"],
            "train/epoch_loss": result.loss,
            "train/epoch_images_per_second": result.images_per_second,
        }
        for name, scores in metrics["per_class"].items():
            scalars[f"val_IoU/{name}"] = scores["iou"]
            scalars[f"val_Dice/{name}"] = scores["dice"]
        self.run_logger.scalars(scalars, state.epoch)
        self.run_logger.images(
            "val/input_truth_prediction",
            _panel(kept, self.scheme, self.mean, self.std),
            state.epoch,
        )
        self.run_logger.flush()
        if self.context.is_main:
            best = f" (best {key}, saved best.pt)" if improved else ""
            logger.info(
                "epoch %d/%d  train loss %.4f  val loss %.4f  mIoU %.4f  mDice %.4f  "
                "%.1f img/s  %.0fs%s",
                state.epoch,
                self.config.train.epochs,
                result.loss,
                metrics["loss"],
                metrics["mIoU"] or 0.0,
                metrics["mDice"] or 0.0,
                result.images_per_second,
                seconds,
                best,
            )


def run_training(
    config: Config, *, resume: Path | None = None, init_from: Path | None = None
) -> dict:
    """Train as configured (possibly one process of a torchrun job). Returns the last
    validation metrics."""
    context = setup_distributed(config.train.device)
    try:
        run = TrainingRun(config, context, resume=resume, init_from=init_from)
        return run.fit()
    finally:
        cleanup_distributed()
