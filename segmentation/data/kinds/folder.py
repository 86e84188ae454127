"""Your own data: ROOT/classes.yaml, images/SPLIT and masks/SPLIT (see data/folder.py). Its
classes file is its label scheme; it has no official protocol: the confusion matrix scores it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from segmentation.config import DataConfig, FolderClasses, Text, allowed, config_line
from segmentation.data.headers import COLOUR, GREY_8BIT, LabelFormat
from segmentation.data.kinds.base import DatasetKind, LabelReader
from segmentation.errors import UserError

if TYPE_CHECKING:
    import argparse

    from segmentation.data.dataset import Sample
    from segmentation.data.inventory import Inventory
    from segmentation.data.labels import LabelScheme

INDEX_MASKS = LabelFormat(
    GREY_8BIT,
    "a single-channel 8-bit PNG",
    "mask_format index needs class ids as 8-bit grey PNGs (colour masks: mask_format rgb)",
)
RGB_MASKS = LabelFormat(
    COLOUR,
    "an 8-bit colour PNG",
    "mask_format rgb needs colour masks (grey class-id masks: mask_format index)",
)
MASK_FORMATS = {"index": INDEX_MASKS, "rgb": RGB_MASKS}


class FolderOptions(DataConfig):
    """Your own images and masks, with ROOT/classes.yaml."""

    dataset: Literal["folder"] = Field(
        "folder", description="layout of the dataset under data.root"
    )
    # Copied when a run starts so that its config and checkpoints carry the classes
    # (evaluation and inference need no dataset root).
    classes: FolderClasses | None = Field(
        None,
        description="its ROOT/classes.yaml, filled in when a run starts",
        json_schema_extra=allowed("null (a run fills it in; a resumed run checks it)"),
    )
    train_split: Text = Field("train", description="split folder to train on")
    val_split: Text = Field("val", description="split folder to validate on")

    @model_validator(mode="after")
    def _labels_are_the_classes(self) -> FolderOptions:
        if self.labels not in (None, ["all"]):
            raise config_line(
                f"data.labels={','.join(self.labels)!r} is not valid for the folder dataset: "
                "its classes are those of ROOT/classes.yaml; set data.labels to all or leave "
                "it out"
            )
        return self


def _classes(config: DataConfig) -> FolderClasses:
    from segmentation.data.folder import read_classes

    return config.classes or read_classes(Path(config.root))


class FolderKind(DatasetKind):
    name: ClassVar[str] = "folder"
    options: ClassVar[type[DataConfig]] = FolderOptions
    layout: ClassVar[str] = "ROOT/classes.yaml, ROOT/images/SPLIT/**, ROOT/masks/SPLIT/**"
    schemes: ClassVar[tuple[str, ...]] = ("all",)
    labels_help: ClassVar[str] = "folder: all"
    default_labels: ClassVar[list[str]] = ["all"]
    outside_advice: ClassVar[str] = (
        "training ignores those pixels: name their classes in classes.yaml, or store "
        "unlabelled pixels as its ignore_index"
    )

    def scheme_named(self, labels: str | list[str]) -> LabelScheme:
        raise UserError(
            "a folder dataset's label scheme is its ROOT/classes.yaml: it has no scheme names"
        )

    def scheme(self, config: DataConfig) -> LabelScheme:
        from segmentation.data.folder import folder_scheme

        return folder_scheme(_classes(config))

    def offered_schemes(self, config: DataConfig) -> list[LabelScheme]:
        return [self.scheme(config)]  # its classes.yaml

    def label_reader(self, config: DataConfig | None) -> LabelReader:
        from segmentation.data.folder import folder_label_reader

        if config is None:
            raise ValueError("label_reader needs the data config of a folder dataset")
        return folder_label_reader(_classes(config))

    def label_format(self, config: DataConfig) -> LabelFormat:
        return MASK_FORMATS[_classes(config).mask_format]

    def reader_identity(self, config: DataConfig) -> dict:
        # Its colours or indices decide the stored values.
        return {"dataset": self.name, "classes": _classes(config).model_dump(mode="json")}

    def resolved(self, config: DataConfig) -> DataConfig:
        from segmentation.data.folder import dataset_classes

        return config.model_copy(update={"classes": dataset_classes(config)})

    def find_samples(self, config: DataConfig, split: str) -> list[Sample]:
        from segmentation.data.folder import dataset_classes, find_folder

        dataset_classes(config)  # masks are read as these classes: the file must agree
        named = {"train": config.train_split, "val": config.val_split}
        return find_folder(
            Path(config.root),
            named.get(split, split),
            labelled=split in named,
            skip_missing_labels=config.skip_missing_labels,
        )

    def detect(self, root: Path) -> bool:
        from segmentation.data.folder import CLASSES_FILE

        return (root / CLASSES_FILE).is_file()

    def inventory(self, root: Path, labels: str | None) -> Inventory:
        from segmentation.data.folder import (
            folder_label_reader,
            folder_scheme,
            read_classes,
            scan_split,
        )
        from segmentation.data.inventory import Inventory

        if labels not in (None, "all"):
            raise UserError(f"--labels {labels}: a folder dataset's classes are its classes.yaml")
        classes = read_classes(root)
        inventory = Inventory(
            self.name,
            root,
            folder_scheme(classes),
            MASK_FORMATS[classes.mask_format],
            folder_label_reader(classes),
            f"folder dataset {root}: {len(classes.classes)} classes, {classes.mask_format} masks",
            outside_advice=self.outside_advice,
            # The rgb format's rule: a colour that no class has is unlabelled (an export's
            # background, once its class is left out of classes.yaml).
            unknown_is_unlabelled=classes.mask_format == "rgb",
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

    def color_path(self, root: Path, sample: Sample) -> Path:
        return root / "color" / f"{sample.name}.png"  # its names hold their folders already

    def add_sample_command(self, subcommands: argparse._SubParsersAction) -> None:
        from segmentation.sample.folder import add_folder_parser

        add_folder_parser(subcommands)


FOLDER = FolderKind()
