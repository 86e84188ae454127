"""evaluate.py's outputs and its report folder: outputs that clash with each other or lie in the
dataset, a split given as a path, and a --compare JSON that does not fit are refused in one line
before anything is written; --overwrite replaces only the files of an earlier report of ours;
images.csv is CSV that a spreadsheet cannot run; class names of any kind draw and show."""

from __future__ import annotations

import csv
import json
import shutil
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import evaluate
import train
from segmentation.data.labels import LabelScheme
from segmentation.report import charts
from segmentation.report.images import Shown
from segmentation.report.page import ReportInputs, write_report
from segmentation.sample.folder import SAMPLE_CLASSES

pytestmark = pytest.mark.usefixtures("one_thread")

CLASS_NAMES = [name for name, _, _ in SAMPLE_CLASSES]


def run_evaluate(checkpoint: Path, *extra) -> int:
    args = ["--checkpoint", checkpoint, "--workers", 0, "--amp", "off", *extra]
    return evaluate.main([str(arg) for arg in args])


def one_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert captured.out == "", "refused only after the evaluation"
    return lines[0]


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def folder_checkpoint(folder_root, small_config, tmp_path_factory) -> tuple[Path, Path]:
    """(last.pt, data root) of one step on the 6 val images of a copy of the folder sample."""
    base = tmp_path_factory.mktemp("folder-checkpoint")
    root = Path(shutil.copytree(folder_root("index"), base / "data"))
    config = small_config(
        root,
        base / "run",
        loss={"name": "ce"},
        train={"batch_size": 6, "log_images": 0},
        optim={"optimizer": "sgd", "momentum": 0.0, "lr": 0.01},
    )
    config["data"].update(dataset="folder", train_split="val")
    config["data"].pop("labels")  # the classes file is the scheme
    config["model"]["channels_last"] = False
    (base / "config.yaml").write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(base / "config.yaml")]) == 0
    return base / "run" / "last.pt", root


# --------------------------------------------------------------------------- refused outputs


CLASHES = {
    "json over the page": (["--report", "r", "--output-json", "r/index.html"], "--report folder"),
    "json over the csv": (["--report", "r", "--output-json", "r/images.csv"], "--report folder"),
    "json in the export": (["--export-dir", "e", "--output-json", "e/s.json"], "--export-dir"),
    "report is the export": (["--report", "r", "--export-dir", "r"], "one path"),
    "export in the report": (["--report", "r", "--export-dir", "r/preds"], "--report folder"),
    "report in the export": (["--export-dir", "e", "--report", "e/r"], "--export-dir folder"),
    "report is the json": (["--output-json", "x", "--report", "x"], "one path"),
}


@pytest.mark.parametrize("case", list(CLASHES))
def test_outputs_that_clash_are_refused_before_loading_anything(case, tmp_path, capsys):
    args, fragment = CLASHES[case]
    args = [str(tmp_path / arg) if not arg.startswith("--") else arg for arg in args]
    code = run_evaluate(tmp_path / "missing.pt", *args)
    error = one_error(capsys)
    assert code == 2 and fragment in error, error
    assert "does not exist" not in error  # found before the checkpoint was read
    assert list(tmp_path.iterdir()) == []


def copy_val_tree(source: Path, target: Path) -> Path:
    for folder in ("leftImg8bit", "gtFine"):
        shutil.copytree(source / folder / "val", target / folder / "val")
    return target


@pytest.mark.parametrize(
    ("flag", "inside"),
    [
        ("--report", "leftImg8bit/val/report"),
        ("--output-json", "scores.json"),
        ("--export-dir", "gtFine/predictions"),
    ],
)
def test_outputs_inside_the_dataset_are_refused(
    flag, inside, trained_checkpoint, cityscapes_root, tmp_path, capsys
):
    checkpoint = trained_checkpoint("cityscapes", "categories")
    data = copy_val_tree(cityscapes_root, tmp_path / "data")
    before = files_under(data)
    capsys.readouterr()
    code = run_evaluate(checkpoint, "--data-root", data, flag, data / inside)
    error = one_error(capsys)
    assert code == 2 and "inside the dataset root" in error and flag in error, error
    assert files_under(data) == before and not (data / inside).exists()


@pytest.mark.parametrize("split", ["../masks/val", "/data/images/val", "val/..", "..", "a\\b"])
def test_a_split_that_is_a_path_is_refused(split, tmp_path, capsys):
    assert run_evaluate(tmp_path / "missing.pt", "--split", split) == 2
    error = one_error(capsys)
    assert "not a split name" in error and "does not exist" not in error, error


def test_masks_are_not_scored_as_images(folder_checkpoint, tmp_path, capsys):
    checkpoint, root = folder_checkpoint
    scores = tmp_path / "scores.json"
    capsys.readouterr()
    code = run_evaluate(
        checkpoint, "--data-root", root, "--split", "../masks/val", "--output-json", scores
    )
    assert code == 2 and "not a split name" in one_error(capsys)
    assert not scores.exists()


# --------------------------------------------------------------------------- --compare


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"mIoU": "0.5"}, "mIoU"),
        ({"mDice": True}, "mDice"),
        ({"per_class": {"road": {"iou": "high"}}}, "per_class/road/iou"),
        ({"per_class": {"road": 0.5}}, "per_class/road"),
        ({"per_class": [0.5]}, "per_class"),
    ],
)
def test_a_compare_json_with_a_non_number_is_refused_at_the_start(change, key, tmp_path, capsys):
    other = {"dataset": "folder", "labels": "all", "mIoU": 0.5, "mDice": 0.6}
    other["per_class"] = {"road": {"iou": 0.5, "dice": None}}
    other.update(change)
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    code = run_evaluate(tmp_path / "missing.pt", "--report", tmp_path / "r", "--compare", path)
    error = one_error(capsys)
    assert code == 2 and f"{key} is" in error and "not a score" in error, error
    assert not (tmp_path / "r").exists()


