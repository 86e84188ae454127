"""Mapillary Vistas label schemes: the version's own classes, read from its config JSON, and
the 19 Cityscapes classes through the mapping used in cross-dataset work.

A label PNG stores, per pixel, an index into the config's "labels" list (66 of them in v1.2,
124 in v2.0). Each label says whether it is scored ("evaluate"). The official evaluation
(mapillary/mapillary_vistas, evaluation/confusion_matrix.py,
reduce_evaluation_to_evaluated_categories) counts the confusion matrix over every label, then
deletes the rows and columns of the labels that are not evaluated: their ground-truth pixels
count for nothing. Both schemes here therefore map the labels with evaluate=false to
IGNORE_INDEX, and a model never predicts them (v1.2: Unlabeled; v2.0: the 8 void, ambiguous
and group labels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segmentation.data.labels import IGNORE_INDEX, LabelScheme, cityscapes_train_id_scheme
from segmentation.data.mapillary import config_path
from segmentation.errors import UserError

SCHEMES = ("classes", "cityscapes")

# The v1.2 labels of each of the 19 Cityscapes classes, as lhoyer/HRDA maps Mapillary Vistas
# v1.2 onto the Cityscapes train ids to evaluate domain generalization
# (tools/convert_datasets/mapillary.py, its id_to_trainid, there keyed by v1.2 label index;
# written here by the labels' names). Every other label is ignored.
CITYSCAPES_OF_V12 = {
    "road": ("construction--flat--road", "marking--general", "object--manhole"),
    "sidewalk": ("construction--barrier--curb", "construction--flat--sidewalk"),
    "building": ("construction--structure--building",),
    "wall": ("construction--barrier--wall",),
    "fence": ("construction--barrier--fence",),
    "pole": ("object--support--pole", "object--support--utility-pole"),
    "traffic light": ("object--traffic-light",),
    "traffic sign": ("object--traffic-sign--front",),
    "vegetation": ("nature--vegetation",),
    "terrain": ("nature--terrain",),
    "sky": ("nature--sky",),
    "person": ("human--person",),
    "rider": ("human--rider--bicyclist", "human--rider--motorcyclist", "human--rider--other-rider"),
    "car": ("object--vehicle--car",),
    "truck": ("object--vehicle--truck",),
    "bus": ("object--vehicle--bus",),
    "train": ("object--vehicle--on-rails",),
    "motorcycle": ("object--vehicle--motorcycle",),
    "bicycle": ("object--vehicle--bicycle",),
}
_CITYSCAPES_OF_NAME = {name: city for city, names in CITYSCAPES_OF_V12.items() for name in names}


@dataclass(frozen=True)
class MapillaryLabel:
    """One entry of a config JSON's "labels" list; its position is its stored index."""

    name: str  # e.g. construction--flat--road
    readable: str  # e.g. Road
    color: tuple[int, int, int]
    evaluate: bool


@dataclass(frozen=True, eq=False)
class MapillaryScheme(LabelScheme):
    """A scheme over Mapillary label indices, with the colour of every index (the version's
    palette), so that predictions can be written as the dataset's own palette PNGs."""

    palette: np.ndarray | None = None  # (L, 3) uint8, one colour per stored index


def read_labels(root: Path, version: str) -> list[MapillaryLabel]:
    """The labels of ROOT/config_VERSION.json, in their order (the stored indices)."""
    path = config_path(root, version)
    if not path.is_file():
        raise UserError(
            f"no {path}: Mapillary Vistas {version} needs its class list, the config JSON of "
            "the download (set data.version to the version you have)"
        )
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["labels"]
        labels = [
            MapillaryLabel(
                str(entry["name"]),
                str(entry["readable"]),
                tuple(int(value) for value in entry["color"]),
                bool(entry["evaluate"]),
            )
            for entry in entries
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{path} is not a Mapillary config ({type(error).__name__}: {error}): restore the "
            "file from the download"
        ) from None
    if not 0 < len(labels) <= IGNORE_INDEX or any(len(label.color) != 3 for label in labels):
        raise UserError(
            f"{path} lists {len(labels)} labels or a colour that is not [r, g, b]: restore the "
            "file from the download"
        )
    return labels


