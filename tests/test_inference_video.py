"""inference.py to a video (--output NAME.mp4) and to JPEG frames, and the overlays made on the
device: each against the PNG frames of the same run, which tests/test_inference.py checks
against the model by hand."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from command_line import ENV, REPO

import inference
from segmentation.data.labels import get_scheme
from segmentation.inference import render as render_module
from segmentation.inference import video_writer
from segmentation.inference.render import Renderer, RenderOptions, decode_workers
from segmentation.prediction.trained_model import load_trained_model
from segmentation.visualize import DeviceColors, overlay

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint) -> Path:
    return trained_checkpoint("cityscapes", "classes")


@pytest.fixture
def frames_dir(cityscapes_root) -> Path:
    """4 frames of a demo sequence, 64x128: a moving scene, each frame visibly another."""
    return cityscapes_root / "leftImg8bit" / "demoVideo" / "stuttgart_00"


def render(checkpoint: Path, source, output: Path, *extra) -> int:
    args = ["--checkpoint", checkpoint, "--input", source, "--output", output, "--amp", "off"]
    if "--workers" not in extra:
        args += ["--workers", "0"]
    return inference.main([str(arg) for arg in [*args, *extra]])


def read_bgr(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """The frames (BGR) that OpenCV decodes from `path`, and the frame rate it announces."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255**2 / error)


def luma(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)[..., 0]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_a_video_holds_the_png_overlays_in_order(checkpoint, frames_dir, tmp_path, capsys):
    pngs = tmp_path / "pngs"
    assert render(checkpoint, frames_dir, pngs) == 0
    overlays = [read_bgr(path) for path in sorted(pngs.glob("*_overlay.png"))]
    assert len(overlays) == 4
    video = tmp_path / "videos" / "drive.mp4"
    # Batches of 3 over 4 frames, two decoding processes, 8 writing threads: a frame finished
    # out of order would land in the wrong place.
    extra = ("--crf", "10", "--batch-size", "3", "--workers", "2")
    assert render(checkpoint, frames_dir, video, *extra) == 0
    assert "rendered 4 frames" in capsys.readouterr().out
    assert leftovers(video.parent) == ["drive.mp4"]
    frames, fps = read_video(video)
    assert len(frames) == len(overlays)
    assert fps == pytest.approx(video_writer.DEFAULT_FPS)
    for index, frame in enumerate(frames):
        # yuv420p keeps the brightness at full resolution and halves the colour's: on 64x128
        # frames of sharp class edges the colour costs ~5 dB, the brightness ~2 dB at crf 10.
        assert psnr(luma(frame), luma(overlays[index])) >= 35
        assert psnr(frame, overlays[index]) >= 30
        # Each frame is nearest to its own PNG: a swap of two frames would show here.
        others = [psnr(luma(frame), luma(other)) for other in overlays]
        assert int(np.argmax(others)) == index, others


def test_a_video_input_gives_its_frame_rate_and_colour_masks(
    checkpoint, frames_dir, tmp_path, capsys
):
    source = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 12.5, (128, 64))
    for frame in sorted(frames_dir.glob("*.png")):
        writer.write(read_bgr(frame))
    writer.release()
    colors = tmp_path / "colors.mkv"
    assert render(checkpoint, source, colors, "--save", "color", "--crf", "0") == 0
    frames, fps = read_video(colors)
    assert fps == pytest.approx(12.5)
    pngs = tmp_path / "pngs"
    assert render(checkpoint, source, pngs, "--save", "color") == 0
    masks = [read_bgr(path) for path in sorted(pngs.glob("*_color.png"))]
    assert len(frames) == len(masks) == 4
    for frame, mask in zip(frames, masks):
        assert psnr(luma(frame), luma(mask)) >= 35
    # --fps wins over the input's rate.
    again = tmp_path / "again.mp4"
    assert render(checkpoint, source, again, "--fps", "5") == 0
    assert read_video(again)[1] == pytest.approx(5)


def test_odd_frame_sides_are_padded_to_even(checkpoint, frames_dir, tmp_path):
    odd = tmp_path / "odd"
    odd.mkdir()
    for path in sorted(frames_dir.glob("*.png"))[:2]:
        cv2.imwrite(str(odd / path.name), read_bgr(path)[:63, :127])
    video = tmp_path / "odd.mp4"
    assert render(checkpoint, odd, video) == 0
    frames, _ = read_video(video)
    assert len(frames) == 2 and frames[0].shape == (64, 128, 3)


