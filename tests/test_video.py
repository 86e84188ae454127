"""make_video.sh: frames to an H.264 mp4, read back with OpenCV."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "make_video.sh"


def make_video(*args) -> subprocess.CompletedProcess:
    # No ffmpeg on PATH needed: the script falls back to imageio-ffmpeg's binary via $PYTHON.
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def write_frames(folder: Path, count: int, height: int, width: int, suffix="_overlay") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, : (index + 1) * width // (count + 1)] = (40 * index) % 256
        cv2.imwrite(str(folder / f"frame_{index:06d}{suffix}.png"), image)


def read_video(path: Path) -> tuple[int, tuple[int, int]]:
    """(frames decoded, (height, width))."""
    capture = cv2.VideoCapture(str(path))
    count, size = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, frame.shape[:2]
    capture.release()
    return count, size


@pytest.mark.parametrize(
    ("height", "width", "suffix"),
    [(64, 128, "_overlay"), (37, 51, " overlay")],  # odd sizes are padded; names with spaces
)
def test_frames_become_a_video_with_every_frame(tmp_path, height, width, suffix):
    frames = tmp_path / "rendered frames"
    write_frames(frames, 7, height, width, suffix)
    write_frames(frames, 2, height, width, suffix="_color")  # not matched by the pattern
    output = tmp_path / "videos" / "out.mp4"
    result = make_video(frames, output, 10, f"*{suffix}.png")
    assert result.returncode == 0, result.stderr
    assert "7 frames" in result.stdout
    count, size = read_video(output)
    assert count == 7
    assert size == (height + height % 2, width + width % 2)


def test_no_matching_frame_is_a_clear_error(tmp_path):
    frames = tmp_path / "frames"
    write_frames(frames, 2, 16, 16)
    result = make_video(frames, tmp_path / "out.mp4", 20, "*_labelIds.png")
    assert result.returncode == 2
    assert result.stderr.startswith("error: no frame in") and "*_labelIds.png" in result.stderr
    assert not (tmp_path / "out.mp4").exists()
    missing = make_video(tmp_path / "nowhere", tmp_path / "out.mp4")
    assert missing.returncode == 2 and missing.stderr.startswith("error: frames folder")


def test_an_existing_output_is_refused(tmp_path):
    frames = tmp_path / "frames"
    write_frames(frames, 2, 16, 16)
    output = tmp_path / "out.mp4"
    output.write_bytes(b"keep me")
    result = make_video(frames, output)
    assert result.returncode == 2
    assert "already exists" in result.stderr and result.stderr.count("\n") == 1
    assert output.read_bytes() == b"keep me"


def test_bad_arguments(tmp_path):
    assert make_video(tmp_path).returncode == 2
    frames = tmp_path / "frames"
    write_frames(frames, 1, 16, 16)
    result = make_video(frames, tmp_path / "out.mp4", "fast")
    assert result.returncode == 2 and "FPS must be a number" in result.stderr
