"""KITTI semantic segmentation (data_semantics): Cityscapes label ids under KITTI's own file
names, so the Cityscapes schemes, label reader and official evaluator apply."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from segmentation.config import DataConfig, Float
from segmentation.data.headers import GREY_8BIT, LabelFormat
from segmentation.data.kinds.base import DatasetKind, Scorer, write_named_like_inputs
from segmentation.data.kinds.cityscapes import CityscapesLabelIds
from segmentation.data.labels import CITYSCAPES_SCHEMES
from segmentation.errors import UserError

if TYPE_CHECKING:
    import argparse

    import torch

    from segmentation.data.dataset import Sample
    from segmentation.data.inventory import Inventory
    from segmentation.data.labels import LabelScheme

LABELS = LabelFormat(
    GREY_8BIT,
    "a single-channel 8-bit PNG",
    "use the files of training/semantic (not semantic_rgb or instance)",
)


class KittiSemanticsOptions(DataConfig):
    """KITTI semantics: the data_semantics layout."""

    dataset: Literal["kitti_semantics"] = Field(
        "kitti_semantics", description="layout of the dataset under data.root"
    )
    val_fraction: Annotated[Float, Field(gt=0, lt=1)] = Field(
        0.1, description="share of the training images held out to validate"
    )


class KittiSemanticsKind(CityscapesLabelIds, DatasetKind):
    name: ClassVar[str] = "kitti_semantics"
    options: ClassVar[type[DataConfig]] = KittiSemanticsOptions
    layout: ClassVar[str] = "ROOT/{training,testing}/image_2/NNNNNN_10.png, training/semantic"
    schemes: ClassVar[tuple[str, ...]] = CITYSCAPES_SCHEMES
    labels_help: ClassVar[str] = (
        "KITTI semantics: the Cityscapes schemes (categories, classes, official) or label names"
    )
    default_labels: ClassVar[list[str]] = ["categories"]
    outside_advice: ClassVar[str] = (
        "training ignores those pixels: KITTI semantics stores Cityscapes label ids 0..33; use "
        "the files of training/semantic"
    )

    def label_format(self, config: DataConfig) -> LabelFormat:
        return LABELS

    def find_samples(self, config: DataConfig, split: str) -> list[Sample]:
        from segmentation.data.kitti_semantics import find_kitti_semantics

        return find_kitti_semantics(
            Path(config.root),
            split,
            val_fraction=config.val_fraction,
            skip_missing_labels=config.skip_missing_labels,
        )

    def detect(self, root: Path) -> bool:
        for base in (root, root / "data_semantics"):
            if (base / "training" / "semantic").is_dir():
                return True
        return False

    def inventory(self, root: Path, labels: str | None) -> Inventory:
        from segmentation.data import kitti_semantics as layout
        from segmentation.data.dataset import Sample
        from segmentation.data.inventory import Inventory, pair_files

        base = layout.data_semantics_dir(root)
        scheme = self.scheme_named(labels or "classes")
        description = (
            f"KITTI semantics {base}: the '{scheme.name}' scheme, {scheme.num_classes} classes"
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
        for split in ("training", "testing"):
            images_dir = base / split / "image_2"
            if not images_dir.is_dir():
                if split == "training":
                    inventory.problem("split", f"no folder {images_dir}")
                continue
            images = layout.image_files(images_dir)
            if split == "testing":
                inventory.splits[split] = [Sample(p, None, p.stem, layout.GROUP) for p in images]
                continue
            if not images:
                inventory.problem("empty", f"{images_dir} holds no NNNNNN_10.png images")
            pairs = [
                (image, layout.label_path_of(base, image), image.stem, layout.GROUP)
                for image in images
            ]
            labels_found = layout.image_files(base / "training" / "semantic")
            pair_files(inventory, split, pairs, labels_found)
        return inventory

    def check_scored_split(self, split: str) -> None:
        if split == "test":
            raise UserError(
                "the KITTI semantics testing images have no labels: score the val split, or "
                "render the test images with inference.py for the benchmark server"
            )

    def scorer(self, scheme: LabelScheme, device: torch.device) -> Scorer | None:
        from segmentation.evaluation.scorers import OfficialCityscapes

        # It counts the stored label ids of each sample against its prediction, pair by
        # pair: it needs no Cityscapes file names.
        return OfficialCityscapes(scheme, device)

    def export(
        self,
        root: Path,
        classes: torch.Tensor,
        probs: torch.Tensor,
        samples: list[Sample],
        scheme: LabelScheme,
    ) -> None:
        # The benchmark's result format: label ids under the input image's own name.
        write_named_like_inputs(root / "semantic", classes, samples, scheme)

    def export_note(self, export_dir: Path) -> str | None:
        return (
            f"label-id predictions in {export_dir / 'semantic'}, named like the input images "
            "(the KITTI semantics result format)"
        )

    def add_sample_command(self, subcommands: argparse._SubParsersAction) -> None:
        from segmentation.sample.cli import add_kitti_semantics_parser

        add_kitti_semantics_parser(subcommands)


KITTI_SEMANTICS = KittiSemanticsKind()