def cityscapes_class_of(name: str, version: str) -> str | None:
    """The Cityscapes class a Mapillary label counts as, or None (ignored).

    v1.2: the table above. v2.0 has no published table: its labels take the class of the v1.2
    label of the same name, or of their parent where v2.0 split a v1.2 label into finer ones
    (human--person--individual, object--traffic-light--*). v1.2's marking--general has no
    v2.0 counterpart of either kind (v2.0 splits markings by shape), so v2.0's lane markings
    are ignored, where v1.2 counts them as road."""
    if version == "v1.2":
        return _CITYSCAPES_OF_NAME.get(name)
    parent = name.rsplit("--", 1)[0]
    return _CITYSCAPES_OF_NAME.get(name) or _CITYSCAPES_OF_NAME.get(parent)


def _palette(labels: list[MapillaryLabel]) -> np.ndarray:
    return np.array([label.color for label in labels], np.uint8)


def classes_scheme(labels: list[MapillaryLabel], dataset: str) -> MapillaryScheme:
    """The version's evaluated labels as classes, in the config's order; the others ignored."""
    scored = [index for index, label in enumerate(labels) if label.evaluate]
    lookup = np.full(256, IGNORE_INDEX, np.uint8)
    lookup[scored] = np.arange(len(scored))
    return MapillaryScheme(
        name="classes",
        dataset=dataset,
        class_names=tuple(labels[index].readable for index in scored),
        colors=_palette(labels)[scored],
        lookup=lookup,
        export_label_ids=np.array(scored, np.uint8),
        stored_values=len(labels),
        palette=_palette(labels),
    )


def cityscapes_scheme(labels: list[MapillaryLabel], version: str, dataset: str) -> MapillaryScheme:
    """The 19 Cityscapes classes (the names, colours and order of the Cityscapes kind's
    19-class scheme), each Mapillary label counted as its Cityscapes class or ignored.

    Predictions go out as Mapillary indices: each class as the label whose readable name is
    the class's (Road for road), else the first label of the class in the config's order."""
    base = cityscapes_train_id_scheme(dataset)
    index_of = {name: index for index, name in enumerate(base.class_names)}
    lookup = np.full(256, IGNORE_INDEX, np.uint8)
    members: dict[str, list[int]] = {name: [] for name in base.class_names}
    for index, label in enumerate(labels):
        city = cityscapes_class_of(label.name, version) if label.evaluate else None
        if city is not None:
            lookup[index] = index_of[city]
            members[city].append(index)
    export = []
    for city, indices in members.items():
        same = [i for i in indices if labels[i].readable.lower() == city]
        # A class without a label in this config (none in the real ones) goes out as ignored.
        export.append((same or indices or [IGNORE_INDEX])[0])
    return MapillaryScheme(
        name="cityscapes",
        dataset=dataset,
        class_names=base.class_names,
        colors=base.colors,
        lookup=lookup,
        export_label_ids=np.array(export, np.uint8),
        stored_values=len(labels),
        contains_evaluated_classes=True,
        palette=_palette(labels),
    )


def scheme_of_labels(
    labels: list[MapillaryLabel], version: str, scheme: str, dataset: str
) -> MapillaryScheme:
    """The scheme named `scheme` over a version's labels."""
    if scheme not in SCHEMES:
        raise UserError(
            f"unknown Mapillary Vistas label scheme '{scheme}': use one of {', '.join(SCHEMES)}"
        )
    if scheme == "classes":
        return classes_scheme(labels, dataset)
    return cityscapes_scheme(labels, version, dataset)


def mapillary_scheme(root: Path, version: str, scheme: str, dataset: str) -> MapillaryScheme:
    """The scheme named `scheme` over the labels of ROOT/config_VERSION.json."""
    if scheme not in SCHEMES:  # before reading the file: a wrong name is the first mistake
        return scheme_of_labels([], version, scheme, dataset)
    return scheme_of_labels(read_labels(root, version), version, scheme, dataset)
