"""Finding BDD100K semantic segmentation image/label pairs, in either layout it was released in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segmentation.data.dataset import Sample
from segmentation.errors import UserError

SPLITS = ("train", "val", "test")
LABELLED_SPLITS = ("train", "val")
GROUP = "bdd100k"  # no cities or categories: one group for every image
IMAGE_SUFFIX = ".jpg"


@dataclass(frozen=True)
class Layout:
    """Where one release keeps the images and train-id masks of a split, under ROOT."""

    name: str
    images: str  # folder of the JPEG images, {split} filled in
    labels: str  # folder of the masks, {split} filled in
    label_suffix: str  # a mask's name is the image's stem + this

    def images_dir(self, base: Path, split: str) -> Path:
        return base / self.images.format(split=split)

    def labels_dir(self, base: Path, split: str) -> Path:
        return base / self.labels.format(split=split)

    def label_path_of(self, base: Path, split: str, image: Path) -> Path:
        return self.labels_dir(base, split) / f"{image.stem}{self.label_suffix}"


# bdd100k_images_10k.zip + bdd100k_sem_seg_labels_trainval.zip (the current release).
CURRENT = Layout("current", "images/10k/{split}", "labels/sem_seg/masks/{split}", ".png")
# bdd100k_seg.zip (the original release).
ORIGINAL = Layout("original", "seg/images/{split}", "seg/labels/{split}", "_train_id.png")
LAYOUTS = (CURRENT, ORIGINAL)
LAYOUT = (
    "ROOT/images/10k/{train,val,test}/NAME.jpg with ROOT/labels/sem_seg/masks/{train,val}/"
    "NAME.png, or ROOT/seg/images/{train,val,test}/NAME.jpg with "
    "ROOT/seg/labels/{train,val}/NAME_train_id.png (ROOT may also hold bdd100k/)"
)


def bdd100k_dir(root: Path) -> Path:
    """The folder that holds images/ or seg/: ROOT, or ROOT/bdd100k (the zips' own folder)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist. Expected the BDD100K layout: {LAYOUT}")
    inner = root / "bdd100k"
    if inner.is_dir() and layout_of(inner) is not None:
        return inner
    return root


def layout_of(base: Path) -> Layout | None:
    """The release whose image folders `base` holds (the current one first), or None."""
    for layout in LAYOUTS:
        if any(layout.images_dir(base, split).is_dir() for split in SPLITS):
            return layout
    return None


def image_files(folder: Path) -> list[Path]:
    """The NAME.jpg images of a split folder, sorted (training, evaluation and the dataset
    check all find them through this one function)."""
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix == IMAGE_SUFFIX)


def find_bdd100k(root: Path, split: str, *, skip_missing_labels: bool = False) -> list[Sample]:
    """Image/label pairs of BDD100K semantic segmentation: "train" and "val" are the
    release's own splits; "test" is its test images, without labels."""
    if split not in SPLITS:
        raise UserError(f"unknown BDD100K split '{split}': use one of {', '.join(SPLITS)}")
    base = bdd100k_dir(root)
    layout = layout_of(base)
    if layout is None:
        raise UserError(f"no BDD100K images under {base}. Expected: {LAYOUT}")
    folder = layout.images_dir(base, split)
    if not folder.is_dir():
        raise UserError(f"no folder {folder}. Expected the BDD100K layout: {LAYOUT}")
    images = image_files(folder)
    if not images:
        raise UserError(f"no NAME.jpg images in {folder}. Expected: {LAYOUT}")
    if split == "test":
        return [Sample(path, None, path.stem, GROUP) for path in images]
    samples, missing = [], []
    for image in images:
        label = layout.label_path_of(base, split, image)
        if label.is_file():
            samples.append(Sample(image, label, image.stem, GROUP))
        else:
            missing.append(label)
    if missing and not skip_missing_labels:
        raise UserError(
            f"{len(missing)} BDD100K {split} image(s) have no mask, e.g. {missing[0]}: restore "
            "them, or set data.skip_missing_labels: true to train without those images"
        )
    if not samples:
        raise UserError(f"no BDD100K {split} masks found under {base}. Expected: {LAYOUT}")
    return samples
