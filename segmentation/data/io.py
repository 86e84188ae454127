"""Reading images and label maps from disk, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segmentation.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def limit_opencv_threads() -> None:
    """Run OpenCV on one thread in this process, before DataLoader workers are forked from it.

    A worker forked while the parent's OpenCV thread pool is running inherits the pool without
    its threads and deadlocks on its first parallel call (seen in cv2.setNumThreads itself).
    Each worker decodes one image at a time anyway; the parallelism is across workers.
    """
    cv2.setNumThreads(1)


def _read(path: Path, flags: int) -> np.ndarray:
    # cv2.imread returns None for missing, truncated and undecodable files alike.
    array = cv2.imread(str(path), flags)
    if array is None:
        if not Path(path).is_file():
            raise UserError(f"file not found: {path}")
        raise UserError(f"cannot read image {path}: the file is corrupt or not an image")
    return array


def read_rgb(path: Path) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB."""
    bgr = _read(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label_ids(path: Path) -> np.ndarray:
    """A single-channel 8-bit label PNG (e.g. Cityscapes *_labelIds.png) -> (H, W) uint8."""
    label = _read(path, cv2.IMREAD_UNCHANGED)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise UserError(
            f"label file {path} is not a single-channel 8-bit image "
            f"(found shape {label.shape}, {label.dtype}): use the *_labelIds.png files"
        )
    return label


def encode_png(array: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) RGB uint8 -> the bytes of a PNG file."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise UserError(f"cannot encode an array of shape {array.shape} as PNG")
    return encoded.tobytes()


def write_png(path: Path, array: np.ndarray) -> None:
    """Write (H, W) or (H, W, 3) RGB uint8 as PNG, creating the parent folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(array))
    except OSError as error:
        raise UserError(
            f"cannot write {path} ({error.strerror or error}): free disk space or check that "
            "the folder is writable"
        ) from None
