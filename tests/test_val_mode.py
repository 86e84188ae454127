"""train.val_mode: validation at full resolution, whole or in sliding windows, scores what
evaluate.py scores with the same options on the same checkpoint; bad windows are refused in one
line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

import evaluate
import train
from segmentation.config import config_from_dict
from segmentation.errors import UserError
from segmentation.prediction.predict import predict_in_windows, predict_probabilities

pytestmark = pytest.mark.usefixtures("one_thread")


def slide_config(small_config, root: Path, run_dir: Path, **train_section) -> dict:
    config = small_config(
        root,
        run_dir,
        optim={"optimizer": "adam", "lr": 0.001, "scheduler": "poly"},
        train={"iters": 3, "batch_size": 4, "seed": 2, "log_images": 1, "val_mode": "slide",
               "val_window": "32x64", "val_stride": "16x32", **train_section},
    )  # fmt: skip
    del config["train"]["epochs"]
    return config


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.slow
def test_slide_validation_scores_what_evaluate_scores(
    cityscapes_root, tmp_path, small_config, capsys, caplog
):
    run_dir = tmp_path / "run"
    config = slide_config(small_config, cityscapes_root, run_dir)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.INFO, logger="segmentation"):
        assert train.main(["--config", str(tmp_path / "run.yaml")]) == 0
    assert "validation (slide, full resolution) took" in caplog.text
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 3 and record["val_loss"] is None and record["val_seconds"] > 0

    scores = tmp_path / "scores.json"
    common = ["--checkpoint", str(run_dir / "last.pt"), "--workers", "0", "--amp", "off"]
    window = ["--sliding-window", "--window", "32x64", "--stride", "16x32"]
    assert evaluate.main([*common, *window, "--output-json", str(scores)]) == 0
    assert record["val_mIoU"] == json.loads(scores.read_text())["mIoU"]

    # A window larger than the 64x128 frames, or one the model cannot take: one line each.
    capsys.readouterr()
    assert evaluate.main([*common, "--sliding-window", "--window", "128x128"]) == 2
    assert "larger than the 64x128 frame" in one_line(capsys)
    assert evaluate.main([*common, "--sliding-window", "--window", "40x64"]) == 2
    assert "not multiples of 32" in one_line(capsys)
    assert evaluate.main([*common, "--window", "32x64"]) == 2
    assert "add it" in one_line(capsys)


@pytest.mark.slow
def test_whole_validation_scores_what_evaluate_scores_in_one_window_of_the_frame(
    cityscapes_root, tmp_path, small_config
):
    run_dir = tmp_path / "run"
    config = slide_config(small_config, cityscapes_root, run_dir, iters=1, val_mode="whole")
    del config["train"]["val_window"], config["train"]["val_stride"]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(tmp_path / "run.yaml")]) == 0
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    scores = tmp_path / "scores.json"
    args = ["--checkpoint", str(run_dir / "last.pt"), "--workers", "0", "--amp", "off"]
    args += ["--sliding-window", "--window", "64x128", "--output-json", str(scores)]
    assert evaluate.main(args) == 0
    assert record["val_mIoU"] == json.loads(scores.read_text())["mIoU"]


def test_a_slide_window_larger_than_the_frames_is_refused_before_training(
    cityscapes_root, tmp_path, small_config, capsys
):
    run_dir = tmp_path / "run"
    config = slide_config(small_config, cityscapes_root, run_dir, val_window="64x256")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(tmp_path / "run.yaml")]) == 2
    assert "the sliding window 64x256 is larger than the 64x128 frame" in one_line(capsys)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"train": {"val_mode": "slide"}}, "optim.scheduler 'plateau' steps on the validation"),
        ({"train": {"val_window": "32x64"}}, "train.val_window is for train.val_mode slide"),
        (
            {"optim": {"scheduler": "poly"}, "train": {"val_mode": "slide", "val_window": "32x64",
                                                      "val_stride": "32x96"}},
            "train.val_stride 32x96 is larger than train.val_window 32x64",
        ),
    ],
)  # fmt: skip
def test_inconsistent_validation_settings_are_refused_in_one_line(sections, message):
    with pytest.raises(UserError) as error:
        config_from_dict(sections)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_windows_cover_the_frame_at_the_stride_and_average_their_overlaps():
    """A model whose logits at a pixel depend on that pixel only: windows at any stride, and a
    window of the whole frame, must give the whole-frame pass (a pixel no window covered
    would be NaN, 0 / 0)."""
    images = torch.rand(1, 3, 64, 128)

    def columns(tile: torch.Tensor) -> torch.Tensor:
        return tile[:, :2]  # logits that depend only on the tile's own pixels

    whole = predict_probabilities(columns, images, "softmax", base_size=(32, 64), divisor=32,
                                  whole_frame=True)  # fmt: skip
    slid = predict_in_windows(columns, images, "softmax", (32, 64), stride=(16, 32))
    torch.testing.assert_close(slid, whole)
    framed = predict_probabilities(columns, images, "softmax", base_size=(32, 64), divisor=32,
                                   sliding_window=True, window=(64, 128))  # fmt: skip
    torch.testing.assert_close(framed, whole)  # a window of the frame: one pass


def test_windows_default_to_the_training_crops_in_the_scale_jitter_style(tmp_path):
    # Scale jitter trains on data.crop_size at native resolution: a window of it is what the
    # model saw; data.image_size is the size resized validation uses.
    from segmentation.engine.full_resolution import validation_window
    from segmentation.prediction.trained_model import TrainedModel

    data = {"root": str(tmp_path), "image_size": [64, 128], "base_size": [64, 128],
            "crop_size": [32, 64], "augment": {"scale": [0.5, 2.0]}}  # fmt: skip
    sections = {"data": data, "train": {"val_mode": "slide"}, "optim": {"scheduler": "poly"}}
    config = config_from_dict(sections)
    assert validation_window(config) == (32, 64)
    original = config_from_dict({"data": {"root": str(tmp_path), "image_size": [64, 128]}})
    assert validation_window(original) == (64, 128)
    trained = object.__new__(TrainedModel)  # only its config matters here
    trained.config = config
    assert (trained.training_size, trained.image_size) == ((32, 64), (64, 128))