def test_frames_of_another_size_are_refused_leaving_no_video(
    checkpoint, frames_dir, tmp_path, capsys
):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    first, second = sorted(frames_dir.glob("*.png"))[:2]
    cv2.imwrite(str(mixed / first.name), read_bgr(first))
    cv2.imwrite(str(mixed / second.name), read_bgr(second)[:40, :100])
    video = tmp_path / "out" / "mixed.mp4"
    assert render(checkpoint, mixed, video) == 2
    line = one_error_line(capsys)
    assert "is 100x40 but the video's frames are 128x64" in line, line
    assert leftovers(video.parent) == []


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--save", "overlay", "color"), "holds one kind of picture"),
        (("--save", "labelIds"), "label ids need lossless PNGs"),
        (("--image-format", "jpg"), "--image-format is for frames written to a folder"),
        (("--crf", "60"), "--crf must be within 0 (lossless) and 51"),
    ],
)
def test_video_outputs_it_cannot_make_are_refused(
    checkpoint, frames_dir, tmp_path, capsys, extra, fragment
):
    video = tmp_path / "out.mp4"
    assert render(checkpoint, frames_dir, video, *extra) == 2
    assert fragment in one_error_line(capsys)
    assert leftovers(tmp_path) == []


def test_an_existing_video_is_kept_unless_overwrite(checkpoint, frames_dir, tmp_path, capsys):
    video = tmp_path / "out.mp4"
    video.write_bytes(b"keep me")
    assert render(checkpoint, frames_dir, video) == 2
    assert "already exists" in one_error_line(capsys)
    assert video.read_bytes() == b"keep me"
    assert render(checkpoint, frames_dir, video, "--overwrite") == 0
    assert len(read_video(video)[0]) == 4
    assert leftovers(tmp_path) == ["out.mp4"]


def test_an_interrupted_video_leaves_no_file(checkpoint, frames_dir, tmp_path, monkeypatch, capsys):
    """Ctrl-C after two batches: exit 130, nothing under the final name, no temporary file."""
    predict = Renderer._predict
    calls = []

    def interrupted(self, images, sink):
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return predict(self, images, sink)

    monkeypatch.setattr(Renderer, "_predict", interrupted)
    video = tmp_path / "out.mp4"
    assert render(checkpoint, frames_dir, video, "--batch-size", "1") == 130
    assert "interrupted" in capsys.readouterr().err
    assert leftovers(tmp_path) == []


def test_a_frame_that_arrives_after_an_abort_starts_no_video(tmp_path):
    """Ctrl-C while the first frame is still being rendered: the writer's thread gets that
    frame only after the abort began. It must not start ffmpeg then, whose file would outlive
    the abort's clean-up (seen as a flaky .out.partial.mp4 in the test above)."""
    import threading
    from concurrent.futures import Future

    frame = np.zeros((32, 64, 3), np.uint8)
    pending: Future = Future()
    writer = video_writer.VideoWriter(
        tmp_path / "out.mp4", 20.0, video_writer.VideoOptions(), overwrite=False
    )
    with pytest.raises(KeyboardInterrupt), writer:
        writer.put(pending)
        threading.Timer(0.3, pending.set_result, [frame]).start()
        raise KeyboardInterrupt
    assert leftovers(tmp_path) == []
    assert writer._process is None or writer._process.poll() is not None


