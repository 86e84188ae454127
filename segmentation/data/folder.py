"""A folder dataset: your own images and masks, with a classes file as the label scheme.

    ROOT/classes.yaml
    ROOT/images/{train,val[,test]}/**/NAME.{png,jpg,jpeg}
    ROOT/masks/{train,val}/**/NAME.png      (the same relative folder and stem as its image)

classes.yaml names the classes in order (a class's index is its position in the list), their
colours, and how masks store them: `mask_format: index` (8-bit class ids; `ignore_index`, 255
by default, marks unlabelled pixels) or `mask_format: rgb` (each class in its colour, matched
exactly; any other colour is unlabelled). Either way a mask becomes the same training target:
class indices, IGNORE_INDEX elsewhere.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from segmentation.config import DataConfig, FolderClasses, classes_from_dict
from segmentation.data.dataset import Sample
from segmentation.data.io import read_png
from segmentation.data.labels import IGNORE_INDEX, LabelScheme
from segmentation.errors import UserError
from segmentation.yaml_io import read_yaml

logger = logging.getLogger(__name__)

CLASSES_FILE = "classes.yaml"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Mask files that cannot be used: lossy or other formats, found to say so instead of "missing".
NOT_PNG_SUFFIXES = (".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LAYOUT = (
    "ROOT/classes.yaml; ROOT/images/{train,val[,test]}/**/NAME.{png,jpg,jpeg}; "
    "ROOT/masks/{train,val}/**/NAME.png (the same relative folder and stem as its image)"
)


def _layout_error(problem: str) -> UserError:
    return UserError(f"{problem}. Expected the folder dataset layout: {LAYOUT}")


# --------------------------------------------------------------------------- the classes file


def read_classes(root: Path) -> FolderClasses:
    """ROOT/classes.yaml as a checked FolderClasses; UserError naming the file and the key."""
    root = Path(root)
    if not root.is_dir():
        raise _layout_error(f"data root {root} does not exist")
    path = root / CLASSES_FILE
    if not path.is_file():
        raise UserError(
            f"{path} is missing: a folder dataset names its classes there (mask_format, "
            "classes: [{name, color}, ...]; see the README, 'Your own data')"
        )
    values = read_yaml(path, str(path))
    return classes_from_dict(values, str(path))


def _difference(saved: FolderClasses, found: FolderClasses) -> str:
    for key in ("mask_format", "ignore_index"):
        if getattr(saved, key) != getattr(found, key):
            return f"{key} {getattr(saved, key)} became {getattr(found, key)}"
    for index, (old, new) in enumerate(zip(saved.classes, found.classes)):
        if old != new:
            return (
                f"classes[{index}] {old.name} {list(old.color)} became {new.name} {list(new.color)}"
            )
    return f"{len(saved.classes)} classes became {len(found.classes)}"


def dataset_classes(config: DataConfig) -> FolderClasses:
    """The classes of the dataset at data.root. A config that carries classes already (a run's
    or a checkpoint's) must find the same ones there: masks would mean other classes."""
    found = read_classes(Path(config.root))
    if config.classes is not None and found != config.classes:
        raise UserError(
            f"{Path(config.root) / CLASSES_FILE} is not the classes file this model was trained "
            f"with ({_difference(config.classes, found)}): point --data-root at that dataset, "
            "or start a new run for the new classes"
        )
    return found


def folder_scheme(classes: FolderClasses) -> LabelScheme:
    """The label scheme of a classes file: class i is stored as i (index masks) or read from
    its colour as i (rgb masks); everything else is ignored."""
    count = len(classes.classes)
    lookup = np.full(256, IGNORE_INDEX, np.uint8)
    lookup[:count] = np.arange(count)
    return LabelScheme(
        name="all",
        dataset="folder",
        class_names=tuple(entry.name for entry in classes.classes),
        colors=np.array([entry.color for entry in classes.classes], np.uint8).reshape(-1, 3),
        lookup=lookup,
        export_label_ids=np.arange(count, dtype=np.uint8),
        # rgb: the reader gives IGNORE_INDEX for colours of no class, by the format's rule.
        stored_ignore=classes.ignore_index if classes.mask_format == "index" else IGNORE_INDEX,
        name_fixes_classes=False,
    )


# --------------------------------------------------------------------------- reading masks


def read_index_mask(path: Path) -> np.ndarray:
    """An index mask (8-bit single-channel PNG of class ids) -> (H, W) uint8."""
    mask = read_png(path, cv2.IMREAD_UNCHANGED)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise UserError(
            f"mask {path} is not a single-channel 8-bit PNG (found shape {mask.shape}, "
            f"{mask.dtype}): mask_format index needs class ids as 8-bit grey PNGs; colour "
            "masks need mask_format: rgb"
        )
    return mask


class RgbMaskReader:
    """Colour masks -> class indices, IGNORE_INDEX for colours of no class.

    A colour packs into 24 bits, so one table of 2**24 class indices (16 MB, built once per
    process) maps a whole mask in a single gather: the PNG decodes as BGR, gains an alpha
    channel, and each pixel's four bytes read as one little-endian integer B + G<<8 + R<<16
    once the alpha byte is masked off.
    """

    def __init__(self, colors: np.ndarray) -> None:
        self.colors = np.asarray(colors, np.uint8).reshape(-1, 3)
        self._table: np.ndarray | None = None

    def __getstate__(self) -> dict:
        # Spawned DataLoader workers rebuild the table rather than receive 16 MB each.
        return {"colors": self.colors, "_table": None}

    def table(self) -> np.ndarray:
        if self._table is None:
            red, green, blue = (self.colors[:, i].astype(np.uint32) for i in range(3))
            table = np.full(1 << 24, IGNORE_INDEX, np.uint8)
            table[(red << 16) | (green << 8) | blue] = np.arange(len(self.colors))
            self._table = table
        return self._table

    def codes(self, path: Path) -> np.ndarray:
        """(H, W) uint32 colour codes R<<16 | G<<8 | B of a colour mask PNG."""
        mask = read_png(path, cv2.IMREAD_UNCHANGED)  # grey stays grey: refused below
        if mask.dtype != np.uint8 or mask.ndim != 3:
            raise UserError(
                f"mask {path} is not an 8-bit colour PNG (found shape {mask.shape}, "
                f"{mask.dtype}): mask_format rgb needs RGB masks; single-channel class-id "
                "masks need mask_format: index"
            )
        if mask.shape[2] == 3:
            mask = cv2.cvtColor(mask, cv2.COLOR_BGR2BGRA)
        codes = np.ascontiguousarray(mask).view("<u4")[..., 0]
        np.bitwise_and(codes, 0xFFFFFF, out=codes)
        return codes

    def __call__(self, path: Path) -> np.ndarray:
        return np.take(self.table(), self.codes(path))


def folder_label_reader(classes: FolderClasses):
    """How this dataset's mask files become stored values for its scheme."""
    if classes.mask_format == "index":
        return read_index_mask
    return RgbMaskReader(np.array([entry.color for entry in classes.classes], np.uint8))


# --------------------------------------------------------------------------- finding samples


@dataclass
class SplitScan:
    """What one split's folders hold: pairs, and every way files fail to pair."""

    split: str
    images_dir: Path
    masks_dir: Path
    samples: list[Sample] = field(default_factory=list)  # label_path None: no mask found
    missing: list[tuple[Path, Path]] = field(default_factory=list)  # (image, expected mask)
    orphans: list[Path] = field(default_factory=list)  # masks without an image
    not_png: list[Path] = field(default_factory=list)  # mask files in another format
    clashes: list[tuple[Path, Path]] = field(default_factory=list)  # images of one stem

    @property
    def has_masks(self) -> bool:
        return self.masks_dir.is_dir()


def walk_files(folder: Path) -> list[Path]:
    """Every file below `folder`, sorted, hidden ones (.DS_Store, editors' temporaries, .git)
    left out. Symlinked folders are followed, as symlinked files are: a city linked in from
    another disk is part of the split (Path.rglob skips such folders). A link back to a folder
    it lies in is not followed again, which would never end."""
    found: list[Path] = []

    def visit(directory: str, ancestors: frozenset[str]) -> None:
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError as error:
            raise UserError(f"cannot read folder {directory} ({error.strerror or error})") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():  # follows a symlink, like is_file below
                real = os.path.realpath(entry.path)
                if real not in ancestors:
                    visit(entry.path, ancestors | {real})
            elif entry.is_file():
                found.append(Path(entry.path))

    visit(str(folder), frozenset({os.path.realpath(folder)}))
    return sorted(found)


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, list[Path]]:
    """Relative stem ("city/frame_0001") -> files of `folder` with these suffixes, sorted."""
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return found
    for path in walk_files(folder):
        if path.suffix.lower() in suffixes:
            relative = path.relative_to(folder)
            found.setdefault(relative.with_suffix("").as_posix(), []).append(path)
    return found


