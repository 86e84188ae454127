"""Reading images and label maps from disk, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segmentation.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_START = b"\xff\xd8\xff"
_OTHER_FORMATS = {
    b"BM": "a BMP",
    b"RIFF": "a RIFF/WebP file",
    b"II*\x00": "a TIFF",
    b"MM\x00*": "a TIFF",
}


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
    """An image file -> (H, W, 3) uint8 RGB, turned by its EXIF orientation as viewers and
    annotation tools show it (OpenCV's default)."""
    bgr = _read(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def file_kind(start: bytes) -> str:
    """What the first bytes of a file say it is, for messages: "a JPEG", "empty", ..."""
    if not start:
        return "empty"
    if start.startswith(PNG_SIGNATURE):
        return "a PNG"
    if start.startswith(JPEG_START):
        return "a JPEG"
    for magic, kind in _OTHER_FORMATS.items():
        if start.startswith(magic):
            return kind
    return "an unknown format"


def read_png(path: Path, flags: int) -> np.ndarray:
    """A label PNG, refused when the file is anything else: a JPEG renamed .png decodes, but
    its lossy compression has changed the label values."""
    try:
        data = np.fromfile(path, np.uint8)
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror or error})") from None
    start = data[: len(PNG_SIGNATURE)].tobytes()
    if start != PNG_SIGNATURE:
        raise UserError(
            f"label file {path} is not a PNG (it is {file_kind(start)}): label files must be "
            "the dataset's original PNGs, lossy formats change label values"
        )
    array = cv2.imdecode(data, flags)
    if array is None:
        raise UserError(f"cannot read image {path}: the file is corrupt or not an image")
    return array


def read_label_ids(path: Path) -> np.ndarray:
    """A single-channel 8-bit label PNG (e.g. Cityscapes *_labelIds.png) -> (H, W) uint8."""
    label = read_png(path, cv2.IMREAD_UNCHANGED)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise UserError(
            f"label file {path} is not a single-channel 8-bit image "
            f"(found shape {label.shape}, {label.dtype}): use the *_labelIds.png files"
        )
    return label


def read_label_rgb(path: Path) -> np.ndarray:
    """A colour label PNG (e.g. KITTI gt_image_2) -> (H, W, 3) uint8 RGB, as stored: labels
    are never turned by an EXIF orientation (images are, see headers.py)."""
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    return cv2.cvtColor(read_png(path, flags), cv2.COLOR_BGR2RGB)


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
