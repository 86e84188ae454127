"""The folder dataset (your own data): classes.yaml as the label scheme, both mask formats
giving the same targets, training, evaluation against torchmetrics, inference and export from
the checkpoint alone, and every bad input refused in one line with exit status 2."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.classification import MulticlassJaccardIndex

import evaluate
import inference
import train
from segmentation.checkpoint import load_checkpoint
from segmentation.config import DataConfig, config_from_dict
from segmentation.data.build import (
    build_training_datasets,
    find_samples,
    label_reader,
    scheme_for,
)
from segmentation.data.folder import RgbMaskReader
from segmentation.data.headers import pair_problem
from segmentation.data.kinds.folder import INDEX_MASKS, RGB_MASKS
from segmentation.data.labels import IGNORE_INDEX
from segmentation.errors import UserError
from segmentation.sample.folder import SAMPLE_CLASSES

pytestmark = pytest.mark.usefixtures("one_thread")

CLASS_NAMES = [name for name, _, _ in SAMPLE_CLASSES]
COLOURS = np.array([colour for _, colour, _ in SAMPLE_CLASSES], np.uint8)
FIRST = "aachen/aachen_000000_000019"  # a train image of the sample, 128 wide
NARROW = "aachen/aachen_000001_000019"  # the next one, 112 wide


def folder_config(small_config, root: Path, output_dir: Path, **sections) -> dict:
    config = small_config(root, output_dir, **sections)
    config["data"]["dataset"] = "folder"
    config["data"].pop("labels")  # the classes file is the scheme
    return config


def data_config(root: Path, **values) -> DataConfig:
    return config_from_dict({"data": {"dataset": "folder", "root": str(root), **values}}).data


def copy_root(folder_root, mask_format: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder_root(mask_format), tmp_path / f"data-{mask_format}"))


def run_train(tmp_path: Path, config: dict, *extra) -> int:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return train.main(["--config", str(path), *map(str, extra)])


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# --------------------------------------------------------------------------- targets


def test_rgb_and_index_masks_give_identical_targets(folder_root):
    """The sample in both formats: the same training targets, augmented alike (seeded items),
    and the same full-resolution targets, ignored pixels included."""
    configs = [
        data_config(folder_root(mask_format), image_size=[32, 64])
        for mask_format in ("index", "rgb")
    ]
    (index_train, index_val), (rgb_train, rgb_val) = (
        build_training_datasets(config) for config in configs
    )
    assert len(index_train) == len(rgb_train) == 10 and len(index_val) == len(rgb_val) == 6
    for item in range(len(index_train)):
        assert torch.equal(index_train[item, 7]["target"], rgb_train[item, 7]["target"])
    schemes = [scheme_for(config) for config in configs]
    readers = [label_reader(config) for config in configs]
    for index_sample, rgb_sample in zip(index_val.samples, rgb_val.samples):
        index_target = schemes[0].encode(readers[0](index_sample.label_path))
        rgb_target = schemes[1].encode(readers[1](rgb_sample.label_path))
        np.testing.assert_array_equal(index_target, rgb_target)
        assert (index_target == IGNORE_INDEX).any()


def test_rgb_reader_matches_colours_exactly(tmp_path):
    reader = RgbMaskReader(COLOURS[:3])
    rgb = np.zeros((2, 4, 3), np.uint8)
    rgb[0, :3] = COLOURS[:3]
    rgb[1, 0] = COLOURS[0] + 1  # one step off a class colour: no class
    rgb[1, 1] = COLOURS[3]  # a colour of the sample, not of these 3 classes
    for name, pixels in [("rgb.png", rgb[..., ::-1]), ("rgba.png", None)]:
        if pixels is None:  # an RGBA mask: the alpha channel is not part of the colour
            pixels = cv2.cvtColor(np.ascontiguousarray(rgb[..., ::-1]), cv2.COLOR_BGR2BGRA)
            pixels[..., 3] = 7
        cv2.imwrite(str(tmp_path / name), np.ascontiguousarray(pixels))
        classes = reader(tmp_path / name)
        assert classes.tolist() == [[0, 1, 2, 255], [255, 255, 255, 255]]


def test_unknown_values_are_counted_apart_from_ignore_index(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "classes.yaml").write_text(
        "mask_format: index\nignore_index: 200\nclasses:\n"
        "  - {name: road, color: [1, 2, 3]}\n  - {name: car, color: [4, 5, 6]}\n"
    )
    scheme = scheme_for(data_config(root))
    stored = np.array([[0, 1, 200, 2, 255, 7]], np.uint8)
    assert scheme.encode(stored).tolist() == [[0, 1, 255, 255, 255, 255]]
    assert scheme.count_unknown(stored) == 3  # 2, 255 and 7; 200 is ignore_index
    assert scheme.class_names == ("road", "car") and scheme.colors.tolist()[1] == [4, 5, 6]


def test_headers_take_grey_index_masks_and_colour_rgb_masks(tmp_path):
    from segmentation.data.dataset import Sample

    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.zeros((4, 6, 3), np.uint8))
    grey, colour = tmp_path / "grey.png", tmp_path / "colour.png"
    cv2.imwrite(str(grey), np.zeros((4, 6), np.uint8))
    cv2.imwrite(str(colour), np.zeros((4, 6, 3), np.uint8))
    assert pair_problem(Sample(image, grey, "x", ""), INDEX_MASKS) is None
    assert pair_problem(Sample(image, colour, "x", ""), RGB_MASKS) is None
    kind, message = pair_problem(Sample(image, colour, "x", ""), INDEX_MASKS)
    assert kind == "format" and "mask_format rgb" in message
    kind, message = pair_problem(Sample(image, grey, "x", ""), RGB_MASKS)
    assert kind == "format" and "mask_format index" in message


def test_the_sample_command_writes_either_format(tmp_path, capsys):
    from segmentation.sample.cli import main

    args = ["--height", "32", "--width", "64", "--train-per-city", "1", "--val-per-city", "1"]
    assert main(["folder", str(tmp_path / "rgb"), "--mask-format", "rgb", *args]) == 0
    assert "folder (rgb masks) tree" in capsys.readouterr().out
    classes = yaml.safe_load((tmp_path / "rgb" / "classes.yaml").read_text())
    assert (
        classes["mask_format"] == "rgb" and [c["name"] for c in classes["classes"]] == CLASS_NAMES
    )
    masks = sorted((tmp_path / "rgb" / "masks" / "val").rglob("*.png"))
    assert len(masks) == 3 and cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED).shape == (32, 64, 3)
    with pytest.raises(SystemExit) as refused:
        main(["folder", str(tmp_path / "png"), "--mask-format", "png"])
    assert refused.value.code == 2 and "invalid choice: 'png'" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input

ONE_CLASS = "  - {name: road, color: [128, 64, 128]}\n"
BAD_CLASSES = [
    ("missing", None, "classes.yaml is missing"),
    ("not YAML", "mask_format: index\nclasses: [\n", "is not valid YAML (line 3"),
    ("a list", "- road\n- car\n", "must hold a mapping"),
    ("unknown key", "mask_format: index\npalette: x\nclasses:\n" + ONE_CLASS, "key(s) palette"),
    (
        "unknown class key",
        "mask_format: index\nclasses:\n  - {name: road, color: [1, 2, 3], id: 7}\n",
        "unknown key(s) id in classes[0]: valid keys are name, color",
    ),
    ("no mask_format", "classes:\n" + ONE_CLASS, "mask_format is missing"),
    ("bad mask_format", "mask_format: png\nclasses:\n" + ONE_CLASS, "mask_format='png'"),
    (
        "duplicate names",
        "mask_format: rgb\nclasses:\n" + ONE_CLASS + "  - {name: road, color: [1, 2, 3]}\n",
        "classes[0] and classes[1] have the same name 'road'",
    ),
    (
        "duplicate colours",
        "mask_format: rgb\nclasses:\n" + ONE_CLASS + "  - {name: lane, color: [128, 64, 128]}\n",
        "classes[0] and classes[1] have the same color [128, 64, 128]",
    ),
    (
        "duplicate ids",
        "mask_format: index\nignore_index: 0\nclasses:\n" + ONE_CLASS,
        "ignore_index 0 is the id of class 'road'",
    ),
    ("two numbers", "mask_format: rgb\nclasses:\n  - {name: a, color: [1, 2]}\n", "[1, 2]"),
    ("over 255", "mask_format: rgb\nclasses:\n  - {name: a, color: [1, 2, 256]}\n", "256"),
    ("negative", "mask_format: rgb\nclasses:\n  - {name: a, color: [-1, 2, 3]}\n", "-1"),
    ("fraction", "mask_format: rgb\nclasses:\n  - {name: a, color: [1.5, 2, 3]}\n", "1.5"),
    ("text", "mask_format: rgb\nclasses:\n  - {name: a, color: red}\n", "'red'"),
    ("no colour", "mask_format: rgb\nclasses:\n  - {name: a}\n", "classes[0].color is missing"),
    ("empty list", "mask_format: index\nclasses: []\n", "classes is empty"),
    ("no list", "mask_format: index\nclasses:\n", "classes is empty"),
    (
        "ignore_index in rgb",
        "mask_format: rgb\nignore_index: 100\nclasses:\n" + ONE_CLASS,
        "ignore_index 100 is for index masks",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [case[1:] for case in BAD_CLASSES],
    ids=[case[0] for case in BAD_CLASSES],
)
def test_a_bad_classes_file_is_one_line_naming_it(
    folder_root, tmp_path, small_config, capsys, text, expected
):
    root = copy_root(folder_root, "index", tmp_path)
    path = root / "classes.yaml"
    if text is None:
        path.unlink()
    else:
        path.write_text(text)
    config = folder_config(small_config, root, tmp_path / "run")
    assert run_train(tmp_path, config) == 2
    line = one_error_line(capsys)
    assert str(path) in line and expected in line, line
    assert not (tmp_path / "run").exists()


def test_colour_errors_say_what_a_colour_is(tmp_path):
    from segmentation.config import classes_from_dict

    for color in ([1, 2], [1, 2, 256], [1.5, 2, 3], "red", [True, 2, 3]):
        values = {"mask_format": "rgb", "classes": [{"name": "a", "color": color}]}
        with pytest.raises(UserError, match=r"classes\[0\]\.color=.* 3 integers in 0\.\.255"):
            classes_from_dict(values, "classes.yaml")


@pytest.mark.parametrize("name", ["road\nside", "car\x1b[31m", "bus\t", "\u202etrain", "a\u2028b"])
def test_class_names_with_control_characters_are_refused(tmp_path, name):
    from segmentation.config import classes_from_dict

    values = {"mask_format": "index", "classes": [{"name": "sky", "color": [0, 0, 255]}]}
    values["classes"].append({"name": name, "color": [1, 2, 3]})
    with pytest.raises(UserError) as raised:
        classes_from_dict(values, "classes.yaml")
    message = str(raised.value)
    control = next(char for char in name if not char.isprintable())
    assert message == (
        f"classes.yaml: classes[1].name={name!r} is not valid: it holds the control character "
        f"U+{ord(control):04X}: use printable characters"
    )
    assert message.isprintable()  # one line, and nothing a terminal would act on


def test_labels_other_than_all_are_refused_for_a_folder_dataset():
    with pytest.raises(UserError, match="data.labels='road' is not valid for the folder"):
        config_from_dict({"data": {"dataset": "folder", "labels": "road"}})
    assert config_from_dict({"data": {"dataset": "folder", "labels": "all"}}).data.labels == ["all"]
    assert config_from_dict({"data": {"dataset": "cityscapes"}}).data.labels == ["categories"]


def test_an_image_without_a_mask_is_named_or_skipped_with_a_count(
    folder_root, tmp_path, small_config, capsys, caplog
):
    root = copy_root(folder_root, "index", tmp_path)
    (root / "masks" / "train" / f"{FIRST}.png").unlink()
    config = folder_config(small_config, root, tmp_path / "run")
    assert run_train(tmp_path, config) == 2
    line = one_error_line(capsys)
    image, mask = root / "images/train" / f"{FIRST}.png", root / "masks/train" / f"{FIRST}.png"
    assert f"image {image} has no mask {mask}" in line and "skip_missing_labels" in line
    caplog.set_level(logging.WARNING)
    samples = find_samples(data_config(root, skip_missing_labels=True), "train")
    assert len(samples) == 9 and image not in [sample.image_path for sample in samples]
    assert "skipping 1 train image(s) without masks" in caplog.text


def link_folders_in(root: Path, relative: list[str], elsewhere: Path) -> None:
    """Move these folders of the dataset elsewhere and leave a symlink to each in its place,
    as a dataset whose cities live on several disks is assembled."""
    for folder in relative:
        inside, outside = root / folder, elsewhere / folder
        outside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(inside, outside)
        inside.symlink_to(outside, target_is_directory=True)


def test_symlinked_city_folders_are_part_of_the_split(folder_root, tmp_path):
    root = copy_root(folder_root, "index", tmp_path)
    expected = find_samples(data_config(root), "val")
    link_folders_in(root, ["images/val/lindau", "masks/val/lindau"], tmp_path / "elsewhere")
    # A link to a folder it lies in would be walked forever: it is not followed again.
    (root / "images/val/munster/up").symlink_to(root / "images/val", target_is_directory=True)
    found = find_samples(data_config(root), "val")
    assert found == expected and len(found) == 6
    assert {sample.group for sample in found} == {"frankfurt", "lindau", "munster"}


@pytest.mark.parametrize("renamed", [False, True], ids=["mask.jpg", "JPEG named mask.png"])
def test_a_jpeg_mask_is_refused(folder_root, tmp_path, small_config, capsys, renamed):
    root = copy_root(folder_root, "index", tmp_path)
    mask = root / "masks" / "train" / f"{FIRST}.png"
    jpeg = mask if renamed else mask.with_suffix(".jpg")
    ok, data = cv2.imencode(".jpg", cv2.imread(str(mask), cv2.IMREAD_UNCHANGED))
    mask.unlink()
    jpeg.write_bytes(data.tobytes())
    config = folder_config(small_config, root, tmp_path / "run")
    assert run_train(tmp_path, config) == 2
    line = one_error_line(capsys)
    assert str(jpeg) in line and "not a PNG" in line


def test_a_mask_of_another_size_names_both_files(folder_root, tmp_path, small_config, capsys):
    root = copy_root(folder_root, "rgb", tmp_path)
    mask = root / "masks" / "val" / "lindau" / "lindau_000000_000019.png"
    cv2.imwrite(str(mask), cv2.imread(str(mask))[:, :100])
    config = folder_config(small_config, root, tmp_path / "run")
    assert run_train(tmp_path, config) == 2
    line = one_error_line(capsys)
    image = root / "images" / "val" / "lindau" / "lindau_000000_000019.png"
    assert f"label {mask} is 100x64 but its image {image} is 128x64" in line


def test_images_of_one_stem_are_refused(folder_root, tmp_path, small_config, capsys):
    root = copy_root(folder_root, "index", tmp_path)
    image = root / "images" / "train" / f"{FIRST}.png"
    shutil.copy(image, image.with_suffix(".jpg"))
    config = folder_config(small_config, root, tmp_path / "run")
    assert run_train(tmp_path, config) == 2
    assert "would share one mask name" in one_error_line(capsys)


# --------------------------------------------------------------------------- train and use


@pytest.fixture(scope="module")
def trained(folder_root, small_config, tmp_path_factory):
    """`trained(mask_format)`: (run directory, data root) of one epoch on a copy of the sample:
    cross-entropy on the index masks, the original project's BCE + Dice on the rgb ones."""
    runs: dict[str, tuple[Path, Path]] = {}

    def run(mask_format: str) -> tuple[Path, Path]:
        if mask_format not in runs:
            base = tmp_path_factory.mktemp(f"folder-run-{mask_format}")
            root = copy_root(folder_root, mask_format, base)
            loss = "ce" if mask_format == "index" else "bce_dice"
            config = folder_config(
                small_config,
                root,
                base / "run",
                loss={"name": loss},
                train={"batch_size": 5, "log_images": 2},
                optim={"optimizer": "sgd", "momentum": 0.0, "lr": 0.01},
            )
            config["model"]["channels_last"] = False
            assert run_train(base, config) == 0
            runs[mask_format] = (base / "run", root)
        return runs[mask_format]

    return run


