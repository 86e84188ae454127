"""Mapillary Vistas v1.2 (66 labels) and v2.0 (124): JPEG images of many sizes, palette PNGs of
label indices, and the class list in the download's config JSON. Scored by the confusion
matrix over the evaluated labels, or over the 19 Cityscapes classes they map onto."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from segmentation.config import DataConfig, Text, allowed
from segmentation.data.headers import LabelFormat
from segmentation.data.kinds.base import DatasetKind, LabelReader, label_names
from segmentation.errors import UserError

if TYPE_CHECKING:
    import argparse

    import torch

    from segmentation.data.dataset import Sample
    from segmentation.data.inventory import Inventory
    from segmentation.data.labels import LabelScheme
    from segmentation.data.mapillary_labels import MapillaryLabel

SCHEMES = ("classes", "cityscapes")
VERSIONS = ("v1.2", "v2.0")
DEFAULT_VERSION = "v1.2"
# Palette PNGs as released; 8-bit grey PNGs of the same indices read alike.
LABELS = LabelFormat(
    {3: (1, 2, 4, 8), 0: (8,)},
    "a palette PNG of label indices (or 8-bit grey)",
    "use the files of {training,validation}/VERSION/labels, not the panoptic or instance PNGs",
)


class MapillaryLabelEntry(BaseModel):
    """One label of ROOT/config_VERSION.json, as a run's config carries it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Text
    readable: Text
    color: tuple[Annotated[int, Field(ge=0, le=255)], ...] = Field(min_length=3, max_length=3)
    evaluate: bool


class MapillaryOptions(DataConfig):
    """Mapillary Vistas: the layout of its download, one of its two label versions."""

    dataset: Literal["mapillary"] = Field(
        "mapillary", description="layout of the dataset under data.root"
    )
    version: Literal["v1.2", "v2.0"] = Field(
        DEFAULT_VERSION,
        description="Mapillary Vistas labels: v1.2 (66 labels, 65 scored) or v2.0 (124, 116 "
        "scored), with their ROOT/config_VERSION.json",
    )
    # Copied when a run starts so that its config and checkpoints carry the classes
    # (evaluation and inference need no dataset root).
    label_list: list[MapillaryLabelEntry] | None = Field(
        None,
        description="the labels of ROOT/config_VERSION.json, filled in when a run starts",
        json_schema_extra=allowed("null (a run fills it in; a resumed run checks it)"),
    )


