"""inference.py on the GPU straight into an mp4 and into JPEG frames (encoded by nvJPEG),
against its PNG overlays of the same frames: the overlays made on the device, the frames in
order, nothing left but the outputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from gpu_runs import PYTHON

from segmentation.inference.encode import device_jpeg_available

pytestmark = pytest.mark.gpu

FRAMES = 4  # of the 64x128 tree's demoVideo sequence stuttgart_00


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255**2 / error)


def luma(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)[..., 0]


def video_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_inference_to_mp4_and_jpeg_on_the_gpu(
    bf16_run, cityscapes_root, device, script, work, record_property
):
    if device == "cuda":  # the JPEGs below are encoded on the GPU, not by OpenCV
        assert device_jpeg_available(torch.device("cuda")), "torchvision has no nvJPEG encoder"
    frames = cityscapes_root / "leftImg8bit" / "demoVideo" / "stuttgart_00"
    folder = work / "video"
    outputs = {
        "png": folder / "png",
        "mp4": folder / "drive.mp4",
        "jpg": folder / "jpg",
    }
    extra = {"png": (), "mp4": ("--crf", "10"), "jpg": ("--image-format", "jpg")}
    runs = [
        script(
            f"inference_video_{name}",
            [
                *(PYTHON, "inference.py", "--checkpoint", str(bf16_run / "best.pt")),
                *("--input", str(frames), "--output", str(output), "--device", device),
                *("--batch-size", "3", *extra[name]),
            ],
        )
        for name, output in outputs.items()
    ]
    for run in runs:
        run.wait()
    overlays = [cv2.imread(str(path)) for path in sorted(outputs["png"].glob("*_overlay.png"))]
    assert len(overlays) == FRAMES
    decoded = video_frames(outputs["mp4"])
    assert len(decoded) == FRAMES, f"{len(decoded)} frames in the mp4, not {FRAMES}"
    assert sorted(path.name for path in folder.iterdir()) == ["drive.mp4", "jpg", "png"]
    video_psnr = []
    for index, frame in enumerate(decoded):
        nearest = [psnr(luma(frame), luma(overlay)) for overlay in overlays]
        assert int(np.argmax(nearest)) == index, f"frame {index} is nearest another: {nearest}"
        video_psnr.append(nearest[index])
    jpegs = sorted(outputs["jpg"].glob("*_overlay.jpg"))
    assert len(jpegs) == FRAMES
    jpeg_psnr = [psnr(cv2.imread(str(path)), overlay) for path, overlay in zip(jpegs, overlays)]
    record_property(
        "detail",
        f"mp4 luma PSNR min {min(video_psnr):.1f} dB, JPEG PSNR min {min(jpeg_psnr):.1f} dB",
    )
    assert min(video_psnr) >= 35 and min(jpeg_psnr) >= 30
