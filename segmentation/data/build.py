"""Datasets for a run, built from the data section of its configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from segmentation.config import DataConfig
from segmentation.data.cache import open_cache
from segmentation.data.cityscapes import find_cityscapes
from segmentation.data.dataset import Sample, SegmentationDataset
from segmentation.data.folder import (
    dataset_classes,
    find_folder,
    folder_label_reader,
    folder_scheme,
    read_classes,
)
from segmentation.data.headers import check_headers
from segmentation.data.io import read_label_ids
from segmentation.data.kitti import find_kitti_road, read_kitti_codes
from segmentation.data.labels import LabelScheme, get_scheme
from segmentation.data.transforms import evaluation_transform, training_transform


def with_dataset_classes(config: DataConfig) -> DataConfig:
    """A folder dataset's config with data.classes filled from ROOT/classes.yaml (checked
    against the classes it carries already, on --resume), so that the run's config.yaml and
    checkpoints hold the classes; other datasets' configs as they are."""
    if config.dataset != "folder":
        return config
    return config.model_copy(update={"classes": dataset_classes(config)})


def scheme_for(config: DataConfig) -> LabelScheme:
    if config.dataset == "folder":
        return folder_scheme(config.classes or read_classes(Path(config.root)))
    return get_scheme(config.dataset, config.labels)


def label_reader(data: DataConfig | str) -> Callable[[Path], np.ndarray]:
    """How a dataset's label files become stored label values; the folder dataset's depend
    on its classes, so it needs the data config, not only the dataset's name."""
    dataset = data if isinstance(data, str) else data.dataset
    if dataset == "folder":
        if isinstance(data, str):
            raise ValueError("label_reader needs the data config of a folder dataset")
        return folder_label_reader(data.classes or read_classes(Path(data.root)))
    return read_kitti_codes if dataset == "kitti" else read_label_ids


def label_kind(config: DataConfig) -> str:
    """What the start-up header check expects of label files (see headers.py)."""
    if config.dataset != "folder":
        return config.dataset
    classes = config.classes or read_classes(Path(config.root))
    return f"folder:{classes.mask_format}"


def find_samples(config: DataConfig, split: str) -> list[Sample]:
    """Labelled samples of a split: "train" / "val" resolve through the config (held-out
    cities, coarse extra data, the KITTI validation fraction); other names are used as they are.
    """
    root = Path(config.root)
    skip = config.skip_missing_labels
    if config.dataset == "folder":
        dataset_classes(config)  # masks are read as these classes: the file must agree
        named = {"train": config.train_split, "val": config.val_split}
        labelled = split in named
        return find_folder(
            root, named.get(split, split), labelled=labelled, skip_missing_labels=skip
        )
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


def label_reader_identity(config: DataConfig) -> dict:
    """How label files become stored values, as a cache's manifest records it: the dataset's
    reader, and a folder dataset's classes (its colours or indices decide the values)."""
    if config.dataset == "folder":
        classes = config.classes or read_classes(Path(config.root))
        return {"dataset": "folder", "classes": classes.model_dump(mode="json")}
    return {"dataset": config.dataset, "reader": label_reader(config.dataset).__name__}


def build_training_datasets(
    config: DataConfig, *, rebuild_cache: bool = False
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train, val) datasets at the configured training size; val is resized, not augmented.
    Every file's header is checked first: a broken one found after an epoch costs the epoch.
    Their images are uint8: the engine normalizes them on the device (data/normalize.py).

    With data.cache both read the decoded-sample cache, built first when it is missing (or
    when `rebuild_cache`): the same samples, the same augmentations."""
    scheme = scheme_for(config)
    train_samples, val_samples = find_samples(config, "train"), find_samples(config, "val")
    check_headers(train_samples + val_samples, label_kind(config))
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
    train = SegmentationDataset(
        train_samples, scheme, train_transform, read_label, reader=cached["train"]
    )
    val_transform = evaluation_transform(height, width)
    val = SegmentationDataset(val_samples, scheme, val_transform, read_label, reader=cached["val"])
    return train, val
