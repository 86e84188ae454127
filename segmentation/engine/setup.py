"""Building a training run from its config, in order: checkpoints to start from, data, model,
optimization, restored state. `build_training` calls them; each is usable alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from segmentation.checkpoint import USE_ENTRIES, load_checkpoint, load_model_weights
from segmentation.config import Config, save_config
from segmentation.data.build import build_training_datasets, label_reader, scheme_for
from segmentation.data.class_counts import pixel_counts
from segmentation.data.dataset import SegmentationDataset
from segmentation.data.labels import LabelScheme
from segmentation.data.loading import make_loader
from segmentation.data.normalize import Normalizer
from segmentation.engine.compile import compile_mode_for, compile_model
from segmentation.engine.distributed import DistributedContext, any_process
from segmentation.engine.full_resolution import full_resolution_loader
from segmentation.engine.optim import build_optimizer, build_scheduler
from segmentation.engine.resume import (
    check_compatible,
    check_newest,
    check_resumable,
    check_run_directory,
    new_run_id,
    run_id_of,
)
from segmentation.engine.run_dir import RunDirectory
from segmentation.engine.run_logger import RunLogger, logger
from segmentation.engine.sampler import EpochSampler
from segmentation.engine.state import Training, TrainState
from segmentation.errors import UserError
from segmentation.losses import build_loss, class_weights_from_pixel_counts
from segmentation.model_setup import model_for
from segmentation.models import check_input_size, encoder_normalization, required_input_multiple


@dataclass
class StartingPoint:
    """The checkpoints a run starts from: all of one (--resume) or its weights (--init-from)."""

    resume: dict | None = None
    init_from: dict | None = None


@dataclass
class DataPipeline:
    train_set: SegmentationDataset
    train_sampler: EpochSampler
    train_loader: DataLoader
    val_loader: DataLoader


def load_starting_point(
    config: Config, resume: Path | None, init_from: Path | None
) -> StartingPoint:
    """Read and check the checkpoints to start from, before anything slow is built."""
    start = StartingPoint()
    if resume is not None:
        start.resume = load_checkpoint(resume, needs=USE_ENTRIES)
        check_resumable(start.resume, config, resume)
        check_newest(start.resume, Path(resume))
        check_run_directory(start.resume, Path(resume))
    if init_from is not None:
        start.init_from = load_checkpoint(init_from, needs=USE_ENTRIES)
        check_compatible(start.init_from, config, init_from)
    arch = config.model.arch
    for key, (height, width) in config.data.input_sizes().items():
        check_input_size(height, width, required_input_multiple(arch), arch, name=key)
    return start


def build_datasets_once_per_node(
    config: Config, context: DistributedContext
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """build_training_datasets; with data.cache in a multi-process job, local rank 0 of each
    node first (it builds the node's copy when it is missing) while the node's other ranks
    wait, then they open it. A failure anywhere stops every process (none waits forever)."""
    if config.data.cache is None or not context.enabled:
        return build_training_datasets(config.data)
    builds = context.local_rank == 0
    datasets, failure = None, None
    if builds:
        try:
            datasets = build_training_datasets(config.data)
        except Exception as error:  # re-raised below, after the other processes hear of it
            failure = error
    # The wait: the ranks of other nodes and this node's other ranks, until every builder is
    # done. A build longer than the process group's timeout (30 min) is better done ahead
    # with `python -m segmentation.data.cache`.
    if any_process(failure is not None, context):
        if failure is not None:
            raise failure
        error = UserError(
            f"data.cache {config.data.cache} could not be prepared on another process (local "
            "rank 0 of a node): see its error"
        )
        error.silent = not context.is_main  # said once, by the main process
        raise error
    if not builds:
        datasets = build_training_datasets(config.data)
    return datasets


def build_data(config: Config, context: DistributedContext) -> DataPipeline:
    """Datasets, this process's shard of every epoch, and the loaders over them. Their images
    are uint8 (H, W, 3): `Training.normalizer` normalizes them on the device."""
    train_set, val_set = build_datasets_once_per_node(config, context)
    batch_size, world_size = config.train.batch_size, context.world_size
    if len(train_set) < batch_size * world_size:
        raise UserError(
            f"the training split has {len(train_set)} images, fewer than one batch "
            f"({batch_size} x {world_size} processes): lower --batch-size"
        )
    shard = {"rank": context.rank, "world_size": world_size}
    train_sampler = EpochSampler(len(train_set), shuffle=True, seed=config.train.seed, **shard)
    val_sampler = EpochSampler(len(val_set), shuffle=False, pad=False, seeded=False, **shard)
    loader_options = {"batch_size": batch_size, "workers": config.data.workers}
    if config.train.val_mode == "resized":
        val_loader = make_loader(
            val_set,
            sampler=val_sampler,
            device=context.device,
            batch_size=config.train.val_batch_size or batch_size,
            workers=config.data.workers,
        )
    else:  # the frames as stored, predicted as evaluate.py does
        val_loader = full_resolution_loader(
            config, val_set.samples, label_reader(config.data), context
        )
    return DataPipeline(
        train_set=train_set,
        train_sampler=train_sampler,
        train_loader=make_loader(
            train_set,
            sampler=train_sampler,
            device=context.device,
            drop_last=True,
            **loader_options,
        ),
        val_loader=val_loader,
    )


def starting_model(
    config: Config,
    scheme: LabelScheme,
    device: torch.device,
    start: StartingPoint,
    init_from: Path | None = None,
) -> nn.Module:
    """The model a run starts from, on its device: the configured encoder weights for a run
    from scratch, the --init-from checkpoint's weights, or random ones that --resume replaces."""
    torch.manual_seed(config.train.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = config.train.cudnn_benchmark
    from_checkpoint = start.resume is not None or start.init_from is not None
    pretrained = None if from_checkpoint else config.model.pretrained
    model = model_for(config, scheme, pretrained)
    if start.init_from is not None:
        load_model_weights(model, start.init_from["model"], init_from)
    model.to(device)
    if config.model.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def class_weights(config: Config, train_set, scheme: LabelScheme) -> torch.Tensor | None:
    """loss.class_weights as a tensor: given, or `auto` from the training labels' pixels."""
    weights = config.loss.class_weights
    if weights is None:
        return None
    if weights == "auto":
        counts = pixel_counts(train_set.samples, scheme, label_reader(config.data))
        return torch.as_tensor(class_weights_from_pixel_counts(counts), dtype=torch.float32)
    if isinstance(weights, str):
        raise UserError(f"loss.class_weights '{weights}' is not valid: use null, auto or a list")
    if len(weights) != scheme.num_classes:
        raise UserError(
            f"loss.class_weights has {len(weights)} values but the '{scheme.name}' scheme has "
            f"{scheme.num_classes} classes ({', '.join(scheme.class_names)})"
        )
    return torch.tensor(weights, dtype=torch.float32)


def build_optimization(
    config: Config, model: nn.Module, batches_per_epoch: int, device: torch.device
) -> tuple[torch.optim.Optimizer, object, torch.amp.GradScaler]:
    """Optimizer, learning-rate schedule over the whole run, and the fp16 gradient scaler."""
    optimizer = build_optimizer(model, config.optim)
    steps_per_epoch = math.ceil(batches_per_epoch / config.train.accumulate)
    total_iters = config.train.iters or steps_per_epoch * config.train.epochs
    scheduler = build_scheduler(optimizer, config.optim, total_iters)
    scaler = torch.amp.GradScaler(device.type, enabled=config.train.amp == "fp16")
    return optimizer, scheduler, scaler


def restore_state(training: Training, checkpoint: dict, path: Path | None = None) -> None:
    """Continue exactly where the checkpoint (at `path`) stopped: weights, optimizer,
    schedule, scaler, progress and the random number generators."""
    load_model_weights(training.bare_model, checkpoint["model"], path)
    training.optimizer.load_state_dict(checkpoint["optimizer"])
    training.scheduler.load_state_dict(checkpoint["scheduler"])
    saved_amp = checkpoint["config"]["train"]["amp"]
    if training.scaler.is_enabled() and checkpoint["scaler"]:
        training.scaler.load_state_dict(checkpoint["scaler"])
    elif saved_amp != training.config.train.amp:
        logger.warning(
            "resuming a train.amp=%s run with train.amp=%s: %s",
            saved_amp,
            training.config.train.amp,
            "a new fp16 gradient scaler starts"
            if training.scaler.is_enabled()
            else "its fp16 gradient scaler is dropped",
        )
    training.state = TrainState(**checkpoint["state"])
    rng = checkpoint["rng"]
    torch.set_rng_state(rng["torch"])
    if training.device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], training.device)