def scan_split(root: Path, split: str) -> SplitScan:
    """Pair the images of ROOT/images/SPLIT with the masks of ROOT/masks/SPLIT by relative
    folder and stem. Samples are named by that relative stem and grouped by its folder."""
    scan = SplitScan(split, Path(root) / "images" / split, Path(root) / "masks" / split)
    images = _files(scan.images_dir, IMAGE_SUFFIXES)
    masks = _files(scan.masks_dir, (".png",))
    others = _files(scan.masks_dir, NOT_PNG_SUFFIXES)
    for key, paths in images.items():
        if len(paths) > 1:
            scan.clashes.append((paths[0], paths[1]))
            continue
        group = key.rpartition("/")[0]
        mask = masks[key][0] if key in masks else None
        if mask is None and key not in others and scan.has_masks:
            scan.missing.append((paths[0], scan.masks_dir / f"{key}.png"))
        scan.samples.append(Sample(paths[0], mask, key, group))
    scan.orphans = [paths[0] for key, paths in masks.items() if key not in images]
    scan.not_png = [path for paths in others.values() for path in paths]
    return scan


def _listed(paths: list, count: int) -> str:
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"{paths[0]}{more}"


def _refuse_unusable(scan: SplitScan) -> None:
    if scan.clashes:
        first, second = scan.clashes[0]
        raise UserError(
            f"images {first} and {second} would share one mask name"
            f"{f' ({len(scan.clashes) - 1} more such pairs)' if len(scan.clashes) > 1 else ''}: "
            "rename or remove one of them"
        )
    if scan.not_png:
        raise UserError(
            f"mask {_listed(scan.not_png, len(scan.not_png))} is not a PNG: masks must be PNG "
            "files (JPEG's lossy compression changes class ids and colours); export them as PNG"
        )


