"""inference.py --input that cannot be rendered as given: a video cut short, frames of one
name, a folder whose frames sit in its subfolders. Each is one line naming what to do."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import inference

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint) -> Path:
    return trained_checkpoint("cityscapes", "categories")


def render(checkpoint: Path, source, output: Path, *extra) -> int:
    args = ["--checkpoint", checkpoint, "--input", source, "--output", output, "--amp", "off"]
    return inference.main([*map(str, args), "--workers", "0", *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def decodable_frames(video: Path) -> int:
    """How many frames OpenCV reads from `video`: the reference for a damaged file."""
    capture = cv2.VideoCapture(str(video))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def test_a_video_cut_short_fails_naming_the_frames_read(checkpoint, tmp_path, capsys):
    # Motion-JPEG AVI: its header (with the frame count) comes first, so a copy cut short
    # still opens and announces all 10 frames; an mp4 from OpenCV keeps its index at the end.
    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 64))
    noise = np.random.default_rng(0)
    for _ in range(10):
        writer.write(noise.integers(0, 256, (64, 128, 3), dtype=np.uint8))
    writer.release()
    whole = video.read_bytes()
    video.write_bytes(whole[: len(whole) * 3 // 10])
    read = decodable_frames(video)
    assert 0 < read < 10
    assert int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT)) == 10

    output = tmp_path / "out"
    assert render(checkpoint, video, output, "--save", "color") == 2
    line = one_error_line(capsys)
    assert f"read {read} of the 10 frames that {video} announces" in line, line
    assert f"drive_{read:06d}" in line  # the first missing frame
    rendered = sorted(path.name for path in output.iterdir())
    assert rendered == [f"drive_{index:06d}_color.png" for index in range(read)]


def test_frames_of_one_name_in_a_glob_name_a_clashing_pair(
    cityscapes_root, checkpoint, tmp_path, capsys
):
    frame = next((cityscapes_root / "leftImg8bit" / "val").glob("*/*.png"))
    for camera in ("left", "right"):
        (tmp_path / camera).mkdir()
        shutil.copy(frame, tmp_path / camera / "frame_0001.png")
    pattern = str(tmp_path / "*" / "*.png")
    assert render(checkpoint, pattern, tmp_path / "out") == 2
    line = one_error_line(capsys)
    left, right = tmp_path / "left" / "frame_0001.png", tmp_path / "right" / "frame_0001.png"
    assert f"frames {left} and {right}" in line and "'frame_0001'" in line, line
    assert not (tmp_path / "out").exists()


def test_a_folder_of_subfolders_suggests_them_and_a_glob(
    cityscapes_root, checkpoint, tmp_path, capsys
):
    split = cityscapes_root / "leftImg8bit" / "val"
    cities = sorted(path.name for path in split.iterdir())  # 3 cities of 2 images
    assert render(checkpoint, split, tmp_path / "out") == 2
    line = one_error_line(capsys)
    assert f"({', '.join(cities)})" in line and str(split / cities[0]) in line, line
    suggested = line.split("quoted glob, e.g. ")[1]
    assert suggested == f"'{split}/*/*.png'"

    # The glob it suggests renders every frame of the split.
    assert render(checkpoint, shlex.split(suggested)[0], tmp_path / "out", "--save", "color") == 0
    assert len(list((tmp_path / "out").iterdir())) == 6