def convert_sync_batchnorm(model: nn.Module, config: Config, context: DistributedContext):
    """SyncBatchNorm in a multi-GPU job if asked (the parameters stay the same objects)."""
    if not (context.enabled and config.model.sync_batchnorm):
        return model
    if context.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if context.is_main:
        logger.warning("model.sync_batchnorm needs CUDA: plain BatchNorm on the CPU")
    return model


def wrap_model(
    model: nn.Module,
    config: Config,
    context: DistributedContext,
    state: TrainState,
    compile_mode: str = "off",
) -> nn.Module:
    """What the loop calls: DistributedDataParallel in a multi-process job, compiled in
    `compile_mode` (`Training.compile_mode`: train.compile as the device allows) unless off.
    The loop wraps again when the encoder is unfrozen: only frozen parameters make DDP look
    for parameters without gradients, a search that costs every step."""
    if context.enabled:
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[context.device.index] if context.device.type == "cuda" else None,
            find_unused_parameters=state.step < config.train.freeze_encoder_iters,
        )
    if compile_mode != "off":
        model = compile_model(model, compile_mode, context.device)
    return model


def build_training(
    config: Config, context: DistributedContext, resume: Path | None, init_from: Path | None
) -> Training:
    """Everything one process of a run needs, checked before the run directory is made."""
    start = load_starting_point(config, resume, init_from)
    scheme = scheme_for(config.data)
    data = build_data(config, context)
    run_directory = RunDirectory(Path(config.output_dir))
    # A resumed run keeps its id; only the main process's id is written anywhere.
    run_id = run_id_of(start.resume) if start.resume is not None else new_run_id()
    if context.is_main:  # only once the inputs are known good: a failed start leaves no folder
        run_directory.claim(resuming=start.resume is not None, run_id=run_id)
    model = starting_model(config, scheme, context.device, start, init_from)
    weights = class_weights(config, data.train_set, scheme)
    loss_fn = build_loss(
        config.loss.name, scheme.num_classes, class_weights=weights, **config.loss.options
    ).to(context.device)
    optimizer, scheduler, scaler = build_optimization(
        config, model, len(data.train_loader), context.device
    )
    training = Training(
        config=config,
        scheme=scheme,
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        train_loader=data.train_loader,
        val_loader=data.val_loader,
        train_sampler=data.train_sampler,
        context=context,
        normalizer=Normalizer(*encoder_normalization(config.model.backbone)),
        run_directory=run_directory,
        run_id=run_id,
    )
    if start.resume is not None:
        restore_state(training, start.resume, resume)
    training.model = convert_sync_batchnorm(training.model, config, context)
    training.compile_mode = compile_mode_for(
        config.train.compile, context.device, warn=context.is_main
    )
    training.model = wrap_model(
        training.model, config, context, training.state, training.compile_mode
    )
    training.compile_pending = training.compile_mode != "off"
    # TensorBoard drops events past the starting step: those of a crashed run after its last
    # checkpoint, or of a failed start in this folder.
    purge_step = training.state.step if start.resume is not None else None
    if purge_step is not None and config.train.iters is not None:
        # A run of train.iters logs everything at optimizer steps: what it logged at the
        # saved step (its training scalars) is the checkpoint's, kept.
        purge_step += 1
    if run_directory.reused_failed_start:
        purge_step = 0
    training.run_logger = RunLogger(training.run_dir, context.is_main, purge_step=purge_step)
    if context.is_main:
        save_config(config, training.run_dir / "config.yaml")
    return training