def test_ffmpeg_failing_is_its_first_error_line(
    checkpoint, frames_dir, tmp_path, monkeypatch, capsys
):
    fake = tmp_path / "ffmpeg"
    fake.write_text(
        "#!/bin/sh\necho 'Unknown encoder libx264' >&2\necho 'Error opening output' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(video_writer, "find_ffmpeg", lambda: str(fake))
    video = tmp_path / "out" / "drive.mp4"
    assert render(checkpoint, frames_dir, video) == 2
    line = one_error_line(capsys)
    assert line == f"error: ffmpeg could not write {video}: Unknown encoder libx264", line
    assert leftovers(video.parent) == []


# A child that renders a video and stops after its first frame has reached ffmpeg's file, saying
# so, until signalled.
BLOCKING_RENDER = """
import sys, threading, time
import inference
from segmentation.inference.render import Renderer

predict = Renderer._predict
def predict_then_block(self, images, sink):
    if getattr(self, "predicted", False):
        deadline = time.monotonic() + 60
        while not sink.writer.temporary.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        print("rendering", flush=True)
        threading.Event().wait()
    self.predicted = True
    return predict(self, images, sink)
Renderer._predict = predict_then_block
sys.exit(inference.main(sys.argv[1:]))
"""


@pytest.mark.slow  # a child Python
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_video_render_removes_its_temporary_file(
    checkpoint, frames_dir, tmp_path, signum
):
    video = tmp_path / "out.mp4"
    command = [
        *(sys.executable, "-c", BLOCKING_RENDER, "--checkpoint", str(checkpoint)),
        *("--input", str(frames_dir), "--output", str(video), "--batch-size", "1"),
        *("--workers", "0", "--amp", "off"),
    ]
    child = subprocess.Popen(
        command, env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "rendering", child.stderr.read()
        assert video_writer.partial_path(video).exists()  # ffmpeg has the first frame
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert leftovers(tmp_path) == []


def test_jpeg_frames_are_close_to_the_pngs_and_skipped_on_a_rerun(
    checkpoint, frames_dir, tmp_path, capsys
):
    pngs, jpegs = tmp_path / "pngs", tmp_path / "jpegs"
    kinds = ("--save", "overlay", "color", "labelIds")
    assert render(checkpoint, frames_dir, pngs, *kinds) == 0
    assert render(checkpoint, frames_dir, jpegs, *kinds, "--image-format", "jpg") == 0
    names = leftovers(jpegs)
    assert len(names) == 12
    assert {Path(name).suffix for name in names if "_labelIds" in name} == {".png"}
    assert {Path(name).suffix for name in names if "_labelIds" not in name} == {".jpg"}
    for path in sorted(jpegs.glob("*_overlay.jpg")):
        reference = read_bgr(pngs / path.name.replace(".jpg", ".png"))
        assert psnr(read_bgr(path), reference) >= 30
    for path in sorted(jpegs.glob("*_labelIds.png")):  # lossless: the same ids
        assert np.array_equal(read_bgr(path), read_bgr(pngs / path.name))
    capsys.readouterr()
    assert render(checkpoint, frames_dir, jpegs, *kinds, "--image-format", "jpg") == 0
    assert "rendered 0 frames" in capsys.readouterr().out
    # The PNGs of a folder are not JPEGs: asked for JPEGs there, every frame is rendered.
    assert render(checkpoint, frames_dir, pngs, "--image-format", "jpg") == 0
    assert "rendered 4 frames" in capsys.readouterr().out


def test_device_overlay_equals_the_host_overlay_within_one():
    scheme = get_scheme("cityscapes", "classes")
    generator = np.random.default_rng(3)
    images = generator.integers(0, 256, (2, 3, 24, 40), dtype=np.uint8)
    classes = generator.integers(0, scheme.num_classes, (2, 24, 40)).astype(np.uint8)
    classes[:, :3] = 255  # ignored pixels: left untouched
    colors = DeviceColors(scheme, torch.device("cpu"))
    for alpha in (0.0, 0.3, 0.5, 0.77, 1.0):
        made = colors.overlay(torch.from_numpy(images), torch.from_numpy(classes), alpha)
        for image, class_map, picture in zip(images, classes, made.numpy()):
            expected = overlay(image.transpose(1, 2, 0).copy(), class_map, scheme, alpha)
            difference = np.abs(picture.astype(int) - expected.astype(int))
            assert difference.max() <= 1, alpha
            assert np.array_equal(picture[:3], expected[:3])


def test_renders_with_pictures_made_on_the_device_match_the_host_path(
    checkpoint, frames_dir, tmp_path
):
    """The GPU's path (colours and blend as tensor operations), run on the CPU's tensors."""
    trained = load_trained_model(checkpoint, torch.device("cpu"))
    outputs = {}
    for on_device in (False, True):
        options = RenderOptions(save=["overlay", "color", "labelIds"], workers=0)
        options.pictures_on_device = on_device
        output = tmp_path / str(on_device)
        Renderer(trained, options).run(str(frames_dir), output)
        outputs[on_device] = output
    names = leftovers(outputs[False])
    assert names == leftovers(outputs[True]) and len(names) == 12
    for name in names:
        host, device = (read_bgr(outputs[side] / name).astype(int) for side in (False, True))
        assert np.abs(host - device).max() <= (1 if "_overlay" in name else 0), name


def test_decoding_workers_default_to_the_cores_to_spare(monkeypatch):
    for cores, workers in ((1, 1), (2, 1), (3, 1), (16, 14)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert decode_workers(None) == workers
    assert decode_workers(5) == 5 and decode_workers(0) == 0
    assert render_module.decode_workers is decode_workers
