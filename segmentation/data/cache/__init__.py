"""A cache of decoded training and validation samples, so that no step waits on PNG decoding.

`open_cache` builds it when it is missing, checks that it matches the run's files and
settings, and returns a reader per part (train, val) for SegmentationDataset. Build one ahead
of time with `python -m segmentation.data.cache --config CONFIG [--rebuild]`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from segmentation.data.cache.builder import build_cache
from segmentation.data.cache.manifest import check_manifest, expected_manifest, read_manifest
from segmentation.data.cache.store import CachedReader
from segmentation.data.dataset import Sample
from segmentation.errors import UserError

__all__ = ["CachedReader", "open_cache"]


def open_cache(
    folder: Path,
    parts: dict[str, list[Sample]],
    read_label: Callable[[Path], np.ndarray],
    *,
    scale: float,
    scheme: str,
    label_reader: dict,
    rebuild: bool = False,
) -> dict[str, CachedReader]:
    """A reader per part of the cache at `folder`, built first when it is missing (or when
    `rebuild`). A cache of other files or settings is refused, never silently replaced.

    label_reader: how labels are read, as the manifest records it (the dataset, and a folder
    dataset's classes)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"data.cache {folder} is a file: give a folder")
    expected = expected_manifest(parts, scale=scale, scheme=scheme, label_reader=label_reader)
    found = read_manifest(folder)
    if found is None and folder.is_dir() and any(folder.iterdir()):
        # Never build over, or remove, files that are not a cache of ours.
        raise UserError(
            f"data.cache {folder} holds files but no cache (no manifest.json): choose a new folder"
        )
    if found is None or rebuild:
        build_cache(folder, parts, expected, read_label, replace=found is not None)
        found = read_manifest(folder)
    check_manifest(folder, found, expected)
    return {part: CachedReader(folder, part) for part in parts}