def find_folder(
    root: Path, split: str, *, labelled: bool, skip_missing_labels: bool = False
) -> list[Sample]:
    """The samples of one split. `labelled`: a split to train or validate on, whose every
    image needs its mask (missing ones refused, or skipped with `skip_missing_labels`); other
    splits may come without ROOT/masks/SPLIT (e.g. test) and give unlabelled samples."""
    scan = scan_split(root, split)
    if not scan.images_dir.is_dir():
        raise _layout_error(f"no folder {scan.images_dir}")
    if not scan.samples and not scan.clashes:
        raise _layout_error(f"no .png, .jpg or .jpeg images in {scan.images_dir}")
    _refuse_unusable(scan)
    if not scan.has_masks:
        if labelled:
            raise _layout_error(f"no folder {scan.masks_dir} for the {split} images' masks")
        return scan.samples
    if scan.missing and not skip_missing_labels:
        image, mask = scan.missing[0]
        others = len(scan.missing) - 1
        more = f" ({others} more {split} image(s) lack theirs)" if others else ""
        raise UserError(
            f"image {image} has no mask {mask}{more}: add the masks, or set "
            "data.skip_missing_labels: true to train without those images"
        )
    if scan.missing:
        logger.warning(
            "skipping %d %s image(s) without masks, e.g. %s",
            len(scan.missing),
            split,
            scan.missing[0][0],
        )
    if scan.orphans:
        logger.warning(
            "%d mask(s) in %s have no image, e.g. %s: they are not used",
            len(scan.orphans),
            scan.masks_dir,
            scan.orphans[0],
        )
    samples = [sample for sample in scan.samples if sample.label_path is not None]
    if not samples:
        raise _layout_error(f"no image of {scan.images_dir} has its mask in {scan.masks_dir}")
    return samples
