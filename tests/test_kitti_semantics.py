"""The KITTI semantic segmentation kind (data_semantics as unpacked): its generated tree, its
discovery and held-out validation images, detection, its one-line refusals, and a tiny run
scored by the official Cityscapes evaluator on KITTI's file names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from cityscapesscripts.helpers.labels import id2label

import evaluate
import train
from segmentation.config import config_from_dict
from segmentation.data import check
from segmentation.data.kinds.catalog import detect_kind
from segmentation.data.kitti_semantics import find_kitti_semantics
from segmentation.errors import UserError
from segmentation.evaluation.cityscapes import EVALUATED_IDS, run_official_evaluator
from segmentation.sample.generate import generate_kitti_semantics

TRAIN, TEST = 10, 2


@pytest.fixture(scope="module")
def semantics_root(tmp_path_factory) -> Path:
    """A tiny tree (~37x122 images), shared: copy it before changing it."""
    root = tmp_path_factory.mktemp("kitti_semantics")
    generate_kitti_semantics(root, scale=0.1, train=TRAIN, test=TEST, seed=1)
    return root


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_the_generated_tree_has_the_data_semantics_layout(semantics_root):
    names = [f"{i:06d}_10.png" for i in range(TRAIN)]
    for folder in ("image_2", "semantic", "semantic_rgb", "instance"):
        found = sorted(p.name for p in (semantics_root / "training" / folder).iterdir())
        assert found == names, folder
    testing = sorted(p.relative_to(semantics_root) for p in (semantics_root / "testing").rglob("*"))
    assert testing == [Path("testing/image_2")] + [
        Path("testing/image_2") / f"{i:06d}_10.png" for i in range(TEST)
    ]
    name = names[0]
    image = cv2.imread(str(semantics_root / "training" / "image_2" / name), cv2.IMREAD_UNCHANGED)
    semantic = cv2.imread(
        str(semantics_root / "training" / "semantic" / name), cv2.IMREAD_UNCHANGED
    )
    rgb = cv2.imread(str(semantics_root / "training" / "semantic_rgb" / name))[..., ::-1]
    instance = cv2.imread(
        str(semantics_root / "training" / "instance" / name), cv2.IMREAD_UNCHANGED
    )
    assert image.shape == (37, 124, 3) and semantic.shape == (37, 124)  # 374x1238 * 0.1
    assert semantic.dtype == np.uint8 and instance.dtype == np.uint16
    assert set(np.unique(semantic)) <= set(range(34)) and len(np.unique(semantic)) > 3
    # semantic_rgb: each label id's Cityscapes colour; instance: label id in the high byte.
    for label_id in np.unique(semantic):
        assert (rgb[semantic == label_id] == id2label[int(label_id)].color).all()
    assert ((instance >> 8) == semantic).all()
    cars = semantic == 26
    assert (instance[~np.isin(semantic, [24, 25, 26, 27, 28, 31, 32, 33])] & 255 == 0).all()
    if cars.any():
        assert (instance[cars] & 255 >= 1).all()


def test_discovery_holds_out_a_fixed_fraction_of_training(semantics_root):
    train_split = find_kitti_semantics(semantics_root, "train", val_fraction=0.2)
    val_split = find_kitti_semantics(semantics_root, "val", val_fraction=0.2)
    assert len(val_split) == 2 and len(train_split) == TRAIN - 2
    names = sorted(s.name for s in train_split + val_split)
    assert names == [f"{i:06d}_10" for i in range(TRAIN)]
    for sample in train_split + val_split:
        assert (
            sample.label_path == semantics_root / "training" / "semantic" / sample.image_path.name
        )
    again = find_kitti_semantics(semantics_root, "val", val_fraction=0.2)
    assert [s.name for s in again] == [s.name for s in val_split]
    test_split = find_kitti_semantics(semantics_root, "test")
    assert [(s.name, s.label_path) for s in test_split] == [
        ("000000_10", None),
        ("000001_10", None),
    ]


def test_the_layout_is_detected_beside_kitti_road(semantics_root, kitti_root, tmp_path):
    assert detect_kind(semantics_root).name == "kitti_semantics"
    assert detect_kind(kitti_root).name == "kitti"
    assert detect_kind(kitti_root / "data_road").name == "kitti"
    # The zip unpacked into a folder of its own name.
    outer = tmp_path / "outer"
    copy_tree(semantics_root, outer / "data_semantics")
    assert detect_kind(outer).name == "kitti_semantics"
    assert len(find_kitti_semantics(outer, "train")) == TRAIN - 1


def test_bad_layouts_are_refused_in_one_line(semantics_root, tmp_path):
    with pytest.raises(UserError, match="no folder .*training/image_2") as error:
        find_kitti_semantics(tmp_path, "train")
    assert "\n" not in str(error.value)
    root = copy_tree(semantics_root, tmp_path / "tree")
    (root / "training" / "semantic" / "000003_10.png").unlink()
    with pytest.raises(UserError, match="1 KITTI semantics image.*000003_10.png.*skip_missing"):
        find_kitti_semantics(root, "train")
    kept = find_kitti_semantics(root, "train", val_fraction=0.1, skip_missing_labels=True)
    kept += find_kitti_semantics(root, "val", val_fraction=0.1, skip_missing_labels=True)
    assert len(kept) == TRAIN - 1
    with pytest.raises(UserError, match="unknown KITTI semantics split 'testing'"):
        find_kitti_semantics(root, "testing")


def test_its_options_are_its_own():
    data = config_from_dict({"data": {"dataset": "kitti_semantics", "val_fraction": 0.25}}).data
    assert data.val_fraction == 0.25 and data.labels == ["categories"]
    with pytest.raises(UserError, match="unknown config key.*holdout_cities"):
        config_from_dict({"data": {"dataset": "kitti_semantics", "holdout_cities": ["ulm"]}})
    with pytest.raises(UserError, match="train_split"):
        config_from_dict({"data": {"dataset": "kitti_semantics", "train_split": "val"}})


def test_data_check_finds_it_and_reports_its_problems(semantics_root, tmp_path, capsys):
    assert check.main([str(semantics_root), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "KITTI semantics" in out and "no problems found" in out
    root = copy_tree(semantics_root, tmp_path / "tree")
    (root / "training" / "semantic" / "000004_10.png").unlink()
    (root / "training" / "image_2" / "000007_10.png").unlink()
    assert check.main([str(root), "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert "000004_10.png" in out and "000007_10.png" in out
    # With those restored, a colour label in place of the label ids: refused, naming the
    # folder to use.
    for folder, name in (("semantic", "000004_10.png"), ("image_2", "000007_10.png")):
        shutil.copy(semantics_root / "training" / folder / name, root / "training" / folder / name)
    training = root / "training"
    shutil.copy(
        training / "semantic_rgb" / "000002_10.png", training / "semantic" / "000002_10.png"
    )
    assert check.main([str(root), "--dataset", "kitti_semantics", "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert "000002_10.png is not a single-channel 8-bit PNG" in out
    assert "use the files of training/semantic" in out


def _hand_class_iou(predictions: list[Path], ground_truths: list[Path]) -> dict[str, float]:
    """IoU of each evaluated class counted pixel by pixel, as the official protocol counts it:
    false positives only on evaluated ground truth."""
    pred = np.concatenate([cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ravel() for p in predictions])
    gt = np.concatenate([cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ravel() for p in ground_truths])
    evaluated = np.isin(gt, EVALUATED_IDS)
    scores = {}
    for label_id in EVALUATED_IDS:
        tp = np.sum((pred == label_id) & (gt == label_id))
        fn = np.sum((gt == label_id) & (pred != label_id))
        fp = np.sum((pred == label_id) & (gt != label_id) & evaluated)
        scores[id2label[label_id].name] = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
    return scores


@pytest.mark.slow
def test_a_tiny_run_trains_and_is_scored_by_the_official_evaluator(
    semantics_root, tmp_path, small_config
):
    config = small_config(
        semantics_root,
        tmp_path / "run",
        data={"dataset": "kitti_semantics", "labels": "classes", "val_fraction": 0.2},
        loss={"name": "ce"},
        train={"batch_size": 4, "log_images": 0},
    )
    config["optim"] = {"optimizer": "sgd", "momentum": 0.0, "lr": 0.01}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train.main(["--config", str(path)]) == 0

    export = tmp_path / "export"
    scores = tmp_path / "scores.json"
    argv = ["--checkpoint", str(tmp_path / "run" / "last.pt"), "--device", "cpu"]
    assert evaluate.main([*argv, "--output-json", str(scores), "--export-dir", str(export)]) == 0
    results = json.loads(scores.read_text())
    val_names = [
        s.image_path.name for s in find_kitti_semantics(semantics_root, "val", val_fraction=0.2)
    ]
    assert results["images"] == 2
    # The export: label-id PNGs named like the input images, at their size.
    predictions = sorted((export / "semantic").iterdir())
    assert [p.name for p in predictions] == val_names
    ground_truths = [semantics_root / "training" / "semantic" / name for name in val_names]
    for prediction, gt in zip(predictions, ground_truths):
        ids = cv2.imread(str(prediction), cv2.IMREAD_UNCHANGED)
        assert ids.shape == cv2.imread(str(gt), cv2.IMREAD_UNCHANGED).shape
        assert set(np.unique(ids)) <= set(EVALUATED_IDS) | {0}

    # The official evaluator, given the pairs explicitly (KITTI's names are not Cityscapes'),
    # agrees with the run's scores and with a count by hand.
    official = run_official_evaluator(predictions, ground_truths)
    by_hand = _hand_class_iou(predictions, ground_truths)
    ours = results["cityscapes"]["classScores"]
    assert set(ours) == set(by_hand)  # the 19 evaluated classes (the official dict lists all)
    for name in by_hand:
        score = official["classScores"][name]
        if np.isnan(score):
            assert np.isnan(by_hand[name]) and ours[name] is None, name
        else:
            assert by_hand[name] == pytest.approx(score, abs=1e-6), name
            assert ours[name] == pytest.approx(score, abs=1e-4), name
    assert results["mIoU"] == pytest.approx(official["averageScoreClasses"], abs=1e-4)

    # The testing images have no labels: scoring them is refused in one line.
    assert evaluate.main([*argv, "--split", "test"]) == 2
