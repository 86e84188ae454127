"""Validation at the evaluation protocol (train.val_mode whole or slide): the validation frames
at their own resolution, predicted by the code evaluate.py runs (TrainedModel.predict), scored
by the same confusion matrix, so that best.pt is chosen on the number evaluate.py reports."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from segmentation.config import Config
from segmentation.data.dataset import FullResolutionDataset, Sample, collate_size_groups
from segmentation.data.loading import make_loader
from segmentation.engine.distributed import DistributedContext
from segmentation.engine.run_logger import ValidationPictures, logger
from segmentation.engine.sampler import EpochSampler
from segmentation.evaluation.loop import evaluate
from segmentation.metrics import ConfusionMatrix
from segmentation.models import encoder_normalization, required_input_multiple
from segmentation.prediction.predict import PredictionOptions, check_window
from segmentation.prediction.trained_model import TrainedModel


def validation_window(config: Config) -> tuple[int, int]:
    """train.val_window, or the training size (data.crop_size in the scale-jitter style)."""
    return tuple(config.train.val_window or config.data.train_input_size)


def prediction_options(config: Config) -> PredictionOptions:
    """The prediction of train.val_mode, as evaluate.py's flags give it (slide:
    --sliding-window --window --stride)."""
    if config.train.val_mode == "slide":
        return PredictionOptions(
            sliding_window=True, window=validation_window(config), stride=config.train.val_stride
        )
    return PredictionOptions(whole_frame=True)


def full_resolution_loader(
    config: Config, samples: list[Sample], read_label, context: DistributedContext
) -> DataLoader:
    """This process's shard of the validation frames as stored, one batch per frame size
    (a list of size groups per loader batch): train.val_batch_size frames, 1 by default."""
    if config.train.val_mode == "slide" and samples:
        # Refused now rather than after the first train.val_every steps (the frames of a
        # dataset share one size, but every frame is checked again when it is predicted).
        frame = tuple(FullResolutionDataset(samples[:1])[0]["image"].shape[-2:])
        check_window(validation_window(config), frame, required_input_multiple(config.model.arch))
    sampler = EpochSampler(
        len(samples),
        shuffle=False,
        pad=False,
        seeded=False,
        rank=context.rank,
        world_size=context.world_size,
    )
    return make_loader(
        FullResolutionDataset(samples, read_label),
        batch_size=config.train.val_batch_size or 1,
        workers=config.data.workers,
        device=context.device,
        sampler=sampler,
        collate_fn=collate_size_groups,
    )


def trained_model(training) -> TrainedModel:
    """The model being trained, as evaluate.py rebuilds it from a checkpoint."""
    config = training.config
    mean, std = encoder_normalization(config.model.backbone)
    return TrainedModel(
        model=training.bare_model,
        config=config,
        scheme=training.scheme,
        head=config.model.head,
        mean=tuple(mean),
        std=tuple(std),
        divisor=required_input_multiple(config.model.arch),
        checkpoint=Path(config.output_dir),
        device=training.device,
        amp=config.train.amp,
    )


@torch.no_grad()
def validate_full_resolution(
    training, batches: Iterable, stopped: Callable[[], bool]
) -> tuple[dict, ValidationPictures] | None:
    """Confusion-matrix metrics of the full-resolution validation (its loss is None: the
    merged predictions are probabilities, not the logits the loss takes) and the seconds it
    took. `batches`: the loader's batches until a stop is agreed, when `stopped()` is then
    true and None is returned."""
    started = time.perf_counter()
    trained = trained_model(training)
    options = prediction_options(training.config)
    lookup = torch.as_tensor(training.scheme.lookup, device=training.device).long()
    keep = training.config.train.log_images
    panel: list = []

    def predict(group: dict) -> tuple[torch.Tensor, torch.Tensor]:
        classes, _ = trained.predict(group["image"], options, probabilities=False)
        target = lookup[group["stored"].to(training.device, non_blocking=True).long()]
        for image, label, prediction in zip(group["image"], target, classes):
            same_size = not panel or panel[0][1].shape == label.shape
            if len(panel) < keep and same_size:  # one picture: frames of one size
                panel.append((image.permute(1, 2, 0).cpu(), label.cpu(), prediction.cpu()))
        return classes, target

    groups = (group for loader_batch in batches for group in loader_batch)
    matrix = ConfusionMatrix(training.scheme.num_classes, training.device)
    evaluate(predict, groups, matrix, show_progress=False)
    if stopped():
        return None
    metrics = matrix.compute(training.scheme.class_names)
    metrics["loss"] = None
    metrics["seconds"] = time.perf_counter() - started
    if training.context.is_main:
        logger.info(
            "validation (%s, full resolution) took %.1f s",
            training.config.train.val_mode,
            metrics["seconds"],
        )
    pictures = ValidationPictures(panel=panel, confusion=matrix.matrix.cpu().numpy())
    return metrics, pictures
