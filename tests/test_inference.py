"""inference.py end to end: output names; values against a forward of the model by hand, ids
and colours against cityscapesscripts' label table; skipping of finished frames, unreadable
frames, globs, videos; overlays."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import labels as cityscapes_labels
from cityscapesscripts.helpers.labels import name2label

import inference
from segmentation.data.labels import get_scheme
from segmentation.inference.render import Renderer, RenderOptions
from segmentation.prediction.predict import drop_small_clusters
from segmentation.prediction.trained_model import load_trained_model
from segmentation.visualize import overlay

KINDS = ("overlay", "color", "labelIds")
LABEL_COLOURS = np.zeros((256, 3), np.uint8)  # label id -> RGB, from cityscapesscripts
for _label in cityscapes_labels:
    if _label.id >= 0:
        LABEL_COLOURS[_label.id] = _label.color
EVALUATED_IDS = {label.id for label in cityscapes_labels if not label.ignoreInEval}
UNLABELED = 0
OLD = 1_000_000_000  # a modification time long past, in seconds
# The resnet encoders' input normalization, ImageNet's (test_models pins it).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
# Pixels whose two most probable classes are closer than this may swap with float noise (the
# references below agree with the toolkit to ~2e-6): their class is not compared.
AMBIGUOUS = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint) -> Path:
    return trained_checkpoint("cityscapes", "classes")


@pytest.fixture
def frames_dir(cityscapes_root) -> Path:
    return cityscapes_root / "leftImg8bit" / "demoVideo" / "stuttgart_00"


def render(checkpoint: Path, source, output: Path, *extra) -> int:
    """inference.py in this process; frames decode in it too unless extra sets --workers."""
    args = ["--checkpoint", checkpoint, "--input", source, "--output", output, *extra]
    if "--workers" not in extra:
        args += ["--workers", "0"]
    if "--amp" not in extra:  # float32: the references here are computed in float32
        args += ["--amp", "off"]
    return inference.main([str(arg) for arg in args])


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def bilinear_double(array: np.ndarray, axis: int) -> np.ndarray:
    """Bilinear upsampling x2 along `axis` (half-pixel centres, edges clamped): output pixels
    2i and 2i + 1 lie at input coordinates i - 1/4 and i + 1/4."""
    array = np.moveaxis(array, axis, -1)
    before = np.concatenate([array[..., :1], array[..., :-1]], axis=-1)
    after = np.concatenate([array[..., 1:], array[..., -1:]], axis=-1)
    pairs = np.stack([0.75 * array + 0.25 * before, 0.75 * array + 0.25 * after], axis=-1)
    return np.moveaxis(pairs.reshape(*array.shape[:-1], -1), -1, axis)


def reference_probabilities(trained, rgb: np.ndarray, hflip: bool) -> np.ndarray:
    """Softmax probabilities (C, H, W) float64 of a frame twice the training size, by hand:
    normalized, halved (bilinear x1/2 is the mean of each 2x2 block), a plain forward of the
    model, softmax, doubled back; with hflip averaged with the mirrored frame's, mirrored back."""
    height, width = rgb.shape[:2]
    assert trained.head == "softmax" and trained.image_size == (height // 2, width // 2)
    normalized = (rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    half = normalized.reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))
    views = []
    for mirrored in (False, True) if hflip else (False,):
        view = half[:, ::-1] if mirrored else half
        with torch.no_grad():
            logits = trained.model(torch.from_numpy(view.transpose(2, 0, 1).copy()).float()[None])
        logits = logits[0].double().numpy()
        exp = np.exp(logits - logits.max(axis=0))
        probs = exp / exp.sum(axis=0)
        views.append(
            bilinear_double(bilinear_double(probs[..., ::-1] if mirrored else probs, 2), 1)
        )
    return np.mean(views, axis=0)


def ambiguous_pixels(probs: np.ndarray) -> np.ndarray:
    top = np.sort(probs, axis=0)
    ambiguous = top[-1] - top[-2] < AMBIGUOUS
    assert ambiguous.mean() < 0.01
    return ambiguous


def class_label_ids(class_names) -> np.ndarray:
    """The Cityscapes label id of each class, by name from cityscapesscripts."""
    return np.array([name2label[name].id for name in class_names], np.uint8)


