"""The cache's files: decoded uint8 frames and labels in flat memmap files, one set per part
(train, val), each with an index of where every sample starts and its shape.

    FOLDER/manifest.json        what it was built from (manifest.py); written last
    FOLDER/PART.images          every image, (H, W, 3) uint8 RGB, one after the other
    FOLDER/PART.labels          every label as its reader returns it, (H, W) or (H, W, C) uint8
    FOLDER/PART.index.npy       int64 rows: image offset, H, W, label offset (-1: none), label C

Frames vary in size (KITTI), hence flat files and offsets rather than one fixed-shape array.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import numpy as np

from segmentation.data.dataset import Sample

IMAGES, LABELS, INDEX = "{}.images", "{}.labels", "{}.index.npy"


class PartWriter:
    """Appends decoded samples of one part to its files in `folder`."""

    def __init__(self, folder: Path, part: str) -> None:
        self.folder, self.part = Path(folder), part
        # Closed by close() or discard(); the builder removes the folder on any failure.
        self.images = open(self.folder / IMAGES.format(part), "wb")  # noqa: SIM115
        try:
            self.labels = open(self.folder / LABELS.format(part), "wb")  # noqa: SIM115
        except BaseException:
            self.images.close()
            raise
        self.rows: list[tuple[int, int, int, int, int]] = []
        self.image_bytes = self.label_bytes = 0

    def append(self, image: np.ndarray, stored: np.ndarray | None) -> None:
        height, width = image.shape[:2]
        label_offset, channels = -1, 0
        if stored is not None:
            label_offset, channels = self.label_bytes, (stored.shape[2] if stored.ndim == 3 else 0)
            self.labels.write(np.ascontiguousarray(stored, np.uint8).data)
            self.label_bytes += stored.nbytes
        self.rows.append((self.image_bytes, height, width, label_offset, channels))
        self.images.write(np.ascontiguousarray(image, np.uint8).data)
        self.image_bytes += image.nbytes

    def close(self) -> None:
        """Flush the data to disk (a full disk shows here at the latest) and write the index."""
        for handle in (self.images, self.labels):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        with open(self.folder / INDEX.format(self.part), "wb") as handle:
            np.save(handle, np.array(self.rows, np.int64).reshape(-1, 5))
            handle.flush()
            os.fsync(handle.fileno())

    def discard(self) -> None:
        self.images.close()
        self.labels.close()


def write_manifest(folder: Path, manifest: dict, name: str) -> None:
    with open(Path(folder) / name, "w") as handle:
        json.dump(manifest, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _map(path: Path) -> np.ndarray:
    """A whole file as a read-only uint8 array backed by the page cache."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return np.empty(0, np.uint8)
        return np.frombuffer(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)


class CachedReader:
    """Reads the samples of one part of a cache: slices of its memory-mapped files, opened
    on first use in each process (DataLoader workers map the files themselves: a mapping is
    not pickled, and a forked one is not shared by accident)."""

    def __init__(self, folder: Path, part: str) -> None:
        self.folder, self.part = Path(folder), part
        self._opened: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._opened_by = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_opened": None, "_opened_by": -1}

    def _files(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._opened is None or self._opened_by != os.getpid():
            self._opened = (
                _map(self.folder / IMAGES.format(self.part)),
                _map(self.folder / LABELS.format(self.part)),
                np.load(self.folder / INDEX.format(self.part)),
            )
            self._opened_by = os.getpid()
        return self._opened

    def read(
        self, index: int, sample: Sample | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(image (H, W, 3) uint8, stored labels or None) of the part's sample `index`:
        read-only views of the cache."""
        images, labels, rows = self._files()
        offset, height, width, label_offset, channels = (int(value) for value in rows[index])
        image = images[offset : offset + height * width * 3].reshape(height, width, 3)
        if label_offset < 0:
            return image, None
        shape = (height, width, channels) if channels else (height, width)
        stored = labels[label_offset : label_offset + int(np.prod(shape))].reshape(shape)
        return image, stored
