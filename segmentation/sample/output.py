"""Where a sample generator writes: its output folder, checked and made, and the summary of
what it wrote. Shared by every generator (generate.py, folder.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from segmentation.errors import UserError


@dataclass
class Summary:
    """What a generator wrote: image counts per split (or category) and the number of files."""

    dataset: str
    root: Path
    images: dict[str, int] = field(default_factory=dict)
    files: int = 0

    def __str__(self) -> str:
        counts = ", ".join(f"{name} {n}" for name, n in self.images.items())
        return (
            f"wrote {self.files} files of a synthetic {self.dataset} tree to {self.root} ({counts})"
        )


def prepare_root(root: str | Path, overwrite: bool) -> Path:
    """`root`, made if missing; a UserError if it is a file, or a non-empty folder without
    `overwrite`."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} exists and is not a folder: choose another output folder")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise UserError(
            f"{root} is not empty: choose a new folder, or pass --overwrite to write over "
            "the files there (nothing is deleted)"
        )
    root.mkdir(parents=True, exist_ok=True)
    return root