def test_outputs_are_named_after_the_frames_with_valid_ids_and_colours(
    checkpoint, frames_dir, tmp_path, capsys
):
    output = tmp_path / "out"
    assert render(checkpoint, frames_dir, output, "--save", *KINDS) == 0
    frames = sorted(frames_dir.glob("*_leftImg8bit.png"))
    assert [path.name for path in frames][0] == "stuttgart_00_000000_000001_leftImg8bit.png"
    expected = sorted(
        f"{path.name[: -len('_leftImg8bit.png')]}_{kind}.png" for path in frames for kind in KINDS
    )
    assert sorted(path.name for path in output.iterdir()) == expected
    assert "stuttgart_00_000000_000001_overlay.png" in expected
    assert f"rendered {len(frames)} frames" in capsys.readouterr().out

    scheme_colours = {tuple(c) for c in get_scheme("cityscapes", "classes").colors.tolist()}
    trained = load_trained_model(checkpoint, torch.device("cpu"))
    label_ids_of_classes = class_label_ids(trained.scheme.class_names)
    for frame in frames:
        prefix = output / frame.name[: -len("_leftImg8bit.png")]
        image = read_rgb(frame)
        label_ids = cv2.imread(f"{prefix}_labelIds.png", cv2.IMREAD_UNCHANGED)
        colours = read_rgb(Path(f"{prefix}_color.png"))
        blended = read_rgb(Path(f"{prefix}_overlay.png"))
        assert label_ids.dtype == np.uint8 and label_ids.shape == image.shape[:2]
        assert set(np.unique(label_ids).tolist()) <= EVALUATED_IDS | {UNLABELED}
        # The colour of each pixel is the official colour of its label id.
        assert np.array_equal(colours, LABEL_COLOURS[label_ids])
        assert {tuple(c) for c in np.unique(colours.reshape(-1, 3), axis=0)} <= scheme_colours
        # Overlay at alpha 0.5: the mean of image and colour where painted, the image elsewhere.
        painted = colours.any(axis=-1)
        mean = (image.astype(np.float64) + colours) / 2
        assert np.abs(blended[painted] - mean[painted]).max() <= 1.0
        assert np.array_equal(blended[~painted], image[~painted])
        # The values are those of the model: its argmax, ids, colours and blend by hand.
        probs = reference_probabilities(trained, image, hflip=False)
        sure = ~ambiguous_pixels(probs)
        expected_ids = label_ids_of_classes[probs.argmax(axis=0)]
        assert np.array_equal(label_ids[sure], expected_ids[sure])
        expected_colours = LABEL_COLOURS[expected_ids]
        assert np.array_equal(colours[sure], expected_colours[sure])
        expected_blend = np.where(
            expected_colours.any(axis=-1, keepdims=True),
            (image.astype(np.float64) + expected_colours) / 2,
            image,
        )
        assert np.abs(blended[sure] - expected_blend[sure]).max() <= 0.5  # rounded


def test_frames_already_rendered_are_skipped_unless_overwrite(
    checkpoint, frames_dir, tmp_path, capsys
):
    output = tmp_path / "out"
    assert render(checkpoint, frames_dir, output, "--save", "overlay", "color") == 0
    files = sorted(output.iterdir())
    assert len(files) == 8
    for path in files:
        os.utime(path, (OLD, OLD))
    capsys.readouterr()
    assert render(checkpoint, frames_dir, output, "--save", "overlay", "color") == 0
    assert "rendered 0 frames" in capsys.readouterr().out
    assert all(path.stat().st_mtime == OLD for path in files)
    # A frame with one kind missing is rendered again, the others are not.
    files[0].unlink()
    assert render(checkpoint, frames_dir, output, "--save", "overlay", "color") == 0
    assert "rendered 1 frames" in capsys.readouterr().out
    assert sum(path.stat().st_mtime != OLD for path in files) == 2  # both kinds of that frame
    assert render(checkpoint, frames_dir, output, "--save", "overlay", "color", "--overwrite") == 0
    assert "rendered 4 frames" in capsys.readouterr().out
    assert all(path.stat().st_mtime != OLD for path in files)


def test_an_unreadable_frame_is_skipped_counted_and_listed(
    checkpoint, frames_dir, tmp_path, capsys
):
    frames = tmp_path / "frames"
    shutil.copytree(frames_dir, frames)
    good = sorted(frames.iterdir())
    corrupt = frames / "stuttgart_00_000000_000003_leftImg8bit.png"
    corrupt.write_bytes(corrupt.read_bytes()[:60])  # a truncated PNG
    output = tmp_path / "out"
    # Two decoding processes: the error travels back from a worker.
    assert render(checkpoint, frames, output, "--workers", "2") == 0
    printed = capsys.readouterr().out
    assert f"rendered {len(good) - 1} frames" in printed
    assert "1 unreadable frame(s) skipped" in printed
    assert "stuttgart_00_000000_000003" in printed.split("skipped:")[1]
    assert len(list(output.iterdir())) == len(good) - 1
    assert not (output / "stuttgart_00_000000_000003_overlay.png").exists()


def test_glob_and_single_image_input(checkpoint, frames_dir, tmp_path):
    output = tmp_path / "out"
    assert render(checkpoint, f"{frames_dir}/*_00000[24]_leftImg8bit.png", output) == 0
    assert sorted(path.name for path in output.iterdir()) == [
        "stuttgart_00_000000_000002_overlay.png",
        "stuttgart_00_000000_000004_overlay.png",
    ]
    single = tmp_path / "single"
    frame = frames_dir / "stuttgart_00_000000_000003_leftImg8bit.png"
    assert render(checkpoint, frame, single, "--save", "labelIds") == 0
    assert [path.name for path in single.iterdir()] == ["stuttgart_00_000000_000003_labelIds.png"]


