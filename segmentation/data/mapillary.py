"""Finding Mapillary Vistas image/label pairs in the layout of its download, and reading its
labels (palette PNGs whose pixel values are the class indices of the version's config JSON).

The layout is that of mapillary-vistas-dataset_public_v2.0.zip as unpacked, which holds both
versions' labels beside the shared images (the dataset's demo.py reads the same paths):

    ROOT/config_v1.2.json, ROOT/config_v2.0.json
    ROOT/{training,validation,testing}/images/NAME.jpg
    ROOT/{training,validation}/{v1.2,v2.0}/labels/NAME.png
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from segmentation.data.dataset import Sample
from segmentation.errors import UserError

VERSIONS = ("v1.2", "v2.0")
# The toolkit's split names -> the dataset's folders.
FOLDERS = {"train": "training", "val": "validation", "test": "testing"}
LABELLED_SPLITS = ("train", "val")
GROUP = "mapillary"  # no cities or categories: one group for every image
IMAGE_SUFFIX = ".jpg"
LAYOUT = (
    "ROOT/config_VERSION.json, ROOT/{training,validation,testing}/images/NAME.jpg with "
    "ROOT/{training,validation}/VERSION/labels/NAME.png (VERSION: v1.2 or v2.0)"
)


def config_path(root: Path, version: str) -> Path:
    """The version's class list: ROOT/config_v1.2.json or ROOT/config_v2.0.json."""
    return Path(root) / f"config_{version}.json"


def images_dir(root: Path, split: str) -> Path:
    return Path(root) / FOLDERS[split] / "images"


def labels_dir(root: Path, split: str, version: str) -> Path:
    return Path(root) / FOLDERS[split] / version / "labels"


def label_path_of(root: Path, split: str, version: str, image: Path) -> Path:
    """A labelled image's class-index PNG: the image's name, .png, under VERSION/labels."""
    return labels_dir(root, split, version) / f"{image.stem}.png"


def image_files(folder: Path) -> list[Path]:
    """The NAME.jpg images of a split folder, sorted (training, evaluation and the dataset
    check all find them through this one function)."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix == IMAGE_SUFFIX)


def check_version(version: str) -> None:
    if version not in VERSIONS:
        raise UserError(
            f"unknown Mapillary Vistas version {version!r}: use one of {', '.join(VERSIONS)}"
        )


def find_mapillary(
    root: Path, split: str, version: str, *, skip_missing_labels: bool = False
) -> list[Sample]:
    """Image/label pairs of Mapillary Vistas: "train" and "val" are its training and
    validation folders with the labels of `version`; "test" is its testing images, without
    labels."""
    check_version(version)
    if split not in FOLDERS:
        raise UserError(
            f"unknown Mapillary Vistas split '{split}': use one of {', '.join(FOLDERS)}"
        )
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"data root {root} does not exist. Expected the Mapillary Vistas layout: {LAYOUT}"
        )
    folder = images_dir(root, split)
    images = image_files(folder)
    if not images:
        what = "no folder" if not folder.is_dir() else "no NAME.jpg images in"
        raise UserError(f"{what} {folder}. Expected the Mapillary Vistas layout: {LAYOUT}")
    if split == "test":
        return [Sample(path, None, path.stem, GROUP) for path in images]
    labels = labels_dir(root, split, version)
    if not labels.is_dir():
        raise UserError(
            f"no folder {labels}: the {version} labels are missing (unpack the whole "
            f"download, or set data.version to the version you have). Expected: {LAYOUT}"
        )
    samples, missing = [], []
    for image in images:
        label = label_path_of(root, split, version, image)
        if label.is_file():
            samples.append(Sample(image, label, image.stem, GROUP))
        else:
            missing.append(label)
    if missing and not skip_missing_labels:
        raise UserError(
            f"{len(missing)} Mapillary Vistas {split} image(s) have no {version} label, e.g. "
            f"{missing[0]}: restore them, or set data.skip_missing_labels: true to train "
            "without those images"
        )
    if not samples:
        raise UserError(f"no Mapillary Vistas {version} {split} labels in {labels}")
    return samples


def read_class_indices(path: Path) -> np.ndarray:
    """A Mapillary label PNG -> its class indices (H, W) uint8.

    The labels are palette PNGs: the pixel values are the indices into the config's label
    list, and the palette only draws them. OpenCV would decode the palette's colours, so PIL
    reads the indices ("P" mode); an 8-bit grey PNG of the same indices (the format the
    official evaluator takes for predictions) is read the same way."""
    from PIL import Image

    from segmentation.data.io import PNG_SIGNATURE, file_kind

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror or error})") from None
    if not data.startswith(PNG_SIGNATURE):
        raise UserError(
            f"label file {path} is not a PNG (it is {file_kind(data[:8])}): use the dataset's "
            "original label PNGs, lossy formats change label values"
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            indices = np.array(image) if mode in ("P", "L") else None
    except (OSError, SyntaxError, ValueError):
        raise UserError(f"cannot read image {path}: the file is corrupt or not an image") from None
    if indices is None:
        raise UserError(
            f"label file {path} is a {mode} image, not a palette PNG of class indices: use the "
            "files of VERSION/labels (not the panoptic or instance PNGs, nor colour renders)"
        )
    return indices.astype(np.uint8, copy=False)


def write_palette_png(path: Path, indices: np.ndarray, palette: np.ndarray) -> None:
    """Class indices (H, W) uint8 as a palette PNG, each index drawn in `palette` (N, 3): the
    format of the dataset's own labels."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(indices, np.uint8))  # "L"; putpalette: "P"
    colours = np.zeros((256, 3), np.uint8)
    colours[: len(palette)] = palette
    image.putpalette(colours.ravel().tolist())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
    except OSError as error:
        raise UserError(
            f"cannot write {path} ({error.strerror or error}): free disk space or check that "
            "the folder is writable"
        ) from None
