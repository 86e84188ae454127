"""The start-up check of a dataset's files: each image's and label's header, read in seconds
before training, where a broken file would otherwise stop the run only when an epoch reaches
it (an hour in), and a lossy label would never stop it at all.

Only the first bytes and the last twelve of each file are read: the PNG signature and IHDR
chunk (size, bit depth, colour type) and the IEND chunk that ends every complete PNG, or a
JPEG's SOF marker (its size); and the EXIF orientation of either, found before the pixel data.
A file whose pixel data is damaged in the middle but whose size is intact still gets through;
what an interrupted copy or a renamed file leaves is caught.

EXIF orientation: images are read as viewers and annotation tools show them, turned by their
EXIF orientation (OpenCV's default); labels are read as stored. An image's size here is its
size as read, so that a mask drawn on the image as shown pairs with it, and a mask of the
stored pixels of a turned image is named as such instead of as a pair that does not belong
together.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from segmentation.data.io import JPEG_START, PNG_SIGNATURE, file_kind
from segmentation.errors import UserError

if TYPE_CHECKING:  # dataset.py names the EXIF orientation through size_mismatch below
    from segmentation.data.dataset import Sample

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC
_PNG_START_BYTES = 26  # signature 8, IHDR length and type 8, width, height, depth, colour type
# Start-of-frame markers: every JPEG coding process (C4, C8 and CC are other tables).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset([0x01, *range(0xD0, 0xD8)])  # markers without a segment

PNG_COLOR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey + alpha", 6: "RGBA"}


@dataclass(frozen=True)
class LabelFormat:
    """What a dataset's label reader takes, as the header check sees it: the PNG colour types
    and their bit depths, in words, and what to do about another file. Each dataset kind
    (data/kinds/) gives its own; GREY_8BIT, RGB_8BIT and COLOUR hold the usual types."""

    color_types: dict[int, tuple[int, ...]]
    expected: str  # "a single-channel 8-bit PNG"
    advice: str  # what to do about a label of another format


GREY_8BIT = {0: (8,)}  # io.read_label_ids, a folder dataset's index masks
RGB_8BIT = {2: (8,), 6: (8,)}  # io.read_label_rgb
# A palette PNG decodes to its colours, at any depth: colour masks can use it.
COLOUR = {2: (8,), 3: (1, 2, 4, 8), 6: (8,)}
_REPLACE = "copy the original from the dataset, or remove the image and its label"
_EXIF_ORIENTATION_TAG = 0x0112
# What each EXIF orientation does to the stored pixels to show them (1: nothing).
ORIENTATIONS = {
    2: "mirrored left-right",
    3: "turned 180 degrees",
    4: "mirrored top-bottom",
    5: "mirrored and turned 90 degrees",
    6: "turned 90 degrees clockwise",
    7: "mirrored and turned 90 degrees",
    8: "turned 90 degrees counter-clockwise",
}


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "PNG" or "JPEG"
    width: int  # as stored
    height: int
    bit_depth: int
    color_type: int | None  # PNG only: see PNG_COLOR_TYPES
    orientation: int = 1  # EXIF orientation, 1..8 (see ORIENTATIONS)

    @property
    def size_as_read(self) -> tuple[int, int]:
        """(width, height) of the image as read, turned by its orientation (read_rgb)."""
        turned = self.orientation in (5, 6, 7, 8)
        return (self.height, self.width) if turned else (self.width, self.height)


def exif_orientation(tiff: bytes) -> int:
    """The orientation tag (1..8) of EXIF data (a TIFF header and its first IFD); 1 when
    there is none or it is unreadable, as OpenCV then shows the pixels as stored."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    (offset,) = struct.unpack(order + "I", tiff[4:8])
    if offset + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
    for entry in range(offset + 2, min(offset + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind = struct.unpack(order + "HH", tiff[entry : entry + 4])
        if tag == _EXIF_ORIENTATION_TAG and kind == 3:  # 3: SHORT
            (value,) = struct.unpack(order + "H", tiff[entry + 8 : entry + 10])
            return value if value in ORIENTATIONS else 1
    return 1


def _png_orientation(handle: BinaryIO) -> int:
    """The orientation in an eXIf chunk between IHDR and the pixel data, seeking over the
    other chunks (a few reads)."""
    handle.seek(len(PNG_SIGNATURE) + 25)  # IHDR: length, type, 13 bytes, CRC
    while True:
        chunk = handle.read(8)
        if len(chunk) < 8:
            return 1
        length, kind = struct.unpack(">I4s", chunk)
        if kind in (b"IDAT", b"IEND"):
            return 1
        if kind == b"eXIf":
            return exif_orientation(handle.read(length))
        handle.seek(length + 4, 1)


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
    return ImageHeader("PNG", width, height, start[24], start[25], _png_orientation(handle))


def _jpeg_header(path: Path, handle: BinaryIO) -> ImageHeader:
    """Walk the JPEG segments to the first start-of-frame marker, seeking over the others
    but an APP1 segment of EXIF data (its orientation)."""
    handle.seek(2)
    orientation = 1
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
            return ImageHeader("JPEG", width, height, depth, None, orientation)
        if kind == 0xE1:  # APP1: EXIF data follows "Exif\0\0"
            segment = handle.read(length - 2)
            if segment.startswith(b"Exif\x00\x00"):
                orientation = exif_orientation(segment[6:])
            continue
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


def _label_problem(
    path: Path, label: ImageHeader, label_format: LabelFormat
) -> tuple[str, str] | None:
    """Why a label file is not what the dataset's label reader takes, or None."""
    expected, advice = label_format.expected, label_format.advice
    if label.format != "PNG":
        return "not_png", (
            f"label {path} is not a PNG (it is a {label.format}): lossy compression changes "
            "label values, use the dataset's original label PNG"
        )
    depths = label_format.color_types.get(label.color_type)
    kind = PNG_COLOR_TYPES.get(label.color_type, "unknown")
    if depths is None:
        found = f"{kind}, {label.bit_depth}-bit"
        return "format", f"label {path} is not {expected} (found {found}): {advice}"
    if label.bit_depth not in depths:
        # The right kind of PNG at another depth: re-saving it is all it takes.
        return "format", (
            f"label {path} is a {label.bit_depth}-bit {kind} PNG, not {expected}: re-save it "
            "as 8-bit"
        )
    return None


def size_mismatch(
    label_path: Path,
    label_size: tuple[int, int],
    image_path: Path,
    image_size: tuple[int, int],
    orientation: int = 1,
) -> str:
    """The message for a label whose (width, height) is not its image's as read; an image
    turned by its EXIF orientation says so, and when the label has the stored pixels' size,
    what to do about it."""
    (label_width, label_height), (width, height) = label_size, image_size
    image = f"{image_path} is {width}x{height}"
    if orientation != 1:
        image += f" as read ({ORIENTATIONS[orientation]} by its EXIF orientation {orientation})"
    if orientation in (5, 6, 7, 8) and label_size == (height, width):
        advice = (
            "a mask must match its image as viewers show it: turn the mask likewise, or, if it "
            "was drawn on the stored pixels, remove the image's orientation tag "
            "(exiftool -Orientation= FILE)"
        )
    else:
        advice = f"the pair does not belong together; {_REPLACE}"
    return f"label {label_path} is {label_width}x{label_height} but its image {image}: {advice}"


def image_orientation(path: Path) -> int:
    """The EXIF orientation of an image file (1 when it has none or is not a PNG or JPEG)."""
    try:
        return read_header(path).orientation
    except UserError:
        return 1


@dataclass(frozen=True)
class PairCheck:
    """What the headers of a sample's files say: a problem (kind, message) or None, the
    image's EXIF orientation (1: none), and whether the image is turned but a mask of its
    stored pixels would have its size as read too (turned 180 degrees, or square), so that
    the sizes cannot tell which of the two the mask follows."""

    problem: tuple[str, str] | None
    orientation: int = 1
    turn_unverified: bool = False


def check_pair(sample: Sample, label_format: LabelFormat) -> PairCheck:
    """What is wrong with a sample's files, from their headers: kind "unreadable" (missing,
    empty, truncated, not an image), "not_png" (a label in another format), "format" (a label
    of the wrong pixel format) or "size" (the label is not its image's size as read).
    `label_format`: what the dataset's label reader takes (its kind's label_format)."""
    try:
        image = read_header(sample.image_path)
        if sample.label_path is None:
            return PairCheck(None, image.orientation)
        label = read_header(sample.label_path)
    except UserError as error:
        return PairCheck(("unreadable", str(error)))
    problem = _label_problem(sample.label_path, label, label_format)
    label_size = (label.width, label.height)  # labels are read as stored
    if problem is None and label_size != image.size_as_read:
        message = size_mismatch(
            sample.label_path, label_size, sample.image_path, image.size_as_read, image.orientation
        )
        problem = ("size", message)
    unverified = image.orientation != 1 and (image.width, image.height) == image.size_as_read
    return PairCheck(problem, image.orientation, problem is None and unverified)


def pair_problem(sample: Sample, label_format: LabelFormat) -> tuple[str, str] | None:
    """check_pair's problem alone: (kind, message), or None."""
    return check_pair(sample, label_format).problem


def check_headers(samples: Sequence[Sample], label_format: LabelFormat) -> None:
    """Read the header of every image and label of `samples`, and check that each label is
    what the dataset's reader takes (`label_format`) and has its image's size. UserError
    naming the first broken file (and how many there are) on a problem."""
    from segmentation.data.loading import progress_bar  # torch: not for the config's checks

    problems = []
    progress = progress_bar(len(samples), "check data files", unit="pair")
    for sample in samples:
        problem = pair_problem(sample, label_format)
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
