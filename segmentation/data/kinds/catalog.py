"""The dataset kinds, by the name a config's data.dataset gives: the one list of them. A new
kind is one module beside this one (see base.DatasetKind) and one line here."""

from __future__ import annotations

from pathlib import Path

from segmentation.config import DataConfig
from segmentation.data.kinds.base import DatasetKind
from segmentation.data.kinds.bdd100k import BDD100K
from segmentation.data.kinds.cityscapes import CITYSCAPES
from segmentation.data.kinds.folder import FOLDER
from segmentation.data.kinds.kitti import KITTI
from segmentation.data.kinds.kitti_semantics import KITTI_SEMANTICS
from segmentation.data.kinds.mapillary import MAPILLARY
from segmentation.errors import UserError

KINDS: dict[str, DatasetKind] = {
    "cityscapes": CITYSCAPES,
    "kitti": KITTI,
    "kitti_semantics": KITTI_SEMANTICS,
    "bdd100k": BDD100K,
    "mapillary": MAPILLARY,
    "folder": FOLDER,
}


def kind_named(name: str) -> DatasetKind:
    """The kind called `name`; UserError listing the known ones."""
    if name not in KINDS:
        raise UserError(f"unknown dataset '{name}': use one of {', '.join(KINDS)}")
    return KINDS[name]


def kind_of(config: DataConfig) -> DatasetKind:
    """The kind of a validated data section."""
    return kind_named(config.dataset)


def detect_kind(root: Path) -> DatasetKind:
    """The one kind whose layout ROOT has; UserError when none or several fit."""
    found = [kind for kind in KINDS.values() if kind.detect(root)]
    if len(found) == 1:
        return found[0]
    layouts = "; ".join(f"{kind.name}: {kind.layout}" for kind in KINDS.values())
    if not found:
        raise UserError(
            f"{root} has none of the known layouts ({layouts}): name its layout with --dataset"
        )
    names = " and ".join(kind.name for kind in found)
    raise UserError(f"{root} looks like {names}: name its layout with --dataset")
