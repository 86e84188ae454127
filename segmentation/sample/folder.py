"""A sample folder dataset: the generated street scenes in the layout of your own data.

    python -m segmentation.sample folder DIR [--mask-format index|rgb] [--image-format png|jpg]

The scenes of the Cityscapes sample, their labels grouped into 8 classes (the void labels are
left unlabelled), written as ROOT/classes.yaml, ROOT/images/{train,val,test}/CITY/NAME.EXT and
ROOT/masks/{train,val}/CITY/NAME.png (see segmentation/data/folder.py). Every other image of a
city is cropped narrower, so that sizes vary as in real collections. Both mask formats give
the same training targets.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import name2label

from segmentation.errors import UserError
from segmentation.sample.generate import generate_cityscapes
from segmentation.sample.output import Summary, prepare_root

# (name, colour, the Cityscapes labels it groups); the colours are Cityscapes'.
SAMPLE_CLASSES = (
    ("road", (128, 64, 128), ("road", "parking", "rail track")),
    ("sidewalk", (244, 35, 232), ("sidewalk",)),
    ("building", (70, 70, 70), ("building", "wall", "fence", "guard rail", "bridge", "tunnel")),
    ("pole", (153, 153, 153), ("pole", "polegroup", "traffic light", "traffic sign")),
    ("vegetation", (107, 142, 35), ("vegetation", "terrain")),
    ("sky", (70, 130, 180), ("sky",)),
    ("person", (220, 20, 60), ("person", "rider")),
    (
        "vehicle",
        (0, 0, 142),
        ("car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle"),
    ),
)
IGNORE_INDEX = 255
MASK_FORMATS = ("index", "rgb")
IMAGE_FORMATS = ("png", "jpg")


def _class_of_label_id() -> np.ndarray:
    """Cityscapes label id -> sample class index; void labels -> IGNORE_INDEX."""
    table = np.full(256, IGNORE_INDEX, np.uint8)
    for index, (_, _, members) in enumerate(SAMPLE_CLASSES):
        for name in members:
            table[name2label[name].id] = index
    return table


def classes_yaml(mask_format: str) -> str:
    """The sample's ROOT/classes.yaml."""
    lines = [
        "# Classes of a generated folder dataset (python -m segmentation.sample folder).",
        "# A class's index (its id in index masks) is its position in the list.",
        f"mask_format: {mask_format}",
    ]
    if mask_format == "index":
        lines.append("ignore_index: 255  # unlabelled pixels")
    else:
        lines.append("# Pixels of any other colour (black here) are unlabelled.")
    lines.append("classes:")
    for name, (red, green, blue), _ in SAMPLE_CLASSES:
        lines.append(f"  - {{name: {name}, color: [{red}, {green}, {blue}]}}")
    return "\n".join(lines) + "\n"


def _mask_pixels(classes: np.ndarray, mask_format: str) -> np.ndarray:
    """Class indices (H, W) -> what a mask file holds: the indices, or BGR colours for cv2."""
    if mask_format == "index":
        return classes
    palette = np.zeros((256, 3), np.uint8)  # black: no class's colour, so unlabelled
    palette[: len(SAMPLE_CLASSES)] = [colour[::-1] for _, colour, _ in SAMPLE_CLASSES]
    return palette[classes]


def _write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    quality = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else []
    if not cv2.imwrite(str(path), pixels, quality):
        raise UserError(f"could not write {path}: check the folder is writable and has space")


def _convert_split(source: Path, root: Path, split: str, options: dict) -> int:
    """One split of a Cityscapes tree -> images (and masks) of the folder layout; returns the
    number of images."""
    to_class = _class_of_label_id()
    images = sorted((source / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    for position, image_path in enumerate(images):
        city, name = image_path.parent.name, image_path.name.removesuffix("_leftImg8bit.png")
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        # Every other image an eighth narrower: a dataset's images may differ in size.
        width = image.shape[1] - (image.shape[1] // 8 if position % 2 else 0)
        _write(
            root / "images" / split / city / f"{name}.{options['image_format']}", image[:, :width]
        )
        if split == "test":  # images only, as a test split comes
            continue
        label_path = source / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"
        label_ids = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)[:, :width]
        mask = _mask_pixels(to_class[label_ids], options["mask_format"])
        _write(root / "masks" / split / city / f"{name}.png", mask)
    return len(images)


def generate_folder(
    root,
    *,
    mask_format: str = "index",
    image_format: str = "png",
    height: int = 128,
    width: int = 256,
    train_per_city: int = 8,
    val_per_city: int = 4,
    test_per_city: int = 2,
    seed: int = 0,
    overwrite: bool = False,
) -> Summary:
    """Write a sample folder dataset under ``root`` (see the module docstring): the scenes of
    ``generate_cityscapes`` with the same counts, size and seed."""
    if mask_format not in MASK_FORMATS:
        raise UserError(f"mask format must be index or rgb, got {mask_format!r}")
    if image_format not in IMAGE_FORMATS:
        raise UserError(f"image format must be png or jpg, got {image_format!r}")
    root = prepare_root(root, overwrite)
    summary = Summary(f"folder ({mask_format} masks)", root)
    options = {"mask_format": mask_format, "image_format": image_format}
    with tempfile.TemporaryDirectory(prefix="sample-folder-") as scratch:
        source = Path(scratch)
        generate_cityscapes(
            source,
            height=height,
            width=width,
            train_per_city=train_per_city,
            val_per_city=val_per_city,
            test_per_city=test_per_city,
            video_frames=0,
            seed=seed,
            overwrite=True,
        )
        for split in ("train", "val", "test"):
            summary.images[split] = _convert_split(source, root, split, options)
    (root / "classes.yaml").write_text(classes_yaml(mask_format))
    labelled = summary.images["train"] + summary.images["val"]
    summary.files = 1 + labelled * 2 + summary.images["test"]
    return summary


def add_folder_parser(subparsers) -> None:
    """The `folder` subcommand of python -m segmentation.sample."""
    folder = subparsers.add_parser(
        "folder", help="your own data's layout: classes.yaml, images/, masks/"
    )
    folder.add_argument("root", type=Path, metavar="DIR", help="output folder (new or empty)")
    folder.add_argument(
        "--mask-format", choices=MASK_FORMATS, default="index", help="default index"
    )
    folder.add_argument("--image-format", choices=IMAGE_FORMATS, default="png", help="default png")
    folder.add_argument("--height", type=int, default=128, help="image height (default 128)")
    folder.add_argument("--width", type=int, default=256, help="image width (default 256)")
    folder.add_argument("--train-per-city", type=int, default=8, help="default 8 (5 cities)")
    folder.add_argument("--val-per-city", type=int, default=4, help="default 4 (3 cities)")
    folder.add_argument("--test-per-city", type=int, default=2, help="default 2 (2 cities)")
    folder.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    folder.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty folder, replacing files of the same name",
    )
    folder.set_defaults(generate=generate_folder_from_args)


def generate_folder_from_args(args: argparse.Namespace) -> Summary:
    return generate_folder(
        args.root,
        mask_format=args.mask_format,
        image_format=args.image_format,
        height=args.height,
        width=args.width,
        train_per_city=args.train_per_city,
        val_per_city=args.val_per_city,
        test_per_city=args.test_per_city,
        seed=args.seed,
        overwrite=args.overwrite,
    )
