"""Finding KITTI road image/ground-truth pairs in the data_road layout."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np

from segmentation.data.dataset import Sample
from segmentation.data.io import read_label_rgb
from segmentation.data.labels import kitti_codes
from segmentation.errors import UserError

CATEGORIES = ("um", "umm", "uu")
SPLITS = ("train", "val", "test")
IMAGE_NAME = re.compile(r"^(um|umm|uu)_(\d{6})\.png$")
GT_NAME = re.compile(r"^(um|umm|uu)_(road|lane)_(\d{6})\.png$")
LAYOUT = (
    "ROOT/data_road/training/image_2/{um,umm,uu}_NNNNNN.png; "
    "ROOT/data_road/training/gt_image_2/{um_road,umm_road,uu_road,um_lane}_NNNNNN.png; "
    "ROOT/data_road/testing/image_2/{um,umm,uu}_NNNNNN.png (ROOT may also be data_road itself)"
)


def data_road_dir(root: Path) -> Path:
    """The data_road folder: ROOT/data_road, or ROOT itself when it is that folder."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"data root {root} does not exist. Expected the KITTI road layout: {LAYOUT}"
        )
    if (root / "data_road").is_dir():
        return root / "data_road"
    if (root / "training").is_dir() or (root / "testing").is_dir():
        return root
    raise UserError(f"no data_road folder in {root}. Expected the KITTI road layout: {LAYOUT}")


def gt_path(base: Path, category: str, mode: str, index: str) -> Path:
    """The ground truth of training image CATEGORY_INDEX in `mode` (road or lane)."""
    return base / "training" / "gt_image_2" / f"{category}_{mode}_{index}.png"


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"no folder {folder}. Expected the KITTI road layout: {LAYOUT}")
    images = sorted(path for path in folder.iterdir() if IMAGE_NAME.match(path.name))
    if not images:
        raise UserError(f"no um/umm/uu_NNNNNN.png images in {folder}. Expected: {LAYOUT}")
    return images


def find_kitti_road(
    root: Path,
    split: str,
    *,
    mode: str = "road",
    val_fraction: float = 0.1,
    skip_missing_labels: bool = False,
) -> list[Sample]:
    """Image/ground-truth pairs of the KITTI road benchmark.

    split: "train" and "val" divide the 289 training images, taking `val_fraction` of each
        category for validation (a fixed shuffle, the same on every machine); "test" is the
        testing images, without ground truth.
    mode: "road" ({um,umm,uu}_road ground truth) or "lane" (um_lane: ego-lane, um images only).
    """
    if split not in SPLITS:
        raise UserError(f"unknown KITTI split '{split}': use one of {', '.join(SPLITS)}")
    if mode not in ("road", "lane"):
        raise UserError(f"unknown KITTI mode '{mode}': use road or lane")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    base = data_road_dir(root)
    if split == "test":
        return [
            Sample(path, None, path.stem, path.stem.split("_")[0])
            for path in _images(base / "testing" / "image_2")
        ]
    samples, missing = [], []
    for image_path in _images(base / "training" / "image_2"):
        category, index = IMAGE_NAME.match(image_path.name).groups()
        if mode == "lane" and category != "um":
            continue
        label_path = gt_path(base, category, mode, index)
        if not label_path.is_file():
            missing.append(label_path)
            continue
        samples.append(Sample(image_path, label_path, image_path.stem, category))
    if missing and not skip_missing_labels:
        raise UserError(
            f"{len(missing)} KITTI image(s) have no ground truth, e.g. {missing[0]}: restore "
            "them, or set data.skip_missing_labels: true to train without those images"
        )
    if not samples:
        raise UserError(f"no KITTI {mode} ground truth found under {base}. Expected: {LAYOUT}")
    return _split_train_val(samples, split, val_fraction)


def _split_train_val(samples: list[Sample], split: str, val_fraction: float) -> list[Sample]:
    chosen = []
    for category in CATEGORIES:
        members = [sample for sample in samples if sample.group == category]
        # A fixed seed and a sorted list: the same validation images on every machine.
        random.Random(f"kitti-{category}").shuffle(members)
        n_val = round(len(members) * val_fraction)
        if val_fraction > 0 and len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)  # small sets keep both sides
        chosen += members[:n_val] if split == "val" else members[n_val:]
    if not chosen:
        raise UserError(
            f"the KITTI {split} split is empty with val_fraction={val_fraction}: "
            "choose a fraction that leaves images on both sides"
        )
    return sorted(chosen, key=lambda sample: sample.name)


def read_kitti_codes(path: Path) -> np.ndarray:
    """A KITTI ground-truth PNG -> (H, W) uint8 colour codes (see labels.kitti_codes)."""
    return kitti_codes(read_label_rgb(path))
