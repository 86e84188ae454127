"""Finding KITTI semantic segmentation image/label pairs in the data_semantics layout."""

from __future__ import annotations

import random
import re
from pathlib import Path

from segmentation.data.dataset import Sample
from segmentation.errors import UserError

SPLITS = ("train", "val", "test")
# Frame 10 of each KITTI scene: the annotated one, e.g. 000042_10.png.
IMAGE_NAME = re.compile(r"^\d{6}_10\.png$")
GROUP = "kitti"  # no cities or categories: one group for every image
LAYOUT = (
    "ROOT/training/image_2/NNNNNN_10.png; ROOT/training/semantic/NNNNNN_10.png "
    "(Cityscapes label ids); ROOT/testing/image_2/NNNNNN_10.png "
    "(ROOT may also hold data_semantics/)"
)


def data_semantics_dir(root: Path) -> Path:
    """The folder that holds training/ and testing/: ROOT, or ROOT/data_semantics."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"data root {root} does not exist. Expected the KITTI semantics layout: {LAYOUT}"
        )
    if (root / "data_semantics").is_dir():
        return root / "data_semantics"
    return root


def image_files(folder: Path) -> list[Path]:
    """The NNNNNN_10.png images of an image_2 folder, sorted (training, evaluation and the
    dataset check all find them through this one function)."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if IMAGE_NAME.match(path.name))


def label_path_of(base: Path, image: Path) -> Path:
    """The semantic ground truth of a training image: the same name under training/semantic."""
    return base / "training" / "semantic" / image.name


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"no folder {folder}. Expected the KITTI semantics layout: {LAYOUT}")
    images = image_files(folder)
    if not images:
        raise UserError(f"no NNNNNN_10.png images in {folder}. Expected: {LAYOUT}")
    return images


def find_kitti_semantics(
    root: Path, split: str, *, val_fraction: float = 0.1, skip_missing_labels: bool = False
) -> list[Sample]:
    """Image/label pairs of KITTI semantic segmentation.

    split: "train" and "val" divide the 200 training images, `val_fraction` of them held out
        for validation (a fixed shuffle, the same on every machine: the benchmark has no
        validation split); "test" is the testing images, without labels.
    """
    if split not in SPLITS:
        raise UserError(f"unknown KITTI semantics split '{split}': use one of {', '.join(SPLITS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    base = data_semantics_dir(root)
    if split == "test":
        return [
            Sample(path, None, path.stem, GROUP) for path in _images(base / "testing" / "image_2")
        ]
    samples, missing = [], []
    for image in _images(base / "training" / "image_2"):
        label = label_path_of(base, image)
        if label.is_file():
            samples.append(Sample(image, label, image.stem, GROUP))
        else:
            missing.append(label)
    if missing and not skip_missing_labels:
        raise UserError(
            f"{len(missing)} KITTI semantics image(s) have no label, e.g. {missing[0]}: restore "
            "them, or set data.skip_missing_labels: true to train without those images"
        )
    if not samples:
        raise UserError(f"no KITTI semantics labels found under {base}. Expected: {LAYOUT}")
    return _split_train_val(samples, split, val_fraction)


def _split_train_val(samples: list[Sample], split: str, val_fraction: float) -> list[Sample]:
    members = list(samples)
    # A fixed seed and a sorted list: the same validation images on every machine.
    random.Random("kitti_semantics").shuffle(members)
    n_val = round(len(members) * val_fraction)
    if val_fraction > 0 and len(members) > 1:
        n_val = min(max(n_val, 1), len(members) - 1)  # small sets keep both sides
    chosen = members[:n_val] if split == "val" else members[n_val:]
    if not chosen:
        raise UserError(
            f"the KITTI semantics {split} split is empty with val_fraction={val_fraction}: "
            "choose a fraction that leaves images on both sides"
        )
    return sorted(chosen, key=lambda sample: sample.name)
