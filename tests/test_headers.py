"""The start-up header check and the readers agree on what an image's size is and on which
masks they take: images turned by their EXIF orientation (read as viewers show them, their
masks too), and palette PNGs of fewer than 8 bits as rgb masks."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from segmentation.data import check
from segmentation.data.dataset import FullResolutionDataset, Sample
from segmentation.data.folder import RgbMaskReader, read_index_mask
from segmentation.data.headers import check_pair, pair_problem
from segmentation.data.io import read_label_rgb, read_rgb
from segmentation.data.kinds.cityscapes import LABELS as CITYSCAPES_LABELS
from segmentation.data.kinds.folder import RGB_MASKS
from segmentation.errors import UserError
from segmentation.sample.folder import SAMPLE_CLASSES

STORED = (20, 40)  # (height, width) of the test images' stored pixels


def exif(orientation: int, order: str) -> bytes:
    """EXIF data (a TIFF header and one IFD) holding the orientation tag alone."""
    mark = b"II" if order == "<" else b"MM"
    entry = struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0)  # SHORT, count 1
    return mark + struct.pack(order + "HI", 42, 8) + struct.pack(order + "H", 1) + entry + b"\0" * 4


def jpeg_with_orientation(pixels: np.ndarray, orientation: int, order: str = "<") -> bytes:
    """A JPEG of (H, W, 3) BGR pixels with an APP1 EXIF segment right after its SOI marker."""
    data = cv2.imencode(".jpg", pixels)[1].tobytes()
    app1 = b"Exif\0\0" + exif(orientation, order)
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def png_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    """A PNG with an eXIf chunk between IHDR and the pixel data."""
    data = cv2.imencode(".png", pixels)[1].tobytes()
    body = exif(orientation, ">")
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body
    chunk += struct.pack(">I", zlib.crc32(chunk[4:]))
    end_of_ihdr = 8 + 25
    return data[:end_of_ihdr] + chunk + data[end_of_ihdr:]


def image_pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (*STORED, 3), np.uint8)


@pytest.mark.parametrize(
    "name, orientation, encode",
    [
        ("II.jpg", 6, lambda p, o: jpeg_with_orientation(p, o, "<")),
        ("MM.jpg", 8, lambda p, o: jpeg_with_orientation(p, o, ">")),
        ("eXIf.png", 6, png_with_orientation),
    ],
)
def test_an_image_turned_by_exif_pairs_with_a_mask_as_shown(tmp_path, name, orientation, encode):
    image = tmp_path / name
    image.write_bytes(encode(image_pixels(), orientation))
    assert read_rgb(image).shape == (40, 20, 3)  # OpenCV turns it: 20 wide, 40 high
    as_shown, as_stored = tmp_path / "shown.png", tmp_path / "stored.png"
    cv2.imwrite(str(as_shown), np.zeros((40, 20), np.uint8))
    cv2.imwrite(str(as_stored), np.zeros(STORED, np.uint8))
    assert pair_problem(Sample(image, as_shown, "x", ""), CITYSCAPES_LABELS) is None
    kind, message = pair_problem(Sample(image, as_stored, "x", ""), CITYSCAPES_LABELS)
    assert kind == "size"
    assert message.startswith(
        f"label {as_stored} is 40x20 but its image {image} is 20x40 as read ("
    )
    assert f"by its EXIF orientation {orientation})" in message and "exiftool" in message
    # Evaluation reads pairs without the start-up check: its message names the EXIF turn too.
    with pytest.raises(UserError, match=f"EXIF orientation {orientation}") as raised:
        FullResolutionDataset([Sample(image, as_stored, "x", "")], read_index_mask)[0]
    assert str(raised.value) == message


def test_a_turn_that_keeps_the_size_is_noted(tmp_path):
    image = tmp_path / "half_turn.jpg"
    image.write_bytes(jpeg_with_orientation(image_pixels(), 3))
    mask = tmp_path / "mask.png"
    cv2.imwrite(str(mask), np.zeros(STORED, np.uint8))
    assert check_pair(Sample(image, mask, "x", ""), CITYSCAPES_LABELS).turn_unverified
    plain = tmp_path / "plain.jpg"
    cv2.imwrite(str(plain), image_pixels())
    assert not check_pair(Sample(plain, mask, "x", ""), CITYSCAPES_LABELS).turn_unverified


def test_labels_are_read_as_stored_whatever_their_exif(tmp_path):
    label = tmp_path / "gt.png"
    label.write_bytes(png_with_orientation(image_pixels(), 6))
    assert read_label_rgb(label).shape == (*STORED, 3)


def run_check(capsys, *args) -> tuple[int, str]:
    code = check.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_dataset_check_names_the_exif_orientation(folder_root, tmp_path, capsys):
    root = Path(shutil.copytree(folder_root("index"), tmp_path / "data"))
    city = root / "images" / "val" / "lindau"
    pixels = [cv2.imread(str(path)) for path in sorted(city.glob("*.png"))]
    for path in city.glob("*.png"):
        path.unlink()
    # Stored as its mask, but turned a quarter when read: the mask cannot be its image's.
    quarter = city / "lindau_000000_000019.jpg"
    quarter.write_bytes(jpeg_with_orientation(pixels[0], 6))
    # Turned half: the same size either way, so the check can only point at it.
    half = city / "lindau_000001_000019.jpg"
    half.write_bytes(jpeg_with_orientation(pixels[1], 3))
    code, output = run_check(capsys, root, "--workers", 0)
    assert code == 1, output
    mask = root / "masks" / "val" / "lindau" / "lindau_000000_000019.png"
    assert (
        f"  label {mask} is 128x64 but its image {quarter} is 64x128 as read (turned 90 degrees "
        "clockwise by its EXIF orientation 6): a mask must match its image as viewers show it"
    ) in output
    assert "warning: 1 images are turned by their EXIF orientation when read" in output
    assert f"  {half}: EXIF orientation 3, turned 180 degrees" in output


def palette_png(path: Path, indices: np.ndarray, palette: list, bits: int) -> None:
    """A palette PNG of `bits` per pixel, written by Pillow (not by OpenCV, which reads it)."""
    from PIL import Image

    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    padded = [*palette, *[palette[-1]] * (2**bits - len(palette))]  # Pillow sizes by it
    image.putpalette([channel for colour in padded for channel in colour])
    image.save(path, bits=bits)
    assert path.read_bytes()[24:26] == bytes([bits, 3])  # IHDR: bit depth, colour type 3


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_a_palette_png_of_any_depth_is_an_rgb_mask(tmp_path, bits):
    colours = [colour for _, colour, _ in SAMPLE_CLASSES]
    entries = min(2**bits, 6)
    palette = [*colours[: entries - 1], (1, 2, 3)]  # the last entry is no class's colour
    indices = np.arange(16).reshape(2, 8) % entries
    mask, image = tmp_path / "mask.png", tmp_path / "image.png"
    palette_png(mask, indices, palette, bits)
    cv2.imwrite(str(image), np.zeros((2, 8, 3), np.uint8))
    assert pair_problem(Sample(image, mask, "x", ""), RGB_MASKS) is None
    expected = np.where(indices == entries - 1, 255, indices)
    assert RgbMaskReader(np.array(colours, np.uint8))(mask).tolist() == expected.tolist()


def test_a_mask_of_the_right_kind_at_another_depth_is_told_to_be_re_saved(tmp_path):
    image, mask = tmp_path / "image.png", tmp_path / "mask.png"
    cv2.imwrite(str(image), np.zeros((2, 8, 3), np.uint8))
    cv2.imwrite(str(mask), np.zeros((2, 8, 3), np.uint16))
    kind, message = pair_problem(Sample(image, mask, "x", ""), RGB_MASKS)
    assert kind == "format"
    assert (
        message == f"label {mask} is a 16-bit RGB PNG, not an 8-bit colour PNG: re-save it as 8-bit"
    )


def test_the_dataset_check_counts_a_4_bit_palette_mask_as_its_colours(
    folder_root, tmp_path, capsys
):
    root = Path(shutil.copytree(folder_root("rgb"), tmp_path / "data"))
    code, before = run_check(capsys, root, "--workers", 0)
    mask = root / "masks" / "val" / "lindau" / "lindau_000000_000019.png"
    rgb = cv2.cvtColor(cv2.imread(str(mask)), cv2.COLOR_BGR2RGB)
    palette, indices = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    assert len(palette) <= 16
    palette_png(mask, indices.reshape(rgb.shape[:2]), [tuple(c) for c in palette], 4)
    code, after = run_check(capsys, root, "--workers", 0)
    assert code == 0, after
    assert after == before  # the same counts, the same warning about black, no problem
