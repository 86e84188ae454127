"""What a dataset check finds before reading any pixel: the samples of each split and every way
its files fail to pair (missing split folders, empty ones, images without masks, masks without
images, non-PNG masks). Each dataset kind (data/kinds/) fills an Inventory from the functions
its training discovery uses, so that the check sees what training and evaluation will see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segmentation.data.dataset import Sample
from segmentation.data.headers import LabelFormat
from segmentation.data.labels import LabelScheme
from segmentation.errors import UserError


@dataclass
class Inventory:
    """What discovery found: the samples of each split, and the problems of pairing.

    outside_advice: what to do about label values outside the classes (data.check prints it).
    unknown_is_unlabelled: label values outside the classes are unlabelled by the format's
        rule (an rgb mask's colours of no class), so data.check warns instead of refusing.
    """

    dataset: str
    root: Path
    scheme: LabelScheme
    label_format: LabelFormat  # for headers.check_pair
    reader: Callable[[Path], np.ndarray]
    description: str
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    outside_advice: str = ""
    unknown_is_unlabelled: bool = False

    def problem(self, kind: str, message: str) -> None:
        self.problems.setdefault(kind, []).append(message)


def pair_files(inventory: Inventory, split: str, pairs: list, labels: list[Path]) -> None:
    """Record a split of (image, label path, name, group) pairs: existing labels pair, the
    others are missing, and labels no image claimed are orphans."""
    samples, claimed = [], set()
    for image, label, name, group in pairs:
        if label.is_file():
            claimed.add(label)
            samples.append(Sample(image, label, name, group))
        else:
            inventory.problem("missing", f"{image}: no {label}")
    for label in labels:
        if label not in claimed:
            inventory.problem("orphan", f"{label}: its image is missing")
    inventory.splits[split] = samples


def discover(root: Path, dataset: str | None = None, labels: str | None = None) -> Inventory:
    """The inventory of ROOT as `dataset` lays it out (found from ROOT when None)."""
    from segmentation.data.kinds.catalog import detect_kind, kind_named

    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist")
    kind = kind_named(dataset) if dataset else detect_kind(root)
    return kind.inventory(root, labels)