@pytest.mark.parametrize("mask_format", ["index", "rgb"])
def test_trains_one_epoch_and_evaluates_as_torchmetrics(trained, tmp_path, mask_format):
    run_dir, root = trained(mask_format)
    state = load_checkpoint(run_dir / "last.pt")
    assert state["class_names"] == CLASS_NAMES
    saved = state["config"]["data"]["classes"]
    assert saved == yaml.safe_load((root / "classes.yaml").read_text()) | {"ignore_index": 255}
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["classes"] == saved
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert set(record["per_class"]) == set(CLASS_NAMES)

    export, scores = tmp_path / "export", tmp_path / "scores.json"
    args = ["--checkpoint", run_dir / "last.pt", "--export-dir", export, "--output-json", scores]
    args += ["--amp", "off", "--workers", "0", "--export-color"]
    assert evaluate.main([str(arg) for arg in args]) == 0
    results = json.loads(scores.read_text())
    assert results["dataset"] == "folder" and results["images"] == 6
    assert "cityscapes" not in results and "kitti_road" not in results

    config = data_config(root)
    scheme, reader = scheme_for(config), label_reader(config)
    predictions, targets = [], []
    for sample in find_samples(config, "val"):
        exported = cv2.imread(str(export / "masks" / f"{sample.name}.png"), cv2.IMREAD_UNCHANGED)
        target = scheme.encode(reader(sample.label_path))
        assert exported.shape == target.shape and exported.max() < len(CLASS_NAMES)
        colour = cv2.imread(str(export / "color" / f"{sample.name}.png"))[..., ::-1]
        np.testing.assert_array_equal(colour, COLOURS[exported])
        predictions.append(torch.from_numpy(exported.reshape(-1).astype(np.int64)))
        targets.append(torch.from_numpy(target.reshape(-1).astype(np.int64)))
    prediction, target = torch.cat(predictions), torch.cat(targets)
    assert (target == IGNORE_INDEX).any()  # the ignored pixels are left out on both sides
    jaccard = MulticlassJaccardIndex(len(CLASS_NAMES), ignore_index=IGNORE_INDEX)
    assert results["mIoU"] == pytest.approx(jaccard(prediction, target).item(), abs=1e-6)
    per_class = MulticlassJaccardIndex(len(CLASS_NAMES), average=None, ignore_index=IGNORE_INDEX)
    present = torch.isin(torch.arange(len(CLASS_NAMES)), torch.cat([prediction, target]))
    for name, iou, counted in zip(CLASS_NAMES, per_class(prediction, target), present):
        expected = iou.item() if counted else None
        assert results["per_class"][name]["iou"] == pytest.approx(expected, abs=1e-6), name


