"""Bad input to train.py, evaluate.py and inference.py: every mistake is one line naming what
is wrong and what to do (exit 2, no traceback unless --debug), found before any work, and no
file of the user's is lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from command_line import assert_one_line_error, call_main, run_script, write_yaml

from segmentation.errors import UserError


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint) -> Path:
    """last.pt of the session's tiny categories run (FPN/resnet18, bce_dice, one epoch)."""
    return trained_checkpoint("cityscapes", "categories")


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
    result = run_script("train.py", "--config", tmp_path / "missing.yaml", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "inference.py"])
def test_an_empty_checkpoint_is_one_line(script, tmp_path):
    empty = tmp_path / "last.pt"
    empty.write_bytes(b"")
    flag = ["--resume", empty] if script == "train.py" else ["--checkpoint", empty]
    extra = ["--export-onnx", tmp_path / "m.onnx"] if script == "inference.py" else []
    assert_one_line_error(run_script(script, *flag, *extra), "last.pt is unreadable", "empty")


def bad_train_inputs(base: dict, root: Path, tmp: Path, kitti_root: Path, checkpoint: Path) -> dict:
    blocker = tmp / "a_file"
    blocker.write_text("")
    typo = {**base, "train": {**base["train"], "epoch": 3}}
    unet = {**base, "model": {**base["model"], "arch": "unet", "options": {}}}
    kitti = {**base, "data": {**base["data"], "dataset": "kitti", "labels": "road"}}
    return {
        "missing config": (["--config", tmp / "nope.yaml"], ["nope.yaml does not exist"]),
        "config typo": (["--config", write_yaml(tmp / "t.yaml", typo)], ["epoch", "epochs"]),
        "bad image size": (
            ["--config", write_yaml(tmp / "u.yaml", unet), "--image-size", "100x200"],
            ["100x200 is not a multiple of 64", "64x192 or 128x256"],
        ),
        "wrong cityscapes root": (
            ["--config", write_yaml(tmp / "w.yaml", base), "--data-root", kitti_root],
            ["leftImg8bit", "Cityscapes layout"],
        ),
        "wrong kitti root": (
            ["--config", write_yaml(tmp / "k.yaml", kitti), "--data-root", root],
            ["data_road", "KITTI road layout"],
        ),
        "missing resume checkpoint": (["--resume", tmp / "gone.pt"], ["gone.pt does not exist"]),
        "init-from another class count": (
            [
                "--config",
                write_yaml(tmp / "i.yaml", base),
                "--labels",
                "official",
                "--init-from",
                checkpoint,
            ],
            ["expected ['road'", "found ['void'"],
        ),
        "unwritable output directory": (
            ["--config", write_yaml(tmp / "o.yaml", base), "--output-dir", blocker / "run"],
            ["cannot write to run directory", "--output-dir"],
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        "missing config",
        "config typo",
        "bad image size",
        "wrong cityscapes root",
        "wrong kitti root",
        "missing resume checkpoint",
        "init-from another class count",
        "unwritable output directory",
    ],
)
def test_bad_training_input(case, cityscapes_root, kitti_root, checkpoint, tmp_path, small_config):
    base = small_config(cityscapes_root, tmp_path / "run")
    args, fragments = bad_train_inputs(base, cityscapes_root, tmp_path, kitti_root, checkpoint)[
        case
    ]
    result = run_script("train.py", *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_label_schemes_do_not_combine_with_label_names(cityscapes_root, tmp_path, small_config):
    config = write_yaml(tmp_path / "c.yaml", small_config(cityscapes_root, tmp_path / "run"))
    result = run_script("train.py", "--config", config, "--labels", "categories,road")
    assert_one_line_error(result, "'categories'", "cannot be combined with label names", "road")
    assert "unknown" not in result.stderr


def test_bad_evaluation_and_inference_input(
    cityscapes_root, kitti_root, checkpoint, tmp_path, capsys
):
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": Path("not a tensor")}, pickled)
    empty = tmp_path / "empty"
    empty.mkdir()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    export = tmp_path / "export"
    export.mkdir()
    (export / "keep.png").write_text("mine")
    cases = [
        ("evaluate.py", ["--checkpoint", tmp_path / "x.pt"], ["x.pt does not exist"]),
        ("evaluate.py", ["--checkpoint", pickled], ["pickle", "refused"]),
        (
            "evaluate.py",
            ["--checkpoint", checkpoint, "--data-root", kitti_root],
            ["Cityscapes layout"],
        ),
        (
            "evaluate.py",
            ["--checkpoint", checkpoint, "--export-dir", export],
            ["is not empty", "--export-dir"],
        ),
        (
            "inference.py",
            ["--checkpoint", checkpoint, "--input", empty, "--output", tmp_path / "out"],
            ["no images", "--input"],
        ),
        (
            "inference.py",
            [
                "--checkpoint",
                checkpoint,
                "--input",
                cityscapes_root / "leftImg8bit" / "val" / "lindau",
                "--output",
                blocker / "out",
            ],
            ["cannot create output folder"],
        ),
    ]
    # One refusal in a process of its own (the exit code and stderr as a shell sees them); the
    # others in this process, seconds faster each (torch's import).
    (first_script, first_args, first_fragments), *others = cases
    assert_one_line_error(run_script(first_script, *first_args), *first_fragments)
    for script, args, fragments in others:
        assert_one_line_error(call_main(capsys, script, *args), *fragments)
    assert (export / "keep.png").read_text() == "mine"


def test_evaluate_checks_its_outputs_first_and_overwrites_nothing(checkpoint, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    last = Path(shutil.copy(checkpoint, run_dir / "last.pt"))
    best = Path(shutil.copy(checkpoint, run_dir / "best.pt"))
    before = last.read_bytes()
    scores = tmp_path / "scores.json"
    scores.write_text("old scores")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases = [
        (["--output-json", best], ["best.pt already exists", "--overwrite"]),
        (["--output-json", last], ["is the checkpoint"]),
        (["--output-json", last, "--overwrite"], ["is the checkpoint"]),
        (["--output-json", scores], ["scores.json already exists", "--overwrite"]),
        (["--output-json", run_dir], ["is a folder", "--output-json"]),
        (["--output-json", blocker / "s.json"], ["cannot write", "--output-json"]),
        (["--export-dir", blocker / "preds"], ["cannot create", "--export-dir"]),
    ]
    for args, fragments in cases:
        result = call_main(capsys, "evaluate.py", "--checkpoint", last, "--workers", 0, *args)
        assert_one_line_error(result, *fragments)
        assert result.stdout == "", "refused only after scoring"
    assert last.read_bytes() == before and best.read_bytes() == before
    assert scores.read_text() == "old scores"
    assert sorted(path.name for path in run_dir.iterdir()) == ["best.pt", "last.pt"]

    args = ["--checkpoint", last, "--workers", 0, "--output-json", scores, "--overwrite"]
    result = call_main(capsys, "evaluate.py", *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(scores.read_text())["images"] == 6
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file", "run", "scores.json"]


def test_inference_refuses_an_output_folder_inside_its_input(
    checkpoint, cityscapes_root, tmp_path, capsys
):
    frames = Path(
        shutil.copytree(cityscapes_root / "leftImg8bit" / "val" / "lindau", tmp_path / "f")
    )
    names = sorted(path.name for path in frames.iterdir())
    for source, output in [
        (frames, frames),
        (frames, frames / "renders"),
        (f"{frames}/*.png", frames),
    ]:
        result = call_main(
            capsys,
            "inference.py",
            "--checkpoint",
            checkpoint,
            "--input",
            source,
            "--output",
            output,
        )
        assert_one_line_error(result, "--output", "inside the input")
    assert sorted(path.name for path in frames.iterdir()) == names


@pytest.mark.parametrize("scales", ["nan", "1,inf"])
def test_scales_must_be_finite_numbers(scales, checkpoint, cityscapes_root, tmp_path, capsys):
    frames = cityscapes_root / "leftImg8bit" / "val" / "lindau"
    for script, args in [
        ("evaluate.py", []),
        ("inference.py", ["--input", frames, "--output", tmp_path / "out"]),
    ]:
        common = ["--checkpoint", checkpoint, "--tta", "multiscale", "--scales", scales]
        assert_one_line_error(call_main(capsys, script, *common, *args), "--scales", scales)
    assert not (tmp_path / "out").exists()


def copy_of(root: Path, tmp_path: Path) -> Path:
    """A private copy of a session dataset, to break files in."""
    return Path(shutil.copytree(root, tmp_path / "data"))


@pytest.mark.slow
def test_a_corrupt_validation_file_stops_training_before_the_first_step(
    cityscapes_root, tmp_path, small_config
):
    data = copy_of(cityscapes_root, tmp_path)
    broken = sorted((data / "leftImg8bit" / "val").glob("*/*.png"))[-1]
    broken.write_bytes(b"")
    config = write_yaml(tmp_path / "c.yaml", small_config(data, tmp_path / "run"))
    result = run_script("train.py", "--config", config)
    assert_one_line_error(result, str(broken), "is empty")
    assert not (tmp_path / "run").exists()


def write_pair(folder: Path, image: np.ndarray, label: np.ndarray, label_suffix=".png"):
    from segmentation.data.dataset import Sample

    folder.mkdir(parents=True, exist_ok=True)
    image_path, label_path = folder / "x_image.png", folder / f"x_label{label_suffix}"
    cv2.imwrite(str(image_path), image)
    cv2.imwrite(str(label_path), label)
    return Sample(image_path, label_path, "x", "group")


def header_cases(tmp: Path) -> dict:
    """name -> (dataset, samples, fragments of the error; None: accepted)."""
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8)
    ids = np.full((40, 60), 7, np.uint8)
    rgb = np.dstack([ids] * 3)
    cases = {
        "good cityscapes": ("cityscapes", write_pair(tmp / "a", image, ids), None),
        "good kitti": ("kitti", write_pair(tmp / "b", image, rgb), None),
        "label of another size": (
            "cityscapes",
            write_pair(tmp / "c", image, ids[:30]),
            ["x_label.png is 60x30", "x_image.png is 60x40"],
        ),
        "rgb cityscapes label": (
            "cityscapes",
            write_pair(tmp / "d", image, rgb),
            ["x_label.png", "single-channel 8-bit"],
        ),
        "16-bit cityscapes label": (
            "cityscapes",
            write_pair(tmp / "e", image, ids.astype(np.uint16)),
            ["x_label.png", "single-channel 8-bit"],
        ),
        "grey kitti label": (
            "kitti",
            write_pair(tmp / "f", image, ids),
            ["x_label.png", "RGB"],
        ),
        "jpeg label": (
            "cityscapes",
            write_pair(tmp / "g", image, ids, label_suffix=".jpg"),
            ["x_label.jpg", "JPEG", "not a PNG"],
        ),
    }
    # An image that is a JPEG is fine; its size comes from the SOF marker.
    jpeg_image = write_pair(tmp / "h", image, ids[:, :50])
    cv2.imwrite(str(jpeg_image.image_path.with_suffix(".jpg")), image)
    jpeg_image.image_path.with_suffix(".jpg").replace(jpeg_image.image_path)
    cases["jpeg image of another size"] = ("cityscapes", jpeg_image, ["is 50x40", "is 60x40"])
    truncated = write_pair(tmp / "i", image, ids)
    truncated.image_path.write_bytes(truncated.image_path.read_bytes()[:-100])
    cases["truncated image"] = ("cityscapes", truncated, ["x_image.png", "truncated"])
    text = write_pair(tmp / "j", image, ids)
    text.image_path.write_text("not an image at all, but long enough to have a header")
    cases["text image"] = ("cityscapes", text, ["x_image.png", "neither a PNG nor a JPEG"])
    return cases


def test_the_start_up_check_reads_headers_and_names_the_file(tmp_path):
    from segmentation.data.headers import check_headers
    from segmentation.data.kinds.catalog import kind_named

    for name, (dataset, sample, fragments) in header_cases(tmp_path).items():
        label_format = kind_named(dataset).label_format(None)
        if fragments is None:
            check_headers([sample], label_format)
            continue
        with pytest.raises(UserError) as raised:
            check_headers([sample], label_format)
        for fragment in fragments:
            assert fragment in str(raised.value), (name, str(raised.value))


@pytest.mark.slow
def test_a_jpeg_label_renamed_png_is_refused(cityscapes_root, tmp_path, small_config):
    from segmentation.data.io import read_label_ids
    from segmentation.data.kitti import read_kitti_codes

    data = copy_of(cityscapes_root, tmp_path)
    label = sorted((data / "gtFine" / "train").glob("*/*_labelIds.png"))[0]
    ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    label.write_bytes(cv2.imencode(".jpg", ids)[1].tobytes())
    config = write_yaml(tmp_path / "c.yaml", small_config(data, tmp_path / "run"))
    result = run_script("train.py", "--config", config)
    assert_one_line_error(result, str(label), "not a PNG")
    assert not (tmp_path / "run").exists()
    # Read directly, it is refused too: evaluation reads labels without the start-up check.
    for read in (read_label_ids, read_kitti_codes):
        with pytest.raises(UserError, match="not a PNG"):
            read(label)