class MapillaryKind(DatasetKind):
    name: ClassVar[str] = "mapillary"
    options: ClassVar[type[DataConfig]] = MapillaryOptions
    layout: ClassVar[str] = (
        "ROOT/config_v1.2.json|config_v2.0.json, ROOT/{training,validation,testing}/images, "
        "{training,validation}/VERSION/labels"
    )
    schemes: ClassVar[tuple[str, ...]] = SCHEMES
    labels_help: ClassVar[str] = (
        "Mapillary Vistas: classes (the version's scored labels) or cityscapes (the 19 "
        "Cityscapes classes)"
    )
    default_labels: ClassVar[list[str]] = ["classes"]
    outside_advice: ClassVar[str] = (
        "training ignores those pixels: Mapillary labels store indices into the labels of "
        "ROOT/config_VERSION.json; check that data.version matches the label folder"
    )

    # ------------------------------------------------------------------ labels

    def scheme_named(self, labels: str | list[str]) -> LabelScheme:
        # The classes are those of the dataset's config JSON: a scheme needs the data root.
        raise UserError(
            "a Mapillary Vistas scheme is read from ROOT/config_VERSION.json: name the data "
            f"root and data.version, and one of {', '.join(SCHEMES)}"
        )

    def scheme(self, config: DataConfig) -> LabelScheme:
        from segmentation.data.mapillary_labels import scheme_of_labels

        names = label_names(config.labels or self.default_labels)
        return scheme_of_labels(_labels(config), config.version, ",".join(names), self.name)

    def offered_schemes(self, config: DataConfig) -> list[LabelScheme]:
        # Both schemes read the dataset's config JSON, which scheme_named cannot.
        return [self.scheme(config.model_copy(update={"labels": [name]})) for name in self.schemes]

    def label_reader(self, config: DataConfig | None) -> LabelReader:
        from segmentation.data.mapillary import read_class_indices

        return read_class_indices

    def label_format(self, config: DataConfig) -> LabelFormat:
        return LABELS

    def resolved(self, config: DataConfig) -> DataConfig:
        entries = [MapillaryLabelEntry(**vars(label)) for label in _dataset_labels(config)]
        return config.model_copy(update={"label_list": entries})

    def reader_identity(self, config: DataConfig) -> dict:
        # The version decides which label files are read.
        return {**super().reader_identity(config), "version": config.version}

    # ------------------------------------------------------------------ files

    def find_samples(self, config: DataConfig, split: str) -> list[Sample]:
        from segmentation.data.mapillary import find_mapillary

        _dataset_labels(config)  # labels are read as indices into these: the file must agree
        return find_mapillary(
            Path(config.root),
            split,
            config.version,
            skip_missing_labels=config.skip_missing_labels,
        )

    def detect(self, root: Path) -> bool:
        from segmentation.data import mapillary as layout

        has_config = any(layout.config_path(root, v).is_file() for v in VERSIONS)
        return has_config and any(layout.images_dir(root, s).is_dir() for s in layout.FOLDERS)

    def inventory(self, root: Path, labels: str | None) -> Inventory:
        """data.check: `labels` may name a version beside the scheme (e.g. "cityscapes,v2.0");
        without one, the default version, or the one whose config the tree has."""
        from segmentation.data import mapillary as layout
        from segmentation.data.dataset import Sample
        from segmentation.data.inventory import Inventory, pair_files
        from segmentation.data.mapillary_labels import mapillary_scheme

        names = label_names(labels or "classes")
        versions = [name for name in names if name in VERSIONS]
        schemes = [name for name in names if name not in VERSIONS] or ["classes"]
        if versions:
            version = versions[0]
        elif layout.config_path(root, DEFAULT_VERSION).is_file():
            version = DEFAULT_VERSION
        else:
            version = next(
                (v for v in VERSIONS if layout.config_path(root, v).is_file()), DEFAULT_VERSION
            )
        scheme = mapillary_scheme(root, version, ",".join(schemes), self.name)
        description = (
            f"Mapillary Vistas {root} ({version} labels): the '{scheme.name}' scheme, "
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
        for split, folder in layout.FOLDERS.items():
            images_dir = layout.images_dir(root, split)
            if not images_dir.is_dir():
                if split in layout.LABELLED_SPLITS:
                    inventory.problem("split", f"no folder {images_dir}")
                continue
            images = layout.image_files(images_dir)
            if split == "test":
                inventory.splits[folder] = [Sample(p, None, p.stem, layout.GROUP) for p in images]
                continue
            if not images:
                inventory.problem("empty", f"{images_dir} holds no NAME.jpg images")
            pairs = [
                (image, layout.label_path_of(root, split, version, image), image.stem, layout.GROUP)
                for image in images
            ]
            labels_dir = layout.labels_dir(root, split, version)
            found = sorted(labels_dir.glob("*.png")) if labels_dir.is_dir() else []
            pair_files(inventory, folder, pairs, found)
        return inventory

    def check_scored_split(self, split: str) -> None:
        if split == "test":
            raise UserError(
                "the Mapillary Vistas testing images have no labels: score the val split, or "
                "render the test images with inference.py for the benchmark server"
            )

    # ------------------------------------------------------------------ scores and exports

    def export(
        self,
        root: Path,
        classes: torch.Tensor,
        probs: torch.Tensor,
        samples: list[Sample],
        scheme: LabelScheme,
    ) -> None:
        # The official evaluator reads PNGs of label indices named like the ground truth
        # (mapillary/mapillary_vistas README): the version's palette PNGs, as released.
        from segmentation.data.mapillary import write_palette_png

        for class_map, sample in zip(classes.byte().cpu().numpy(), samples):
            indices = scheme.to_label_ids(class_map)
            write_palette_png(root / "labels" / f"{sample.name}.png", indices, scheme.palette)

    def export_note(self, export_dir: Path) -> str | None:
        return (
            f"label-index predictions in {export_dir / 'labels'}, palette PNGs named like the "
            "input images (the format of the Mapillary Vistas labels and its evaluator)"
        )

    def add_sample_command(self, subcommands: argparse._SubParsersAction) -> None:
        from segmentation.sample.cli import add_mapillary_parser

        add_mapillary_parser(subcommands)


def _dataset_labels(config: DataConfig) -> list[MapillaryLabel]:
    """The labels of ROOT/config_VERSION.json; a config that carries labels already (a run's
    or a checkpoint's) must find the same ones there: the label PNGs would mean other classes."""
    from segmentation.data.mapillary import config_path
    from segmentation.data.mapillary_labels import read_labels

    found = read_labels(Path(config.root), config.version)
    if config.label_list is not None and _labels(config) != found:
        raise UserError(
            f"{config_path(Path(config.root), config.version)} is not the class list this model "
            "was trained with: point --data-root at that dataset, or set data.version to the "
            "version it was trained on"
        )
    return found


def _labels(config: DataConfig) -> list[MapillaryLabel]:
    """The labels the config carries, else those of the dataset at data.root."""
    from segmentation.data.mapillary_labels import MapillaryLabel, read_labels

    if config.label_list is None:
        return read_labels(Path(config.root), config.version)
    return [
        MapillaryLabel(entry.name, entry.readable, tuple(entry.color), entry.evaluate)
        for entry in config.label_list
    ]


MAPILLARY = MapillaryKind()
