"""make_video.sh on awkward folder names and bad frames, and inference on a full disk: one
line each, nothing half-written."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from command_line import ENV, REPO

pytestmark = pytest.mark.slow  # both run the scripts as child processes


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint) -> Path:
    """last.pt of the session's tiny categories run (FPN/resnet18, bce_dice, one epoch)."""
    return trained_checkpoint("cityscapes", "categories")


def make_video(*args) -> subprocess.CompletedProcess:
    # The script finds imageio-ffmpeg's binary through $PYTHON when no ffmpeg is on PATH.
    return subprocess.run(
        ["bash", str(REPO / "make_video.sh"), *map(str, args)],
        env={**ENV, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_video_takes_any_folder_name_and_fails_in_one_line(tmp_path):
    frames = tmp_path / "br[1] {a,b} 50% $x"
    frames.mkdir()
    for index in range(12):
        image = np.full((32, 48, 3), 20 * index, np.uint8)
        cv2.imwrite(str(frames / f"frame_{index:06d}_overlay.png"), image)
    output = tmp_path / "v[1]" / "out.mp4"
    result = make_video(frames, output, 10, "*_overlay.png")
    assert result.returncode == 0, result.stderr
    assert "12 frames" in result.stdout
    capture = cv2.VideoCapture(str(output))
    decoded = 0
    while capture.read()[0]:
        decoded += 1
    capture.release()
    assert decoded == 12

    for fps in ("0", "0.0"):
        result = make_video(frames, tmp_path / "zero.mp4", fps)
        assert result.returncode == 2 and result.stderr.startswith("error: FPS"), result.stderr
        assert result.stderr.count("\n") == 1

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "frame_000000.png").write_text("not a PNG")
    result = make_video(broken, tmp_path / "broken.mp4")
    assert result.returncode != 0
    assert result.stderr.startswith("error: ffmpeg") and result.stderr.count("\n") == 1, (
        result.stderr
    )
    assert not (tmp_path / "broken.mp4").exists()


def tiny_files() -> None:
    """In the child: writes past 4 KiB fail with EFBIG, as on a full disk (no SIGXFSZ kill)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_inference_on_a_full_disk_is_one_line(checkpoint, cityscapes_root, tmp_path):
    output = tmp_path / "out"
    command = [
        sys.executable,
        str(REPO / "inference.py"),
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(cityscapes_root / "leftImg8bit" / "val" / "lindau"),
        "--output",
        str(output),
        "--workers",
        "0",
    ]
    result = subprocess.run(
        command,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        preexec_fn=tiny_files,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write"), lines
    assert "File too large" in lines[0]
    assert list(output.iterdir()) == []
