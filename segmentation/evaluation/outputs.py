"""Where evaluate.py writes, checked before the evaluation: its outputs must lie apart from each
other and outside the dataset. A clash found afterwards would lose the evaluation's work, and
one not found would replace a file (`--report DIR --output-json DIR/index.html`) or put files
into the dataset that its next scan reads as data."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segmentation.errors import UserError


@dataclass(frozen=True)
class Output:
    flag: str  # the command-line flag that names it, for the message
    path: Path
    folder: bool  # a folder the command writes into; False: one file


def _within(path: Path, folder: Path) -> bool:
    """Whether resolved `path` is `folder` or lies inside it."""
    return path == folder or folder in path.parents


def check_apart(outputs: Sequence[Output]) -> None:
    """Refuse two outputs that are one path, or one inside the other's folder (the folder's
    writer could replace it, or count it as its own)."""
    for first, second in itertools.combinations(outputs, 2):
        first_path, second_path = first.path.resolve(), second.path.resolve()
        if first_path == second_path:
            raise UserError(
                f"{first.flag} and {second.flag} are one path, {first.path}: give each its own"
            )
        for inner, outer, inner_path, outer_path in (
            (first, second, first_path, second_path),
            (second, first, second_path, first_path),
        ):
            if outer.folder and _within(inner_path, outer_path):
                raise UserError(
                    f"{inner.flag} {inner.path} is inside the {outer.flag} folder {outer.path}: "
                    f"give {inner.flag} a path outside it"
                )


def check_outside_dataset(outputs: Sequence[Output], root: Path) -> None:
    """Refuse an output inside the dataset root: a report in ROOT/images/val would be read as
    images by the next scan of the split, predictions as labels."""
    root_path = Path(root).resolve()
    for output in outputs:
        if _within(output.path.resolve(), root_path):
            raise UserError(
                f"{output.flag} {output.path} is inside the dataset root {root}: write it "
                "outside the dataset"
            )