def test_compare_refuses_a_folder_dataset_of_other_classes(folder_checkpoint, tmp_path, capsys):
    checkpoint, root = folder_checkpoint
    per_class = {name: {"iou": 0.5, "dice": 0.6} for name in CLASS_NAMES[1:]}
    per_class["lake"] = {"iou": 0.25, "dice": 0.4}
    other = {"dataset": "folder", "labels": "all", "mIoU": 0.5, "per_class": per_class}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    report = tmp_path / "report"
    capsys.readouterr()
    code = run_evaluate(checkpoint, "--data-root", root, "--report", report, "--compare", path)
    error = one_error(capsys)
    assert code == 2 and "only there: lake;" in error, error
    assert f"only here: {CLASS_NAMES[0]})" in error, error
    assert not report.exists()


# --------------------------------------------------------------------------- the report folder


def test_overwrite_refuses_a_page_and_files_that_are_not_ours(trained_checkpoint, tmp_path, capsys):
    checkpoint = trained_checkpoint("cityscapes", "categories")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "index.html").write_text('<html><img src="holiday.png"></html>')
    (theirs / "holiday.png").write_bytes(b"their picture")
    charts_only = tmp_path / "charts"
    charts_only.mkdir()
    (charts_only / "confusion.png").write_bytes(b"their chart")
    for folder, fragment in ((theirs, "index.html is not a page"), (charts_only, "confusion")):
        before = files_under(folder)
        capsys.readouterr()
        assert run_evaluate(checkpoint, "--report", folder, "--overwrite") == 2
        error = one_error(capsys)
        assert fragment in error and "choose a new --report" in error, error
        assert files_under(folder) == before


def tiny_inputs(names: tuple[str, ...], image_scores=(), worst=()) -> ReportInputs:
    """A report of a scheme of these class names from a hand-written confusion matrix."""
    count = len(names)
    colors = np.array([[40 * i % 256, 90, 200 - 30 * i % 200] for i in range(count)], np.uint8)
    values = np.arange(count, dtype=np.uint8)
    scheme = LabelScheme("all", "folder", names, colors, values, values)
    confusion = np.eye(count, dtype=np.int64) * 50 + 3
    results = {
        "checkpoint": "run/last.pt",
        "dataset": "folder",
        "labels": "all",
        "images": 1,
        "tta": "none",
        "mIoU": 0.5,
        "mDice": 0.6,
        "pixel_accuracy": 0.7,
        "per_class": {name: {"iou": 0.5, "dice": 0.6} for name in names},
    }
    return ReportInputs(
        results, scheme, confusion, worst=list(worst), image_scores=list(image_scores)
    )


def test_images_csv_keeps_each_name_one_text_cell(tmp_path):
    names = ['=HYPERLINK("http://x"),evil', "+1", "-2", "@sum", "plain, with comma", "two\nlines"]
    scores = list(zip(names, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    write_report(tmp_path, tiny_inputs(("a", "b"), image_scores=scores))
    with open(tmp_path / "images.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["name", "mIoU"],
        ['\'=HYPERLINK("http://x"),evil', "0.100000"],
        ["'+1", "0.200000"],
        ["'-2", "0.300000"],
        ["'@sum", "0.400000"],
        ["plain, with comma", "0.500000"],
        ["two\nlines", "0.600000"],
    ]


ODD_NAMES = {
    "math": ("road", "x$^$y", "car"),
    "control": ("road", "bell\x07here", "nul\x00"),
    "long": ("road", "L" * 300, "car"),
}


@pytest.mark.parametrize("case", list(ODD_NAMES))
def test_odd_class_names_draw_and_show(case, tmp_path):
    names = ODD_NAMES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph or collapsed axes would warn
        page = write_report(tmp_path, tiny_inputs(names))
        figure = charts.class_scores_figure(
            names, [0.5] * 3, [0.6] * 3, np.full(3, 1 / 3), np.zeros((3, 3), np.uint8)
        )
    text = page.read_text(encoding="utf-8")
    assert not [c for c in text if unicodedata.category(c) == "Cc" and c not in "\n\t"]
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert all(len(label) <= 32 for label in labels), labels
    if case == "control":
        assert "bell\\x07here" in text and "nul\\x00" in text
    if case == "long":
        assert "L" * 300 in text  # the table shows all of it, wrapped
        assert "L" * 21 + "\u2026" + "L" * 10 in labels  # 32: its start and end


def test_overwrite_removes_only_plain_files_of_our_page_and_keeps_the_users(tmp_path):
    report = tmp_path / "report"
    write_report(report, tiny_inputs(("a", "b")))
    page = report / "index.html"
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"outside the report")
    # An earlier page of ours that names a file outside the folder, by an escaped slash.
    text = page.read_text().replace("</body>", '<img src="..&#x2f;victim.png"></body>')
    page.write_text(text)
    (report / "worst_01_x.png").write_bytes(b"the user's, named like a panel")
    panel = Shown("x", 0.25, np.full((4, 8, 3), 9, np.uint8))
    write_report(report, tiny_inputs(("a", "b"), worst=[panel]))
    assert victim.read_bytes() == b"outside the report"
    assert (report / "worst_01_x.png").read_bytes() == b"the user's, named like a panel"
    assert '<img src="worst_01_x_2.png"' in page.read_text()
    assert (report / "worst_01_x_2.png").is_file()
