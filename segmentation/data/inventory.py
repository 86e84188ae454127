"""What a dataset check finds before reading any pixel: the samples of each split of a folder,
Cityscapes or KITTI tree, and every way its files fail to pair (missing split folders, empty
ones, images without masks, masks without images, non-PNG masks). Found as training and
evaluation find them (folder.scan_split, cityscapes.city_files), so that the check sees what
they will see.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segmentation.data import cityscapes, kitti
from segmentation.data.dataset import Sample
from segmentation.data.folder import folder_label_reader, folder_scheme, read_classes, scan_split
from segmentation.data.io import read_label_ids
from segmentation.data.labels import LabelScheme, get_scheme
from segmentation.errors import UserError

DATASETS = ("folder", "cityscapes", "kitti")


@dataclass
class Inventory:
    """What discovery found: the samples of each split, and the problems of pairing."""

    dataset: str
    root: Path
    scheme: LabelScheme
    label_kind: str  # for headers.check_pair
    reader: Callable[[Path], np.ndarray]
    description: str
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)

    def problem(self, kind: str, message: str) -> None:
        self.problems.setdefault(kind, []).append(message)


def detect_dataset(root: Path) -> str:
    """The layout of ROOT: a classes file is a folder dataset; else Cityscapes or KITTI."""
    if (root / "classes.yaml").is_file():
        return "folder"
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if (root / "data_road").is_dir() or (root / "training" / "image_2").is_dir():
        return "kitti"
    return "folder"  # whose missing classes file is then the error


def _folder_inventory(root: Path, labels: str | None) -> Inventory:
    if labels not in (None, "all"):
        raise UserError(f"--labels {labels}: a folder dataset's classes are its classes.yaml")
    classes = read_classes(root)
    inventory = Inventory(
        "folder",
        root,
        folder_scheme(classes),
        f"folder:{classes.mask_format}",
        folder_label_reader(classes),
        f"folder dataset {root}: {len(classes.classes)} classes, {classes.mask_format} masks",
    )
    for split in ("train", "val", "test"):
        scan = scan_split(root, split)
        if not scan.images_dir.is_dir():
            if split != "test":
                inventory.problem("split", f"no folder {scan.images_dir}")
            continue
        inventory.splits[split] = scan.samples
        if not scan.samples and not scan.clashes and split != "test":
            inventory.problem("empty", f"{scan.images_dir} holds no .png, .jpg or .jpeg images")
        if not scan.has_masks and split != "test":
            inventory.problem("split", f"no folder {scan.masks_dir}")
        for first, second in scan.clashes:
            inventory.problem("clash", f"{first} and {second}: rename one")
        for image, mask in scan.missing:
            inventory.problem("missing", f"{image}: no {mask}")
        for path in scan.orphans:
            inventory.problem("orphan", f"{path}: no image of that name in {scan.images_dir}")
        for path in scan.not_png:
            inventory.problem("not_png", f"{path}: masks must be PNG files")
    return inventory


def _pair_files(inventory: Inventory, split: str, pairs: list, labels: list[Path]) -> None:
    """Record a split of (image, label path, name, group) pairs: existing labels pair, the
    others are missing, and labels no image claimed are orphans."""
    samples, claimed = [], set()
    for image, label, name, group in pairs:
        if label.is_file():
            claimed.add(label)
            samples.append(Sample(image, label, name, group))
        else:
            inventory.problem("missing", f"{image}: no {label}")
    for label in labels:
        if label not in claimed:
            inventory.problem("orphan", f"{label}: its image is missing")
    inventory.splits[split] = samples


def _cityscapes_inventory(root: Path, labels: str | None) -> Inventory:
    if not (root / "leftImg8bit").is_dir():
        raise UserError(f"no folder {root / 'leftImg8bit'}: expected {cityscapes.LAYOUT}")
    scheme = get_scheme("cityscapes", labels or "classes")
    description = f"Cityscapes {root}: the '{scheme.name}' scheme, {scheme.num_classes} classes"
    inventory = Inventory("cityscapes", root, scheme, "cityscapes", read_label_ids, description)
    splits = (("train", "gtFine"), ("val", "gtFine"), ("test", "gtFine"))
    for split, annotation in (*splits, ("train_extra", "gtCoarse")):
        images_dir = root / "leftImg8bit" / split
        if not images_dir.is_dir():
            if split in ("train", "val"):
                inventory.problem("split", f"no folder {images_dir}")
            continue
        suffix = f"_{annotation}_labelIds.png"
        pairs = []
        for image in cityscapes.city_files(images_dir, cityscapes.IMAGE_SUFFIX):
            name = image.name.removesuffix(cityscapes.IMAGE_SUFFIX)
            label = root / annotation / split / image.parent.name / f"{name}{suffix}"
            pairs.append((image, label, name, image.parent.name))
        if not pairs and split in ("train", "val"):
            inventory.problem("empty", f"{images_dir} holds no CITY/*{cityscapes.IMAGE_SUFFIX}")
        labels_found = cityscapes.city_files(root / annotation / split, suffix)
        _pair_files(inventory, split, pairs, labels_found)
    return inventory


_KITTI_IMAGE = re.compile(r"^(um|umm|uu)_(\d{6})\.png$")
_KITTI_GT = re.compile(r"^(um|umm|uu)_(road|lane)_(\d{6})\.png$")


def _kitti_inventory(root: Path, labels: str | None) -> Inventory:
    base = kitti.data_road_dir(root)
    scheme = get_scheme("kitti", labels or "road")
    mode = scheme.name
    description = f"KITTI road {base}: {mode} ground truth"
    inventory = Inventory("kitti", root, scheme, "kitti", kitti.read_kitti_codes, description)
    gt_dir = base / "training" / "gt_image_2"
    pairs = []
    for folder, split in (("training", "training"), ("testing", "testing")):
        images_dir = base / folder / "image_2"
        if not images_dir.is_dir():
            if split == "training":
                inventory.problem("split", f"no folder {images_dir}")
            continue
        images = sorted(p for p in images_dir.iterdir() if _KITTI_IMAGE.match(p.name))
        if not images and split == "training":
            inventory.problem("empty", f"{images_dir} holds no {{um,umm,uu}}_NNNNNN.png images")
        if split == "testing":
            inventory.splits[split] = [
                Sample(p, None, p.stem, p.stem.split("_")[0]) for p in images
            ]
            continue
        for image in images:
            category, index = _KITTI_IMAGE.match(image.name).groups()
            if mode == "road" or category == "um":
                label = gt_dir / f"{category}_{mode}_{index}.png"
                pairs.append((image, label, image.stem, category))
        found = sorted(gt_dir.glob(f"*_{mode}_*.png")) if gt_dir.is_dir() else []
        labels_found = [p for p in found if _KITTI_GT.match(p.name)]
        _pair_files(inventory, split, pairs, labels_found)
    return inventory


def discover(root: Path, dataset: str | None = None, labels: str | None = None) -> Inventory:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist")
    dataset = dataset or detect_dataset(root)
    builders = {
        "folder": _folder_inventory,
        "cityscapes": _cityscapes_inventory,
        "kitti": _kitti_inventory,
    }
    return builders[dataset](root, labels)
