"""The start-up check of a dataset's files: each image's and label's header, read in seconds
before training, where a broken file would otherwise stop the run only when an epoch reaches
it (an hour in), and a lossy label would never stop it at all.

Only the first bytes and the last twelve of each file are read: the PNG signature and IHDR
chunk (size, bit depth, colour type) and the IEND chunk that ends every complete PNG, or a
JPEG's SOF marker (its size). A file whose pixel data is damaged in the middle but whose size
is intact still gets through; what an interrupted copy or a renamed file leaves is caught.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from segmentation.data.dataset import Sample
from segmentation.data.io import JPEG_START, PNG_SIGNATURE, file_kind
from segmentation.data.loading import progress_bar
from segmentation.errors import UserError

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC
_PNG_START_BYTES = 26  # signature 8, IHDR length and type 8, width, height, depth, colour type
# Start-of-frame markers: every JPEG coding process (C4, C8 and CC are other tables).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset([0x01, *range(0xD0, 0xD8)])  # markers without a segment

PNG_COLOR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey + alpha", 6: "RGBA"}
# What each dataset's label reader takes (see io.read_label_ids, io.read_label_rgb, and
# folder.py's readers for "folder:index" and "folder:rgb" masks; a palette PNG decodes to its
# colours, which rgb masks can use and index masks cannot).
_LABEL_COLOR_TYPES = {
    "cityscapes": (0,),
    "kitti": (2, 6),
    "folder:index": (0,),
    "folder:rgb": (2, 3, 6),
}
_LABEL_KINDS = {
    "cityscapes": (
        "a single-channel 8-bit PNG",
        "use the *_labelIds.png files (not *_color.png)",
    ),
    "kitti": ("an 8-bit RGB PNG", "use the original gt_image_2 files"),
    "folder:index": (
        "a single-channel 8-bit PNG",
        "mask_format index needs class ids as 8-bit grey PNGs (colour masks: mask_format rgb)",
    ),
    "folder:rgb": (
        "an 8-bit colour PNG",
        "mask_format rgb needs colour masks (grey class-id masks: mask_format index)",
    ),
}
_REPLACE = "copy the original from the dataset, or remove the image and its label"


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "PNG" or "JPEG"
    width: int
    height: int
    bit_depth: int
    color_type: int | None  # PNG only: see PNG_COLOR_TYPES


def _png_header(path: Path, start: bytes, handle: BinaryIO) -> ImageHeader:
    if len(start) < _PNG_START_BYTES or start[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise UserError(f"{path} has a broken PNG header: {_REPLACE}")
    width, height = struct.unpack(">II", start[16:24])
    if width == 0 or height == 0:
        raise UserError(f"{path} has a broken PNG header (size {width}x{height}): {_REPLACE}")
    size = handle.seek(0, 2)
    handle.seek(max(0, size - len(_PNG_END)))
    if handle.read() != _PNG_END:
        raise UserError(f"{path} is truncated (it does not end with a PNG IEND chunk): {_REPLACE}")
    return ImageHeader("PNG", width, height, start[24], start[25])


def _jpeg_header(path: Path, handle: BinaryIO) -> ImageHeader:
    """Walk the JPEG segments to the first start-of-frame marker, seeking over the others."""
    handle.seek(2)
    while True:
        marker = handle.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            raise UserError(f"{path} is a broken JPEG (no frame header found): {_REPLACE}")
        kind = marker[1]
        while kind == 0xFF:  # fill bytes before a marker
            kind = (handle.read(1) or b"\x00")[0]
        if kind in _JPEG_NO_LENGTH:
            continue
        if kind in (0xD9, 0xDA):  # the image ends or its data starts before any frame header
            raise UserError(f"{path} is a broken JPEG (no frame header found): {_REPLACE}")
        raw = handle.read(2)
        length = struct.unpack(">H", raw)[0] if len(raw) == 2 else 0
        if length < 2:
            raise UserError(f"{path} is a truncated JPEG: {_REPLACE}")
        if kind in _JPEG_SOF:
            frame = handle.read(5)
            if len(frame) < 5:
                raise UserError(f"{path} is a truncated JPEG: {_REPLACE}")
            depth, height, width = struct.unpack(">BHH", frame)
            return ImageHeader("JPEG", width, height, depth, None)
        handle.seek(length - 2, 1)


def read_header(path: Path) -> ImageHeader:
    """The size and pixel format of a PNG or JPEG file, from its header; UserError naming
    the file when it is missing, empty, truncated (PNG) or neither format."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(_PNG_START_BYTES)
            if not start:
                raise UserError(f"{path} is empty: {_REPLACE}")
            if start.startswith(PNG_SIGNATURE):
                return _png_header(path, start, handle)
            if start.startswith(JPEG_START):
                return _jpeg_header(path, handle)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: restore it, or remove its pair") from None
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror or error})") from None
    raise UserError(f"{path} is neither a PNG nor a JPEG ({file_kind(start)}): {_REPLACE}")


def _label_problem(path: Path, label: ImageHeader, dataset: str) -> tuple[str, str] | None:
    """Why a label file is not what `dataset`'s label reader takes, or None."""
    expected, advice = _LABEL_KINDS[dataset]
    if label.format != "PNG":
        return "not_png", (
            f"label {path} is not a PNG (it is a {label.format}): lossy compression changes "
            "label values, use the dataset's original label PNG"
        )
    if label.color_type not in _LABEL_COLOR_TYPES[dataset] or label.bit_depth != 8:
        found = f"{PNG_COLOR_TYPES.get(label.color_type, 'unknown')}, {label.bit_depth}-bit"
        return "format", f"label {path} is not {expected} (found {found}): {advice}"
    return None


def pair_problem(sample: Sample, dataset: str) -> tuple[str, str] | None:
    """What is wrong with a sample's files, from their headers, or None: (kind, message),
    kind "unreadable" (missing, empty, truncated, not an image), "not_png" (a label in another
    format), "format" (a label of the wrong pixel format) or "size" (label and image differ).
    `dataset`: the labels' kind, "cityscapes", "kitti", "folder:index" or "folder:rgb"."""
    try:
        image = read_header(sample.image_path)
        if sample.label_path is None:
            return None
        label = read_header(sample.label_path)
    except UserError as error:
        return "unreadable", str(error)
    problem = _label_problem(sample.label_path, label, dataset)
    if problem is None and (label.width, label.height) != (image.width, image.height):
        problem = (
            "size",
            (
                f"label {sample.label_path} is {label.width}x{label.height} but its image "
                f"{sample.image_path} is {image.width}x{image.height}: the pair does not belong "
                f"together; {_REPLACE}"
            ),
        )
    return problem


def check_headers(samples: Sequence[Sample], dataset: str) -> None:
    """Read the header of every image and label of `samples` ("cityscapes", "kitti",
    "folder:index" or "folder:rgb" labels), and check that each label is what the dataset's
    reader takes and has its image's size. UserError naming the first broken file (and how
    many there are) on a problem."""
    if dataset not in _LABEL_KINDS:
        raise UserError(f"unknown dataset '{dataset}': use one of {', '.join(_LABEL_KINDS)}")
    problems = []
    progress = progress_bar(len(samples), "check data files", unit="pair")
    for sample in samples:
        problem = pair_problem(sample, dataset)
        if problem is not None:
            problems.append(problem[1])
        progress.update()
    progress.close()
    if len(problems) == 1:
        raise UserError(problems[0])
    if problems:
        raise UserError(
            f"{len(problems)} data files fail the start-up check; the first: {problems[0]}"
        )
