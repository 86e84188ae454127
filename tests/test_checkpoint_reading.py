"""Checkpoints that cannot be used say why in one line, in every script that reads them:
train.py --resume and --init-from, evaluate.py and inference.py (model_summary.py builds its
model from flags and reads no checkpoint)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

import evaluate
import inference
import train
from segmentation.checkpoint import VERSION

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(trained_checkpoint) -> Path:
    """last.pt of a tiny run of the 'categories' scheme (8 classes), never changed here."""
    return trained_checkpoint("cityscapes", "categories")


def altered(trained: Path, folder: Path, change: Callable[[dict], None]) -> Path:
    """A copy of `trained`, alone in `folder`, with `change` applied to its entries."""
    state = torch.load(trained, weights_only=True)
    change(state)
    folder.mkdir()
    path = folder / "last.pt"
    torch.save(state, path)
    return path


def scripts_reading(checkpoint: Path, cityscapes_root: Path, tmp_path: Path, small_config):
    """(name, main, argv) of every command line that reads `checkpoint`."""
    config = small_config(cityscapes_root, tmp_path / "new-run")
    config_path = tmp_path / "new-run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return [
        ("resume", train.main, ["--resume", str(checkpoint)]),
        ("init-from", train.main, ["--config", str(config_path), "--init-from", str(checkpoint)]),
        (
            "evaluate",
            evaluate.main,
            [
                "--checkpoint",
                str(checkpoint),
                "--data-root",
                str(cityscapes_root),
                "--workers",
                "0",
            ],
        ),
        (
            "inference",
            inference.main,
            ["--checkpoint", str(checkpoint), "--export-onnx", str(tmp_path / "model.onnx")],
        ),
    ]


def assert_refused_in_one_line(main, argv, capsys, *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_random_bytes_are_not_a_checkpoint(cityscapes_root, tmp_path, capsys, small_config):
    folder = tmp_path / "noise"
    folder.mkdir()
    noise = folder / "last.pt"
    noise.write_bytes(bytes(range(7, 256)) * 40)  # no zip archive, no pickle
    for name, main, argv in scripts_reading(noise, cityscapes_root, tmp_path, small_config):
        line = assert_refused_in_one_line(main, argv, capsys, f"{noise} is not a checkpoint")
        assert "weights_only" not in line and "PyTorch 2.6" not in line, name
    assert not (tmp_path / "new-run").exists() and sorted(folder.iterdir()) == [noise]


def test_a_newer_format_version_is_refused(
    trained, cityscapes_root, tmp_path, capsys, small_config
):
    def newer(state: dict) -> None:
        state["version"] = VERSION + 1

    path = altered(trained, tmp_path / "future", newer)
    for _, main, argv in scripts_reading(path, cityscapes_root, tmp_path, small_config):
        assert_refused_in_one_line(
            main, argv, capsys, f"format version {VERSION + 1}", "update the toolkit"
        )


def test_a_checkpoint_without_weights_is_one_line(
    trained, cityscapes_root, tmp_path, capsys, small_config
):
    path = altered(trained, tmp_path / "no-model", lambda state: state.pop("model"))
    for _, main, argv in scripts_reading(path, cityscapes_root, tmp_path, small_config):
        assert_refused_in_one_line(main, argv, capsys, f"checkpoint {path} has no 'model' entry")


def test_a_checkpoint_without_its_optimizer_cannot_resume(trained, tmp_path, capsys):
    path = altered(trained, tmp_path / "weights-only", lambda state: state.pop("optimizer"))
    assert_refused_in_one_line(
        train.main, ["--resume", str(path)], capsys, "no 'optimizer' entry", "--init-from"
    )


def test_classes_edited_in_the_config_do_not_fit_the_weights(
    trained, cityscapes_root, tmp_path, capsys, small_config
):
    """The config and the class names say 'classes' (19 classes and 'unlabeled': 20 outputs);
    the weights have the 8 output channels of 'categories'."""
    from segmentation.config import config_from_dict
    from segmentation.data.build import scheme_for

    def edit_classes(state: dict) -> None:
        state["config"]["data"]["labels"] = "classes"
        scheme = scheme_for(config_from_dict(state["config"]).data)
        state["class_names"] = list(scheme.class_names)

    path = altered(trained, tmp_path / "edited", edit_classes)
    new_config = small_config(cityscapes_root, tmp_path / "new-run", data={"labels": "classes"})
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump(new_config))
    runs = scripts_reading(path, cityscapes_root, tmp_path, small_config)
    # --init-from into a run of the classes the edited file claims: only the weights differ.
    runs[1] = (
        "init-from",
        train.main,
        ["--config", str(tmp_path / "classes.yaml"), "--init-from", str(path)],
    )
    for _, main, argv in runs:
        assert_refused_in_one_line(
            main,
            argv,
            capsys,
            f"the weights in checkpoint {path} do not fit the model its config describes",
            "is 8x",
            "but 20x",
        )
