"""KITTI road (data_road): road and ego-lane ground truth, scored as the devkit scores it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from segmentation.config import DataConfig, Float
from segmentation.data.headers import RGB_8BIT, LabelFormat
from segmentation.data.kinds.base import DatasetKind, LabelReader, Scorer, label_names
from segmentation.data.labels import KITTI_SCHEMES

if TYPE_CHECKING:
    import argparse

    import torch

    from segmentation.data.dataset import Sample
    from segmentation.data.inventory import Inventory
    from segmentation.data.labels import LabelScheme

LABELS = LabelFormat(RGB_8BIT, "an 8-bit RGB PNG", "use the original gt_image_2 files")


class KittiOptions(DataConfig):
    """KITTI road: the data_road layout."""

    dataset: Literal["kitti"] = Field("kitti", description="layout of the dataset under data.root")
    val_fraction: Annotated[Float, Field(gt=0, lt=1)] = Field(
        0.1, description="share of each category's training images held out to validate"
    )


class KittiKind(DatasetKind):
    name: ClassVar[str] = "kitti"
    options: ClassVar[type[DataConfig]] = KittiOptions
    layout: ClassVar[str] = "ROOT/data_road/{training,testing}/image_2, training/gt_image_2"
    schemes: ClassVar[tuple[str, ...]] = KITTI_SCHEMES
    labels_help: ClassVar[str] = "KITTI: road, lane"
    default_labels: ClassVar[list[str]] = ["road"]
    precision_recall_curve: ClassVar[bool] = True

    def scheme_named(self, labels: str | list[str]) -> LabelScheme:
        from segmentation.data.labels import kitti_scheme

        return kitti_scheme(label_names(labels))

    def label_reader(self, config: DataConfig | None) -> LabelReader:
        from segmentation.data.kitti import read_kitti_codes

        return read_kitti_codes

    def label_format(self, config: DataConfig) -> LabelFormat:
        return LABELS

    def find_samples(self, config: DataConfig, split: str) -> list[Sample]:
        from segmentation.data.kitti import find_kitti_road

        return find_kitti_road(
            Path(config.root),
            split,
            mode=self.scheme(config).name,
            val_fraction=config.val_fraction,
            skip_missing_labels=config.skip_missing_labels,
        )

    def detect(self, root: Path) -> bool:
        from segmentation.data import kitti

        if (root / "data_road").is_dir() or (root / "training" / "gt_image_2").is_dir():
            return True
        # KITTI semantics has training/image_2 too: tell them apart by the image names.
        images = root / "training" / "image_2"
        return images.is_dir() and any(kitti.IMAGE_NAME.match(p.name) for p in images.iterdir())

    def inventory(self, root: Path, labels: str | None) -> Inventory:
        from segmentation.data import kitti
        from segmentation.data.dataset import Sample
        from segmentation.data.inventory import Inventory, pair_files

        base = kitti.data_road_dir(root)
        scheme = self.scheme_named(labels or "road")
        mode = scheme.name
        description = f"KITTI road {base}: {mode} ground truth"
        reader = self.label_reader(None)
        inventory = Inventory(self.name, root, scheme, LABELS, reader, description)
        gt_dir = base / "training" / "gt_image_2"
        pairs = []
        for split in ("training", "testing"):
            images_dir = base / split / "image_2"
            if not images_dir.is_dir():
                if split == "training":
                    inventory.problem("split", f"no folder {images_dir}")
                continue
            images = sorted(p for p in images_dir.iterdir() if kitti.IMAGE_NAME.match(p.name))
            if not images and split == "training":
                inventory.problem("empty", f"{images_dir} holds no {{um,umm,uu}}_NNNNNN.png images")
            if split == "testing":
                inventory.splits[split] = [
                    Sample(p, None, p.stem, p.stem.split("_")[0]) for p in images
                ]
                continue
            for image in images:
                category, index = kitti.IMAGE_NAME.match(image.name).groups()
                if mode == "road" or category == "um":
                    label = kitti.gt_path(base, category, mode, index)
                    pairs.append((image, label, image.stem, category))
            found = sorted(gt_dir.glob(f"*_{mode}_*.png")) if gt_dir.is_dir() else []
            labels_found = [p for p in found if kitti.GT_NAME.match(p.name)]
            pair_files(inventory, split, pairs, labels_found)
        return inventory

    def scorer(self, scheme: LabelScheme, device: torch.device) -> Scorer | None:
        from segmentation.evaluation.scorers import KittiRoadDevkit

        return KittiRoadDevkit(device)

    def export(
        self,
        root: Path,
        classes: torch.Tensor,
        probs: torch.Tensor,
        samples: list[Sample],
        scheme: LabelScheme,
    ) -> None:
        import torch

        from segmentation.data.io import write_png
        from segmentation.evaluation.kitti_road import quantize

        # The devkit's result format: road probability as 8-bit, e.g. um_road_000000,
        # quantized as kitti_road.quantize counts it.
        levels = quantize(probs[:, 1]).to(torch.uint8).cpu().numpy()
        for level, sample in zip(levels, samples):
            category, index = sample.name.split("_")
            write_png(root / f"{category}_{scheme.name}_{index}.png", level)

    def add_sample_command(self, subcommands: argparse._SubParsersAction) -> None:
        from segmentation.sample.cli import add_kitti_parser

        add_kitti_parser(subcommands)


KITTI = KittiKind()
