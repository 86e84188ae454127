"""evaluate.py against the references: cityscapesscripts' evaluator on the exported labelIds
PNGs, and a plain KITTI road devkit on the exported probability PNGs."""

from __future__ import annotations

import json
import math
import shutil
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
from cityscapesscripts.helpers.labels import id2label

import evaluate
from segmentation.evaluation.cityscapes import run_official_evaluator

EVALUATED_IDS = [i for i in range(34) if not id2label[i].ignoreInEval]
EVALUATED_NAMES = [id2label[i].name for i in EVALUATED_IDS]  # the 19 classes, label-id order
UNLABELED = 0


pytestmark = pytest.mark.usefixtures("one_thread")


def run_evaluate(checkpoint: Path, tmp_path: Path, *extra: str) -> tuple[int, dict, Path]:
    export_dir, output_json = tmp_path / "export", tmp_path / "scores.json"
    args = ["--checkpoint", checkpoint, "--export-dir", export_dir, "--output-json", output_json]
    if "--amp" not in extra:  # float32: the references below are computed in float32
        args += ["--amp", "off"]
    code = evaluate.main([str(arg) for arg in [*args, "--workers", "0", *extra]])
    results = json.loads(output_json.read_text(), parse_constant=_refuse) if code == 0 else {}
    return code, results, export_dir


def _refuse(constant: str):
    raise AssertionError(f"{constant} in the JSON: scores that do not exist must be null")


def ground_truth_files(root: Path, split: str = "val") -> list[Path]:
    return sorted((root / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))


def find_predictions(results_dir: Path, gt_files: list[Path]) -> list[str]:
    """The prediction of each ground-truth file, found as the official evaluator finds them
    (CITYSCAPES_RESULTS=results_dir; it exits when a file has none or several)."""
    assert results_dir.is_dir()
    args = types.SimpleNamespace(predictionPath=str(results_dir), predictionWalk=None)
    return [official.getPrediction(args, str(gt)) for gt in gt_files]


def copy_val_tree(source: Path, target: Path) -> Path:
    for folder in ("leftImg8bit", "gtFine"):
        shutil.copytree(source / folder / "val", target / folder / "val")
    return target


