"""Finding Cityscapes image/label pairs in the official folder layout."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from segmentation.data.dataset import Sample
from segmentation.errors import UserError

logger = logging.getLogger(__name__)

IMAGE_SUFFIX = "_leftImg8bit.png"
SPLITS = ("train", "val", "test", "train_extra")
LAYOUT = """\
  ROOT/leftImg8bit/{train,val,test}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
  ROOT/gtFine/{train,val,test}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png
  optional: ROOT/leftImg8bit/train_extra/ + ROOT/gtCoarse/train_extra/..._gtCoarse_labelIds.png"""


def _layout_error(root: Path, problem: str) -> UserError:
    return UserError(
        f"{problem}. Expected the Cityscapes layout under --data-root ({root}): "
        + LAYOUT.replace("\n", ";").replace("  ", " ")
    )


def city_files(split_dir: Path, suffix: str) -> list[Path]:
    """The files SPLIT_DIR/CITY/*SUFFIX, sorted; a city folder may be a symlink (glob's
    single-level "*/" follows it). Training, evaluation and the dataset check all find the
    images and labels through this one function."""
    return sorted(Path(split_dir).glob(f"*/*{suffix}"))


def label_path_of(root: Path, annotation: str, split: str, city: str, prefix: str) -> Path:
    """The label ids file of image PREFIX of CITY: ROOT/ANNOTATION/SPLIT/CITY/PREFIX_..."""
    return Path(root) / annotation / split / city / f"{prefix}_{annotation}_labelIds.png"


def find_images(root: Path, split: str) -> list[Path]:
    """All *_leftImg8bit.png files of one split folder (CITY/... below it), sorted by name."""
    split_dir = Path(root) / "leftImg8bit" / split
    if not Path(root).is_dir():
        raise _layout_error(root, f"data root {root} does not exist")
    if not split_dir.is_dir():
        raise _layout_error(root, f"no folder {split_dir}")
    images = city_files(split_dir, IMAGE_SUFFIX)
    if not images:
        raise _layout_error(root, f"no *{IMAGE_SUFFIX} files in {split_dir}/CITY/")
    return images


def find_cityscapes(
    root: Path,
    split: str,
    *,
    annotation: str = "gtFine",
    cities: Sequence[str] | None = None,
    exclude_cities: Sequence[str] = (),
    skip_missing_labels: bool = False,
) -> list[Sample]:
    """Image/label pairs of one split.

    annotation: "gtFine" or "gtCoarse" (the only labels of train_extra).
    cities / exclude_cities: keep only, or drop, these cities (the original project held out
        train cities ulm, bremen and aachen as its validation set).
    skip_missing_labels: drop images without a label file with a warning instead of failing.
    """
    root = Path(root)
    if split not in SPLITS:
        raise UserError(f"unknown Cityscapes split '{split}': use one of {', '.join(SPLITS)}")
    images = find_images(root, split)
    all_cities = sorted({path.parent.name for path in images})
    for wanted in [*(cities or ()), *exclude_cities]:
        if wanted not in all_cities:
            raise UserError(
                f"city '{wanted}' is not in the {split} split: its cities are "
                f"{', '.join(all_cities)}"
            )
    samples, missing = [], []
    for image_path in images:
        city = image_path.parent.name
        if (cities and city not in cities) or city in exclude_cities:
            continue
        prefix = image_path.name[: -len(IMAGE_SUFFIX)]
        label_path = label_path_of(root, annotation, split, city, prefix)
        if not label_path.is_file():
            missing.append(label_path)
            continue
        samples.append(Sample(image_path, label_path, prefix, city))
    if missing:
        listed = ", ".join(str(path) for path in missing[:3])
        if not skip_missing_labels:
            raise UserError(
                f"{len(missing)} image(s) of the {split} split have no label file, e.g. {listed}: "
                "restore them, or set data.skip_missing_labels: true to train without those images"
            )
        logger.warning(
            "skipping %d %s image(s) without labels, e.g. %s", len(missing), split, listed
        )
    if not samples:
        raise _layout_error(root, f"no labelled images left in the {split} split")
    return samples
