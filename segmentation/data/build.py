"""Datasets for a run, built from the data section of its configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from segmentation.config import DataConfig
from segmentation.data.cityscapes import find_cityscapes
from segmentation.data.dataset import Sample, SegmentationDataset
from segmentation.data.headers import check_headers
from segmentation.data.io import read_label_ids
from segmentation.data.kitti import find_kitti_road, read_kitti_codes
from segmentation.data.labels import LabelScheme, get_scheme
from segmentation.data.transforms import evaluation_transform, training_transform


def scheme_for(config: DataConfig) -> LabelScheme:
    return get_scheme(config.dataset, config.labels)


def label_reader(dataset: str) -> Callable[[Path], np.ndarray]:
    """How a dataset's label files become stored label values."""
    return read_kitti_codes if dataset == "kitti" else read_label_ids


def find_samples(config: DataConfig, split: str) -> list[Sample]:
    """Labelled samples of a split: "train" / "val" resolve through the config (held-out
    cities, coarse extra data, the KITTI validation fraction); other names are used as they are.
    """
    root = Path(config.root)
    skip = config.skip_missing_labels
    if config.dataset == "kitti":
        mode = scheme_for(config).name
        return find_kitti_road(
            root, split, mode=mode, val_fraction=config.val_fraction, skip_missing_labels=skip
        )
    holdout = config.holdout_cities
    if split == "train":
        samples = find_cityscapes(
            root, config.train_split, exclude_cities=holdout, skip_missing_labels=skip
        )
        if config.coarse:
            samples += find_cityscapes(
                root, "train_extra", annotation="gtCoarse", skip_missing_labels=skip
            )
        return samples
    if split == "val" and holdout:
        return find_cityscapes(root, config.train_split, cities=holdout, skip_missing_labels=skip)
    if split == "val":
        split = config.val_split
    return find_cityscapes(root, split, skip_missing_labels=skip)


def build_training_datasets(
    config: DataConfig,
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train, val) datasets at the configured training size; val is resized, not augmented.
    Every file's header is checked first: a broken one found after an epoch costs the epoch.
    Their images are uint8: the engine normalizes them on the device (data/normalize.py)."""
    scheme = scheme_for(config)
    train_samples, val_samples = find_samples(config, "train"), find_samples(config, "val")
    check_headers(train_samples + val_samples, config.dataset)
    height, width = config.image_size
    augment = config.augment
    train_transform = training_transform(
        height,
        width,
        crop_scale=augment.crop_scale,
        hflip=augment.hflip,
        color=augment.color,
        weather=augment.weather,
    )
    reader = label_reader(config.dataset)
    train = SegmentationDataset(train_samples, scheme, train_transform, reader)
    val_transform = evaluation_transform(height, width)
    val = SegmentationDataset(val_samples, scheme, val_transform, reader)
    return train, val
