"""Datasets for a run, built from the data section of its configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import albumentations as A
import numpy as np

from segmentation.config import DataConfig
from segmentation.data.cache import open_cache
from segmentation.data.dataset import Sample, SegmentationDataset
from segmentation.data.headers import check_headers
from segmentation.data.kinds.catalog import kind_named, kind_of
from segmentation.data.labels import LabelScheme
from segmentation.data.scale_jitter import ScaleJitter
from segmentation.data.transforms import evaluation_transform, training_transform


def with_dataset_classes(config: DataConfig) -> DataConfig:
    """The config a run saves: with what the dataset's files add (a folder dataset's
    data.classes from ROOT/classes.yaml, checked against the classes it carries already, on
    --resume), so that the run's config.yaml and checkpoints hold it."""
    return kind_of(config).resolved(config)


def scheme_for(config: DataConfig) -> LabelScheme:
    return kind_of(config).scheme(config)


def label_reader(data: DataConfig | str) -> Callable[[Path], np.ndarray]:
    """How a dataset's label files become stored label values; given only a dataset's name,
    the reader of a kind whose reader does not depend on its config."""
    if isinstance(data, str):
        return kind_named(data).label_reader(None)
    return kind_of(data).label_reader(data)


def find_samples(config: DataConfig, split: str) -> list[Sample]:
    """Labelled samples of a split: "train" / "val" resolve through the config (held-out
    cities, coarse extra data, the KITTI validation fraction); other names are used as they are.
    """
    return kind_of(config).find_samples(config, split)


def label_reader_identity(config: DataConfig) -> dict:
    """How label files become stored values, as a cache's manifest records it."""
    return kind_of(config).reader_identity(config)


def build_training_datasets(
    config: DataConfig, *, rebuild_cache: bool = False
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train, val) datasets: train augmented in the config's style (training_transform_for),
    val resized to data.image_size, not augmented.
    Every file's header is checked first: a broken one found after an epoch costs the epoch.
    Their images are uint8: the engine normalizes them on the device (data/normalize.py).

    With data.cache both read the decoded-sample cache, built first when it is missing (or
    when `rebuild_cache`): the same samples, the same augmentations."""
    scheme = scheme_for(config)
    train_samples, val_samples = find_samples(config, "train"), find_samples(config, "val")
    check_headers(train_samples + val_samples, kind_of(config).label_format(config))
    read_label = label_reader(config)
    cached = {"train": None, "val": None}
    if config.cache is not None:
        cached = open_cache(
            Path(config.cache),
            {"train": train_samples, "val": val_samples},
            read_label,
            scale=config.cache_scale,
            scheme=scheme.name,
            label_reader=label_reader_identity(config),
            rebuild=rebuild_cache,
        )
    # Cached frames come at data.cache_scale of their side: the scale-jitter ratios are
    # relative to the files' pixels whichever reader serves them.
    frame_scale = config.cache_scale if config.cache is not None else 1.0
    train_transform = training_transform_for(config, scheme, frame_scale)
    train = SegmentationDataset(
        train_samples, scheme, train_transform, read_label, reader=cached["train"]
    )
    height, width = config.image_size
    val_transform = evaluation_transform(height, width)
    val = SegmentationDataset(val_samples, scheme, val_transform, read_label, reader=cached["val"])
    return train, val


def training_transform_for(
    config: DataConfig, scheme: LabelScheme, frame_scale: float = 1.0
) -> A.Compose | ScaleJitter:
    """The training augmentation of the config's style: scale jitter at native resolution when
    data.augment.scale is set, else the original recipe at data.image_size.

    frame_scale: the fraction of the files' side that the frames are read at (a cache's)."""
    augment = config.augment
    if augment.scale_jitter:
        return ScaleJitter(
            crop_size=config.crop_size,
            scale=augment.scale,
            base_size=config.base_size,
            cat_max_ratio=augment.cat_max_ratio,
            hflip=augment.hflip,
            photometric=augment.photometric,
            encode=scheme.encode,
            frame_scale=frame_scale,
        )
    height, width = config.image_size
    return training_transform(
        height,
        width,
        crop_scale=augment.crop_scale,
        hflip=augment.hflip,
        color=augment.color,
        weather=augment.weather,
    )