@pytest.mark.slow
def test_the_checkpoint_alone_renders_and_exports_after_the_root_moved(trained, tmp_path):
    run_dir, root = trained("rgb")
    frames = Path(shutil.copytree(root / "images" / "test" / "berlin", tmp_path / "frames"))
    moved = tmp_path / "moved"
    os.rename(root, moved)
    try:
        output = tmp_path / "renders"
        args = ["--checkpoint", run_dir / "last.pt", "--input", frames, "--output", output]
        args += ["--save", "overlay", "color", "labelIds", "--workers", "0", "--amp", "off"]
        assert inference.main([str(arg) for arg in args]) == 0
        stem = "berlin_000000_000019"
        label_ids = cv2.imread(str(output / f"{stem}_labelIds.png"), cv2.IMREAD_UNCHANGED)
        colour = cv2.imread(str(output / f"{stem}_color.png"))[..., ::-1]
        assert label_ids.ndim == 2 and label_ids.max() < len(CLASS_NAMES)
        np.testing.assert_array_equal(colour, COLOURS[label_ids])  # the file's colours
        assert (output / f"{stem}_overlay.png").is_file()

        onnx_path = tmp_path / "model.onnx"
        args = ["--checkpoint", str(run_dir / "last.pt"), "--export-onnx", str(onnx_path)]
        assert inference.main(args) == 0
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        (logits,) = session.run(["logits"], {"images": np.zeros((1, 3, 32, 64), np.float32)})
        assert logits.shape == (1, len(CLASS_NAMES), 32, 64)

        scores = tmp_path / "scores.json"
        args = ["--checkpoint", run_dir / "last.pt", "--data-root", moved, "--output-json"]
        args += [scores, "--amp", "off", "--workers", "0"]
        assert evaluate.main([str(arg) for arg in args]) == 0
        assert json.loads(scores.read_text())["images"] == 6
    finally:
        os.rename(moved, root)


