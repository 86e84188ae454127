"""BDD100K semantic segmentation (the 10k images): JPEG images with masks holding the 19
Cityscapes train ids, in the current release's layout or the original one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from segmentation.config import DataConfig
from segmentation.data.headers import GREY_8BIT, LabelFormat
from segmentation.data.kinds.base import (
    DatasetKind,
    LabelReader,
    label_names,
    write_named_like_inputs,
)
from segmentation.errors import UserError

if TYPE_CHECKING:
    import argparse

    import torch

    from segmentation.data.dataset import Sample
    from segmentation.data.inventory import Inventory
    from segmentation.data.labels import LabelScheme

SCHEMES = ("classes",)
LABELS = LabelFormat(
    GREY_8BIT,
    "a single-channel 8-bit PNG",
    "use the train-id masks (labels/sem_seg/masks, or seg/labels/*_train_id.png), not the "
    "colormaps",
)


class Bdd100kOptions(DataConfig):
    """BDD100K semantic segmentation: either release's layout, found under data.root."""

    dataset: Literal["bdd100k"] = Field(
        "bdd100k", description="layout of the dataset under data.root"
    )


class Bdd100kKind(DatasetKind):
    name: ClassVar[str] = "bdd100k"
    options: ClassVar[type[DataConfig]] = Bdd100kOptions
    layout: ClassVar[str] = (
        "ROOT/images/10k/{train,val,test}/NAME.jpg + labels/sem_seg/masks, or "
        "ROOT/seg/images + seg/labels/NAME_train_id.png"
    )
    schemes: ClassVar[tuple[str, ...]] = SCHEMES
    labels_help: ClassVar[str] = "BDD100K: classes (the 19 Cityscapes classes, as train ids)"
    default_labels: ClassVar[list[str]] = ["classes"]
    outside_advice: ClassVar[str] = (
        "training ignores those pixels: BDD100K masks store the Cityscapes train ids 0..18 and "
        "255; use the train-id masks, not the colormaps"
    )

    def scheme_named(self, labels: str | list[str]) -> LabelScheme:
        from segmentation.data.labels import cityscapes_train_id_scheme

        names = label_names(labels)
        if names != ["classes"]:
            raise UserError(
                f"unknown BDD100K label scheme '{','.join(names)}': use classes (its masks "
                "hold the 19 Cityscapes train ids)"
            )
        return cityscapes_train_id_scheme(self.name)

    def label_reader(self, config: DataConfig | None) -> LabelReader:
        from segmentation.data.io import read_label_ids

        return read_label_ids

    def label_format(self, config: DataConfig) -> LabelFormat:
        return LABELS

    def find_samples(self, config: DataConfig, split: str) -> list[Sample]:
        from segmentation.data.bdd100k import find_bdd100k

        return find_bdd100k(
            Path(config.root), split, skip_missing_labels=config.skip_missing_labels
        )

    def detect(self, root: Path) -> bool:
        from segmentation.data.bdd100k import layout_of

        return any(layout_of(base) is not None for base in (root, root / "bdd100k"))

    def inventory(self, root: Path, labels: str | None) -> Inventory:
        from segmentation.data import bdd100k as layouts
        from segmentation.data.dataset import Sample
        from segmentation.data.inventory import Inventory, pair_files

        base = layouts.bdd100k_dir(root)
        layout = layouts.layout_of(base) or layouts.CURRENT
        scheme = self.scheme_named(labels or "classes")
        description = (
            f"BDD100K {base} ({layout.name} release layout): the '{scheme.name}' scheme, "
            f"{scheme.num_classes} classes"
        )
        inventory = Inventory(
            self.name,
            root,
            scheme,
            LABELS,
            self.label_reader(None),
            description,
            outside_advice=self.outside_advice,
        )
        for split in layouts.SPLITS:
            images_dir = layout.images_dir(base, split)
            if not images_dir.is_dir():
                if split in layouts.LABELLED_SPLITS:
                    inventory.problem("split", f"no folder {images_dir}")
                continue
            images = layouts.image_files(images_dir)
            if split == "test":
                inventory.splits[split] = [Sample(p, None, p.stem, layouts.GROUP) for p in images]
                continue
            if not images:
                inventory.problem("empty", f"{images_dir} holds no NAME.jpg images")
            pairs = [
                (image, layout.label_path_of(base, split, image), image.stem, layouts.GROUP)
                for image in images
            ]
            labels_dir = layout.labels_dir(base, split)
            found = (
                sorted(p for p in labels_dir.iterdir() if p.name.endswith(layout.label_suffix))
                if labels_dir.is_dir()
                else []
            )
            pair_files(inventory, split, pairs, found)
        return inventory

    def check_scored_split(self, split: str) -> None:
        if split == "test":
            raise UserError(
                "the BDD100K test images have no masks: score the val split, or render the "
                "test images with inference.py for the benchmark server"
            )

    def export(
        self,
        root: Path,
        classes: torch.Tensor,
        probs: torch.Tensor,
        samples: list[Sample],
        scheme: LabelScheme,
    ) -> None:
        # The release's mask format: train ids under the input image's own name.
        write_named_like_inputs(root / "masks", classes, samples, scheme)

    def export_note(self, export_dir: Path) -> str | None:
        return (
            f"train-id predictions in {export_dir / 'masks'}, named like the input images "
            "(the format of BDD100K's masks)"
        )

    def add_sample_command(self, subcommands: argparse._SubParsersAction) -> None:
        from segmentation.sample.cli import add_bdd100k_parser

        add_bdd100k_parser(subcommands)


BDD100K = Bdd100kKind()
