"""Cityscapes (leftImg8bit + gtFine, optionally gtCoarse), scored by the official evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field

from segmentation.config import DataConfig, Text, allowed, comma_list
from segmentation.data.headers import GREY_8BIT, LabelFormat
from segmentation.data.kinds.base import DatasetKind, LabelReader, Scorer, label_names
from segmentation.data.labels import CITYSCAPES_SCHEMES
from segmentation.errors import UserError

if TYPE_CHECKING:
    import argparse

    import torch

    from segmentation.data.dataset import Sample
    from segmentation.data.inventory import Inventory
    from segmentation.data.labels import LabelScheme

LABELS = LabelFormat(
    GREY_8BIT, "a single-channel 8-bit PNG", "use the *_labelIds.png files (not *_color.png)"
)


class CityscapesOptions(DataConfig):
    """Cityscapes: the official folder layout."""

    dataset: Literal["cityscapes"] = Field(
        "cityscapes", description="layout of the dataset under data.root"
    )
    train_split: Text = Field("train", description="split folder to train on")
    val_split: Text = Field("val", description="split folder to validate on")
    holdout_cities: Annotated[list[Text], BeforeValidator(comma_list)] = Field(
        default_factory=list,
        description="validate on these cities of train_split, left out of training, instead "
        "of on val_split (the original project: [ulm, bremen, aachen])",
        json_schema_extra=allowed("city names: a list, or one string ulm,bremen"),
    )
    coarse: bool = Field(False, description="also train on train_extra with its gtCoarse labels")


class CityscapesLabelIds:
    """The label side of a kind whose label files hold Cityscapes label ids (Cityscapes, KITTI
    semantics): the Cityscapes schemes, and the files read as they are."""

    def scheme_named(self, labels: str | list[str]) -> LabelScheme:
        from segmentation.data.labels import cityscapes_scheme

        return cityscapes_scheme(label_names(labels))

    def label_reader(self, config: DataConfig | None) -> LabelReader:
        from segmentation.data.io import read_label_ids

        return read_label_ids


class CityscapesKind(CityscapesLabelIds, DatasetKind):
    name: ClassVar[str] = "cityscapes"
    options: ClassVar[type[DataConfig]] = CityscapesOptions
    layout: ClassVar[str] = "ROOT/leftImg8bit/SPLIT/CITY/*.png, ROOT/gtFine/SPLIT/CITY/*.png"
    schemes: ClassVar[tuple[str, ...]] = CITYSCAPES_SCHEMES
    labels_help: ClassVar[str] = (
        "Cityscapes: categories, classes, official, or label names (road,car)"
    )
    default_labels: ClassVar[list[str]] = ["categories"]
    outside_advice: ClassVar[str] = (
        "training ignores those pixels: Cityscapes label ids are 0..33; use the dataset's own "
        "*_labelIds.png files"
    )

    def label_format(self, config: DataConfig) -> LabelFormat:
        return LABELS

    def find_samples(self, config: DataConfig, split: str) -> list[Sample]:
        from segmentation.data.cityscapes import find_cityscapes

        root, skip, holdout = Path(config.root), config.skip_missing_labels, config.holdout_cities
        if split == "train":
            samples = find_cityscapes(
                root, config.train_split, exclude_cities=holdout, skip_missing_labels=skip
            )
            if config.coarse:
                samples += find_cityscapes(
                    root, "train_extra", annotation="gtCoarse", skip_missing_labels=skip
                )
            return samples
        if split == "val" and holdout:
            return find_cityscapes(
                root, config.train_split, cities=holdout, skip_missing_labels=skip
            )
        if split == "val":
            split = config.val_split
        return find_cityscapes(root, split, skip_missing_labels=skip)

    def detect(self, root: Path) -> bool:
        return (root / "leftImg8bit").is_dir()

    def inventory(self, root: Path, labels: str | None) -> Inventory:
        from segmentation.data import cityscapes
        from segmentation.data.inventory import Inventory, pair_files

        if not (root / "leftImg8bit").is_dir():
            raise UserError(f"no folder {root / 'leftImg8bit'}: expected {cityscapes.LAYOUT}")
        scheme = self.scheme_named(labels or "classes")
        description = f"Cityscapes {root}: the '{scheme.name}' scheme, {scheme.num_classes} classes"
        reader = self.label_reader(None)
        inventory = Inventory(
            self.name, root, scheme, LABELS, reader, description, outside_advice=self.outside_advice
        )
        splits = (("train", "gtFine"), ("val", "gtFine"), ("test", "gtFine"))
        for split, annotation in (*splits, ("train_extra", "gtCoarse")):
            images_dir = root / "leftImg8bit" / split
            if not images_dir.is_dir():
                if split in ("train", "val"):
                    inventory.problem("split", f"no folder {images_dir}")
                continue
            pairs = []
            for image in cityscapes.city_files(images_dir, cityscapes.IMAGE_SUFFIX):
                name, city = image.name.removesuffix(cityscapes.IMAGE_SUFFIX), image.parent.name
                label = cityscapes.label_path_of(root, annotation, split, city, name)
                pairs.append((image, label, name, city))
            if not pairs and split in ("train", "val"):
                inventory.problem("empty", f"{images_dir} holds no CITY/*{cityscapes.IMAGE_SUFFIX}")
            suffix = f"_{annotation}_labelIds.png"
            labels_found = cityscapes.city_files(root / annotation / split, suffix)
            pair_files(inventory, split, pairs, labels_found)
        return inventory

    def check_scored_split(self, split: str) -> None:
        if split == "test":
            raise UserError(
                "the Cityscapes test labels are dummies (all 'unlabeled'): score the val split, "
                "or render the test images with inference.py for the benchmark server"
            )

    def scorer(self, scheme: LabelScheme, device: torch.device) -> Scorer | None:
        from segmentation.evaluation.scorers import OfficialCityscapes

        return OfficialCityscapes(scheme, device)

    def export(
        self,
        root: Path,
        classes: torch.Tensor,
        probs: torch.Tensor,
        samples: list[Sample],
        scheme: LabelScheme,
    ) -> None:
        from segmentation.data.io import write_png

        for class_map, sample in zip(classes.byte().cpu().numpy(), samples):
            # {city}_{seq}_{frame}*.png under one folder: what the official evaluator finds.
            path = root / "labelIds" / sample.group / f"{sample.name}_labelIds.png"
            write_png(path, scheme.to_label_ids(class_map))

    def export_note(self, export_dir: Path) -> str | None:
        return (
            f"label-id predictions in {export_dir / 'labelIds'}: the official evaluator "
            f"reads them with CITYSCAPES_RESULTS={export_dir / 'labelIds'}"
        )

    def demo_frames(self, config: DataConfig) -> Path | None:
        frames = Path(config.root) / "leftImg8bit" / "demoVideo" / "stuttgart_00"
        return frames if frames.is_dir() else None

    def add_sample_command(self, subcommands: argparse._SubParsersAction) -> None:
        from segmentation.sample.cli import add_cityscapes_parser

        add_cityscapes_parser(subcommands)


CITYSCAPES = CityscapesKind()
