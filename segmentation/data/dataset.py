"""The torch Dataset that turns image/label file pairs into training samples."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from segmentation.data.headers import image_orientation, size_mismatch
from segmentation.data.io import read_rgb
from segmentation.data.labels import LabelScheme
from segmentation.data.scale_jitter import ScaleJitter, pad_to
from segmentation.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One image on disk and, when it has one, its label file.

    name: the file's identifying prefix, e.g. "frankfurt_000000_000294" or "um_000012",
        used to name exported predictions. group: the city (Cityscapes) or the road category
        (KITTI um/umm/uu), used for per-group scores.
    """

    image_path: Path
    label_path: Path | None
    name: str
    group: str


class SampleReader(Protocol):
    """Where a dataset's decoded frames come from: the files (FileReader) or a cache of them
    (data/cache). Both give the same arrays, so everything after reading is shared."""

    def read(self, index: int, sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
        """(image (H, W, 3) uint8 RGB, its stored label values or None when unlabelled)."""
        ...


class FileReader:
    """Decodes a sample's image and label files; refuses labels of another size."""

    def __init__(self, read_label: Callable[[Path], np.ndarray]) -> None:
        self.read_label = read_label

    def read(self, index: int, sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
        image = read_rgb(sample.image_path)
        if sample.label_path is None:
            return image, None
        stored = self.read_label(sample.label_path)
        _check_same_size(sample, stored, image)
        return image, stored


class SegmentationDataset(Dataset):
    """Samples -> dict(image (H, W, 3) uint8 RGB, target (H, W) uint8, index int).

    Images stay uint8 and HWC, as the transforms leave them: a quarter of float32's bytes
    through the DataLoader, and no layout change on the CPU. The model's device normalizes
    them and views them as (B, 3, H, W) in one step (data/normalize.py, engine.loop.to_device).

    read_label: reads a label file into stored values (Cityscapes label ids, KITTI colour
        codes), which `scheme` maps to class indices or IGNORE_INDEX (see labels.py).
    transform: an albumentations pipeline, or a callable alike (scale_jitter.ScaleJitter),
        applied as `transform(image=..., mask=...)`; it must leave (H, W, 3) uint8 images (no
        Normalize). One with a `pad_size` has its results padded to that size.
    Unlabeled samples (label_path None) give no "target".
    reader: where the decoded frames come from; None: the files, read with read_label.

    An item may be an index or an (index, seed) pair: with a seed, the random augmentations of
    that sample are a pure function of it, so that a run reproduces exactly whatever the number
    of DataLoader workers, and a resumed run continues where it stopped (see sampler.py).
    """

    def __init__(
        self,
        samples: list[Sample],
        scheme: LabelScheme,
        transform: A.Compose | ScaleJitter,
        read_label: Callable[[Path], np.ndarray],
        reader: SampleReader | None = None,
    ) -> None:
        self.samples = samples
        self.scheme = scheme
        self.transform = transform
        self.read_label = read_label
        self.reader = reader if reader is not None else FileReader(read_label)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        index, seed = item if isinstance(item, tuple) else (item, None)
        if seed is not None:
            self.transform.set_random_seed(seed)
        sample = self.samples[index]
        image, stored = self.reader.read(index, sample)
        # A transform whose crops may be smaller than its output (scale jitter) names the size:
        # padded here, after encoding, with IGNORE_INDEX, which every scheme ignores.
        pad_size = getattr(self.transform, "pad_size", None)
        if stored is None:
            transformed = self.transform(image=image)
            image = transformed["image"]
            if pad_size is not None:
                image, _ = pad_to(image, None, pad_size)
            return {"image": _to_hwc_tensor(image), "index": index}
        transformed = self.transform(image=image, mask=stored)
        # Nearest-neighbour geometry commutes with the lookup table, so mapping the smaller,
        # transformed label costs less than mapping the full-size file.
        stored = transformed["mask"]
        unknown = self.scheme.count_unknown(stored)
        if unknown:
            logger.warning(
                "%s: %d pixels hold label values outside the '%s' scheme; they are ignored",
                sample.label_path,
                unknown,
                self.scheme.name,
            )
        target = self.scheme.encode(np.ascontiguousarray(stored))
        image = transformed["image"]
        if pad_size is not None:
            image, target = pad_to(image, target, pad_size)
        return {
            "image": _to_hwc_tensor(image),
            "target": torch.from_numpy(target),
            "index": index,
        }


def _check_same_size(sample: Sample, stored: np.ndarray, image: np.ndarray) -> None:
    if stored.shape[:2] != image.shape[:2]:
        # The image as read may be turned by its EXIF orientation: the message says so.
        raise UserError(
            size_mismatch(
                sample.label_path,
                (stored.shape[1], stored.shape[0]),
                sample.image_path,
                (image.shape[1], image.shape[0]),
                image_orientation(sample.image_path),
            )
        )


def _to_hwc_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> the same pixels as a contiguous tensor, without a copy for the
    contiguous arrays that albumentations' OpenCV transforms return (a numpy view with
    negative strides, which torch cannot wrap, would be copied)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise TypeError(
            f"transforms must leave (H, W, 3) uint8 images, got {image.dtype} "
            f"{image.shape}: a Normalize belongs on the device (data/normalize.py)"
        )
    if not image.flags.writeable:
        # Transforms that left a frame as it was (a resize to its own size) pass on the
        # read-only view of a cache's mapping: the tensor needs memory of its own.
        image = image.copy()
    return torch.from_numpy(np.ascontiguousarray(image))


class FullResolutionDataset(Dataset):
    """Samples as stored, for evaluation and inference at the labels' own resolution:
    dict(image (3, H, W) uint8 RGB, stored (H, W) uint8 label values when labelled, index).

    Normalization and resizing happen on the model's device, where they are cheap.
    """

    def __init__(
        self, samples: list[Sample], read_label: Callable[[Path], np.ndarray] | None = None
    ) -> None:
        self.samples = samples
        self.read_label = read_label

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = read_rgb(sample.image_path)
        item = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))}
        item["index"] = index
        if sample.label_path is not None and self.read_label is not None:
            stored = self.read_label(sample.label_path)
            _check_same_size(sample, stored, image)
            item["stored"] = torch.from_numpy(stored)
        return item


def collate_size_groups(items: list[dict]) -> list[dict]:
    """FullResolutionDataset items -> one batch per image size (KITTI's sizes vary), stacked
    in the worker: the DataLoader then pins the stacked tensors, and their copies to a GPU do
    not wait."""
    batches = []
    for positions in size_groups([item["image"] for item in items]):
        group = [items[position] for position in positions]
        batch = {
            "image": torch.stack([item["image"] for item in group]),
            "index": [item["index"] for item in group],
        }
        if "stored" in group[0]:
            batch["stored"] = torch.stack([item["stored"] for item in group])
        batches.append(batch)
    return batches


def size_groups(images: list[torch.Tensor]) -> list[list[int]]:
    """Positions of equally sized images, so that each group stacks into one batch."""
    groups: dict[tuple, list[int]] = {}
    for position, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(position)
    return list(groups.values())