def read_ids(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def assert_same_score(ours, reference: float, what: str) -> None:
    if math.isnan(reference):
        assert ours is None, f"{what}: official NaN, ours {ours}"
    else:
        assert ours == pytest.approx(reference, abs=1e-4), what


def assert_classes_agree(results: dict, reference: dict) -> None:
    assert results["mIoU"] == pytest.approx(reference["averageScoreClasses"], abs=1e-4)
    assert list(results["per_class"]) == EVALUATED_NAMES
    for name in EVALUATED_NAMES:
        assert_same_score(results["per_class"][name]["iou"], reference["classScores"][name], name)
    ours = results["cityscapes"]
    assert ours["averageScoreCategories"] == pytest.approx(
        reference["averageScoreCategories"], abs=1e-4
    )


def relabel_for_absent_classes(root: Path, prediction_files: list[str]) -> tuple[int, int]:
    """Edit the ground truth of a copied val tree so that one evaluated class is absent from
    both sides (its pixels become 'unlabeled') and one is only predicted (its pixels become
    another evaluated class). Returns (absent_id, only_predicted_id)."""
    gt_files = ground_truth_files(root)
    gts = [read_ids(path) for path in gt_files]
    predictions = [read_ids(path) for path in prediction_files]
    in_gt = set(np.unique(np.concatenate([gt.ravel() for gt in gts])).tolist())
    predicted = set(np.unique(np.concatenate([p.ravel() for p in predictions])).tolist())
    candidates = sorted(set(EVALUATED_IDS) & (in_gt - predicted))
    assert candidates, "the test model predicts every class of the ground truth"
    absent = candidates[0]
    evaluated_gt = [np.isin(gt, EVALUATED_IDS) & (gt != absent) for gt in gts]
    hits = {
        label: sum(int(((p == label) & valid).sum()) for p, valid in zip(predictions, evaluated_gt))
        for label in sorted(set(EVALUATED_IDS) & in_gt & predicted)
    }
    only_predicted = max(hits, key=hits.get)
    assert hits[only_predicted] > 0
    pixels = {
        label: sum(int((gt == label).sum()) for gt in gts)
        for label in set(EVALUATED_IDS) & (in_gt - {absent, only_predicted})
    }
    replacement = max(pixels, key=pixels.get)
    for path, gt in zip(gt_files, gts):
        gt = np.where(gt == absent, UNLABELED, gt)
        gt = np.where(gt == only_predicted, replacement, gt).astype(np.uint8)
        assert cv2.imwrite(str(path), gt)
    return absent, only_predicted


@pytest.mark.parametrize(
    ("labels", "options"),
    [
        ("classes", []),
        ("official", ["--tta", "hflip", "--sliding-window", "--drop-clusters", "2"]),
    ],
)
def test_miou_equals_the_official_evaluator_also_with_absent_classes(
    trained_checkpoint, cityscapes_root, tmp_path, labels, options
):
    checkpoint = trained_checkpoint("cityscapes", labels)
    root = copy_val_tree(cityscapes_root, tmp_path / "cityscapes")

    # 1. the val split as generated
    first = tmp_path / "first"
    code, results, export_dir = run_evaluate(checkpoint, first, "--data-root", root, *options)
    assert code == 0
    assert results["labels"] == labels and results["images"] == 6
    gt_files = ground_truth_files(root)
    prediction_files = find_predictions(export_dir / "labelIds", gt_files)
    assert len(list((export_dir / "labelIds").rglob("*.png"))) == len(gt_files)
    for prediction, gt in zip(prediction_files, gt_files):
        assert read_ids(prediction).shape == read_ids(gt).shape
    assert_classes_agree(results, run_official_evaluator(prediction_files, gt_files))

    # 2. ground truth edited: a class absent from both sides, a class only predicted
    absent, only_predicted = relabel_for_absent_classes(root, prediction_files)
    code, results, export_dir = run_evaluate(
        checkpoint, tmp_path / "second", "--data-root", root, *options
    )
    assert code == 0
    prediction_files = find_predictions(export_dir / "labelIds", gt_files)
    reference = run_official_evaluator(prediction_files, gt_files)
    absent_name, only_predicted_name = id2label[absent].name, id2label[only_predicted].name
    assert math.isnan(reference["classScores"][absent_name])  # left out of the mean
    assert reference["classScores"][only_predicted_name] == 0.0
    assert results["per_class"][absent_name]["iou"] is None
    assert results["per_class"][only_predicted_name]["iou"] == 0.0
    assert_classes_agree(results, reference)


def test_category_scores_equal_the_official_evaluator(
    trained_checkpoint, cityscapes_root, tmp_path
):
    checkpoint = trained_checkpoint("cityscapes", "categories")
    tta = ["--tta", "multiscale", "--scales", "0.5,1", "--merge", "gmean"]
    code, results, export_dir = run_evaluate(checkpoint, tmp_path, "--export-color", *tta)
    assert code == 0
    assert results["labels"] == "categories" and len(results["per_class"]) == 8
    assert results["tta"] == "multiscale"
    gt_files = ground_truth_files(cityscapes_root)
    prediction_files = find_predictions(export_dir / "labelIds", gt_files)
    reference = run_official_evaluator(prediction_files, gt_files)
    ours = results["cityscapes"]
    assert ours["averageScoreCategories"] == pytest.approx(
        reference["averageScoreCategories"], abs=1e-4
    )
    # The official dict also lists void, never scored (NaN); ours lists the 7 scored ones.
    assert math.isnan(reference["categoryScores"].pop("void"))
    assert set(ours["categoryScores"]) == set(reference["categoryScores"])
    for category, score in reference["categoryScores"].items():
        assert_same_score(ours["categoryScores"][category], score, category)
    # Exported ids are those of the category's evaluated labels (void: unlabeled), so that
    # the official evaluator counts each prediction in its category.
    for path in prediction_files:
        for label_id in np.unique(read_ids(path)):
            assert label_id == UNLABELED or label_id in EVALUATED_IDS
    colours = sorted((export_dir / "color").rglob("*_color.png"))
    assert len(colours) == len(gt_files)


def test_user_errors_are_one_line(trained_checkpoint, cityscapes_root, tmp_path, capsys):
    checkpoint = trained_checkpoint("cityscapes", "categories")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "old.png").write_bytes(b"")
    code, _, _ = run_evaluate(checkpoint, tmp_path)
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "--export-dir" in error and "\n" not in error
    (tmp_path / "export" / "old.png").unlink()
    (tmp_path / "export").rmdir()
    (tmp_path / "export").write_bytes(b"")  # a file where the folder should go
    code, _, _ = run_evaluate(checkpoint, tmp_path)
    assert code == 2
    assert capsys.readouterr().err.startswith("error: --export-dir")
    args = ["--checkpoint", str(checkpoint), "--data-root", str(cityscapes_root)]
    assert evaluate.main([*args, "--split", "test"]) == 2  # dummy labels: nothing to score
    assert "test labels are dummies" in capsys.readouterr().err


def test_kitti_road_scores_and_devkit_exports(
    trained_checkpoint, road_devkit, kitti_root, tmp_path
):
    code, results, export_dir = run_evaluate(trained_checkpoint("kitti", "road"), tmp_path)
    assert code == 0
    road = results["kitti_road"]
    assert set(road) == {"um", "umm", "uu", "overall"}
    for scores in road.values():
        for key in ("MaxF", "AP", "PRE", "REC", "FPR", "FNR"):
            assert 0.0 <= scores[key] <= 1.0, key
    gt_dir = kitti_root / "data_road" / "training" / "gt_image_2"
    exported = sorted(export_dir.glob("*.png"))
    assert len(exported) == results["images"] == 3  # one val image per category
    levels, gt_roads, valids = [], [], []
    for path in exported:
        category, kind, index = path.stem.split("_")
        assert category in ("um", "umm", "uu") and kind == "road" and len(index) == 6
        prob = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        gt = cv2.imread(str(gt_dir / path.name), cv2.IMREAD_COLOR)  # um_road_000000.png
        assert prob.dtype == np.uint8 and prob.shape == gt.shape[:2]
        levels.append(prob)
        gt_roads.append(gt[:, :, 0] > 0)  # the devkit: road is blue > 0, valid red > 0
        valids.append(gt[:, :, 2] > 0)
    expected = road_devkit(levels, gt_roads, valids)
    for key, value in expected.items():
        assert road["overall"][key] == pytest.approx(float(value), abs=1e-9), key