def test_a_changed_classes_file_is_refused_for_the_checkpoint(trained, tmp_path, capsys):
    run_dir, root = trained("index")
    changed = Path(shutil.copytree(root, tmp_path / "changed"))
    text = (changed / "classes.yaml").read_text().replace("name: pole", "name: post")
    (changed / "classes.yaml").write_text(text)
    args = ["--checkpoint", run_dir / "last.pt", "--data-root", changed, "--workers", "0"]
    assert evaluate.main([str(arg) for arg in args]) == 2
    line = one_error_line(capsys)
    assert "is not the classes file this model was trained with" in line
    assert "classes[3] pole [153, 153, 153] became post [153, 153, 153]" in line


def test_resume_and_tensorboard(folder_root, tmp_path, small_config, capsys):
    root = copy_root(folder_root, "index", tmp_path)
    run_dir = tmp_path / "run"
    config = folder_config(small_config, root, run_dir, train={"batch_size": 5})
    config["model"]["channels_last"] = False
    assert run_train(tmp_path, config) == 0
    assert train.main(["--resume", str(run_dir / "last.pt"), "--epochs", "2"]) == 0
    assert load_checkpoint(run_dir / "last.pt")["state"]["epoch"] == 2
    # The resumed run writes a second event file: the folder holds both.
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert {"val_IoU/road", "val_Dice/vehicle"} <= set(accumulator.Tags()["scalars"])
    assert [event.step for event in accumulator.Scalars("val/mIoU")] == [1, 2]
    assert "val/input_truth_prediction" in accumulator.Tags()["images"]
    # A resumed run whose classes file changed since would read its masks as other classes.
    (root / "classes.yaml").write_text(
        (root / "classes.yaml").read_text().replace("ignore_index: 255", "ignore_index: 254")
    )
    capsys.readouterr()
    assert train.main(["--resume", str(run_dir / "last.pt"), "--epochs", "3"]) == 2
    assert "ignore_index 255 became 254" in one_error_line(capsys)


@pytest.mark.slow
def test_two_process_ddp(folder_root, tmp_path, small_config):
    """Every rank reads the classes file; rank 0 saves them with the run."""
    root = copy_root(folder_root, "rgb", tmp_path)
    run_dir = tmp_path / "ddp"
    config = folder_config(small_config, root, run_dir, train={"batch_size": 2})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--standalone", str(repo / "train.py"), "--config", str(path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_checkpoint(run_dir / "last.pt")
    assert state["state"]["step"] == 2  # 10 images: 5 per process, 2 full batches of 2
    assert state["config"]["data"]["classes"]["mask_format"] == "rgb"