def test_video_input_is_rendered_frame_by_frame(checkpoint, frames_dir, tmp_path, capsys):
    video = tmp_path / "drive.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 64))
    frames = sorted(frames_dir.glob("*.png"))
    frames.append(frames[0])  # 5 frames
    for frame in frames:
        writer.write(cv2.imread(str(frame)))
    writer.release()
    output = tmp_path / "out"
    assert render(checkpoint, video, output, "--save", "color", "--workers", "2") == 0
    names = sorted(path.name for path in output.iterdir())
    assert names == [f"drive_{index:06d}_color.png" for index in range(len(frames))]
    assert read_rgb(output / names[0]).shape == (64, 128, 3)
    capsys.readouterr()
    assert render(checkpoint, video, output, "--save", "color") == 0
    assert "rendered 0 frames" in capsys.readouterr().out


def test_tta_and_cluster_clean_up_reach_the_outputs(checkpoint, frames_dir, tmp_path):
    output = tmp_path / "out"
    options = ["--tta", "hflip", "--drop-clusters", "3", "--batch-size", "1"]
    assert render(checkpoint, frames_dir, output, "--save", "labelIds", *options) == 0
    trained = load_trained_model(checkpoint, torch.device("cpu"))
    label_ids_of_classes = class_label_ids(trained.scheme.class_names)
    flip_changes = cleaned_pixels = 0
    for frame in sorted(frames_dir.glob("*.png")):
        image = read_rgb(frame)
        probs = reference_probabilities(trained, image, hflip=True)
        sure = ~ambiguous_pixels(probs)
        classes = probs.argmax(axis=0)
        flip_changes += np.count_nonzero(
            classes != reference_probabilities(trained, image, hflip=False).argmax(axis=0)
        )
        cleaned = drop_small_clusters(classes, probs, min_side=3)
        cleaned_pixels += np.count_nonzero(cleaned != classes)
        expected = label_ids_of_classes[cleaned]
        name = frame.name.replace("_leftImg8bit", "_labelIds")
        found = cv2.imread(str(output / name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(found[sure], expected[sure])
    assert flip_changes > 0 and cleaned_pixels > 0  # both options change these frames


def test_an_empty_folder_is_a_one_line_error(checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert render(checkpoint, tmp_path / "empty", tmp_path / "out") == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: no images") and "\n" not in error


def test_overlay_alpha_extremes_and_between():
    scheme = get_scheme("cityscapes", "categories")  # class 0 (void) is black: not painted
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 6, 8), dtype=np.uint8).transpose(1, 2, 0)  # a view
    classes = rng.integers(0, scheme.num_classes, (6, 8))
    classes[0, :3] = 0
    classes[1, :2] = 255  # ignored: not painted either
    colours = np.zeros((256, 3), np.uint8)
    colours[: scheme.num_classes] = scheme.colors
    colours = colours[classes]
    painted = (classes != 0) & (classes != 255)
    assert np.array_equal(overlay(image, classes, scheme, alpha=0.0), image)
    full = overlay(image, classes, scheme, alpha=1.0)
    assert np.array_equal(full[painted], colours[painted])
    assert np.array_equal(full[~painted], image[~painted])
    part = overlay(image, classes, scheme, alpha=0.3).astype(np.float64)
    expected = 0.7 * image + 0.3 * colours
    assert np.abs(part[painted] - expected[painted]).max() <= 0.5 + 1e-6  # rounded
    assert np.array_equal(part[~painted], image[~painted])


@pytest.mark.parametrize(
    ("dataset", "labels"),
    [("cityscapes", "classes"), ("cityscapes", "categories"), ("kitti", "road")],
)  # softmax head; per-channel sigmoid head; one binary sigmoid channel
def test_classes_only_come_from_the_logits_with_the_same_classes(
    trained_checkpoint, dataset, labels
):
    trained = load_trained_model(trained_checkpoint(dataset, labels), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    height, width = trained.image_size
    at_model_size = torch.randint(0, 256, (3, 3, height, width), generator=generator)
    classes, probs = trained.predict(at_model_size.to(torch.uint8), probabilities=False)
    assert probs is None  # taken from the logits: no probabilities computed
    expected, _ = trained.predict(at_model_size.to(torch.uint8))
    assert torch.equal(classes, expected)
    # Any other size needs the resized probabilities: the full path, whatever is asked.
    larger = torch.randint(0, 256, (1, 3, 2 * height, 2 * width), generator=generator)
    classes, probs = trained.predict(larger.to(torch.uint8), probabilities=False)
    assert probs is not None and torch.equal(classes, trained.predict(larger.to(torch.uint8))[0])


def test_one_batch_of_frames_is_decoded_without_forking_workers(checkpoint, frames_dir):
    trained = load_trained_model(checkpoint, torch.device("cpu"))
    renderer = Renderer(trained, RenderOptions(batch_size=2, workers=2))
    frames = renderer.frames(str(frames_dir), frames_dir.parent / "elsewhere")
    assert len(frames) >= 3
    assert renderer._loader(frames[:2], None, set()).num_workers == 0
    assert renderer._loader(frames[:3], None, set()).num_workers == 2
    assert renderer._loader(frames[:3], None, {0}).num_workers == 0  # one frame left to do
