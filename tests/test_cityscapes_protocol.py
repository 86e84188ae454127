"""`official_scores` against cityscapesscripts' own evaluator on generated labelIds PNGs."""

import math

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import name2label

from segmentation.data.labels import IGNORE_INDEX
from segmentation.errors import UserError
from segmentation.evaluation.cityscapes import (
    EVALUATED_IDS,
    NUM_LABEL_IDS,
    CityscapesScores,
    official_scores,
    run_official_evaluator,
)

IGNORED_IDS = [i for i in range(NUM_LABEL_IDS) if i not in EVALUATED_IDS]
ONLY_PREDICTED = name2label["bus"].id
ONLY_IN_GT = name2label["truck"].id
ABSENT = [name2label[name].id for name in ("train", "person", "rider")]  # human: absent


def _write_pairs(tmp_path, images=3, height=32, width=64):
    rng = np.random.default_rng(0)
    gt_values = [i for i in range(NUM_LABEL_IDS) if i not in ABSENT + [ONLY_PREDICTED]]
    predictable = [i for i in range(NUM_LABEL_IDS) if i not in ABSENT + [ONLY_IN_GT]]
    gt_dir, pred_dir = tmp_path / "gtFine" / "val" / "lindau", tmp_path / "results"
    gt_dir.mkdir(parents=True)
    pred_dir.mkdir()
    gt_files, pred_files = [], []
    for index in range(images):
        gt = rng.choice(gt_values, size=(height, width)).astype(np.uint8)
        gt[0, : len(gt_values)] = gt_values  # every gt value appears
        prediction = np.where(
            rng.random((height, width)) < 0.5, gt, rng.choice(predictable, size=(height, width))
        ).astype(np.uint8)
        prediction[prediction == ONLY_IN_GT] = name2label["car"].id
        prediction[1, :4] = ONLY_PREDICTED
        prediction[2, :3] = [0, 5, 30]  # ignored ids predicted on whatever lies there
        stem = f"lindau_{index:06d}_000019"
        gt_files.append(gt_dir / f"{stem}_gtFine_labelIds.png")
        pred_files.append(pred_dir / f"{stem}_pred.png")
        cv2.imwrite(str(gt_files[-1]), gt)
        cv2.imwrite(str(pred_files[-1]), prediction)
    return pred_files, gt_files


def _accumulate(pred_files, gt_files) -> torch.Tensor:
    scores = CityscapesScores("cpu")
    for pred_file, gt_file in zip(pred_files, gt_files):
        prediction = torch.from_numpy(cv2.imread(str(pred_file), cv2.IMREAD_UNCHANGED))
        gt = torch.from_numpy(cv2.imread(str(gt_file), cv2.IMREAD_UNCHANGED))
        scores.update(prediction[None].long(), gt[None].long())
    return scores


def test_equals_official_evaluator(tmp_path):
    pred_files, gt_files = _write_pairs(tmp_path)
    official = run_official_evaluator(pred_files, gt_files)
    accumulator = _accumulate(pred_files, gt_files)
    assert np.array_equal(accumulator.confusion.matrix.numpy(), np.array(official["confMatrix"]))
    ours = accumulator.compute()

    assert ours["averageScoreClasses"] == pytest.approx(official["averageScoreClasses"], abs=1e-9)
    assert len(ours["classScores"]) == 19
    for name, score in ours["classScores"].items():
        expected = official["classScores"][name]
        assert (math.isnan(score) and math.isnan(expected)) or score == pytest.approx(
            expected, abs=1e-9
        ), name
    assert len(ours["categoryScores"]) == 7
    assert ours["averageScoreCategories"] == pytest.approx(
        official["averageScoreCategories"], abs=1e-9
    )
    for category, score in ours["categoryScores"].items():
        expected = official["categoryScores"][category]
        assert (math.isnan(score) and math.isnan(expected)) or score == pytest.approx(
            expected, abs=1e-9
        ), category

    # The data really holds the cases the protocol treats specially.
    assert math.isnan(ours["classScores"]["train"])
    assert math.isnan(ours["categoryScores"]["human"])
    assert ours["classScores"]["bus"] == 0.0  # only predicted
    assert ours["classScores"]["truck"] == 0.0  # only in the ground truth


def test_evaluator_settings_are_restored(tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as module

    before = dict(vars(module.args))
    pred_files, gt_files = _write_pairs(tmp_path, images=1, height=8, width=40)
    run_official_evaluator(pred_files, gt_files)
    assert vars(module.args) == before


def test_evaluator_errors_become_user_errors(tmp_path):
    pred_files, gt_files = _write_pairs(tmp_path, images=1, height=8, width=40)
    with pytest.raises(UserError, match="one prediction per"):
        run_official_evaluator(pred_files, gt_files * 2)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="not equal"):
        run_official_evaluator([small], gt_files)


def test_hand_computed_case():
    road, sidewalk, unlabeled = (name2label[n].id for n in ("road", "sidewalk", "unlabeled"))
    cm = np.zeros((NUM_LABEL_IDS, NUM_LABEL_IDS), np.int64)
    cm[road, road] = 3
    cm[road, sidewalk] = 1
    cm[road, unlabeled] = 1  # an ignored id predicted on road: a false negative of road
    cm[sidewalk, sidewalk] = 1
    cm[sidewalk, road] = 1
    cm[unlabeled, road] = 3  # road predicted on an ignored pixel: no false positive
    scores = official_scores(cm)
    # road: tp 3, fn 2, fp 1; sidewalk: tp 1, fn 1, fp 1.
    assert scores["classScores"]["road"] == pytest.approx(3 / 6)
    assert scores["classScores"]["sidewalk"] == pytest.approx(1 / 3)
    assert scores["averageScoreClasses"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # flat: tp 6 (road and sidewalk confused within the category), fn 1, fp 0.
    assert scores["categoryScores"]["flat"] == pytest.approx(6 / 7)
    assert scores["averageScoreCategories"] == pytest.approx(6 / 7)
    assert sum(not math.isnan(v) for v in scores["classScores"].values()) == 2


def test_class_predictions_through_export_ids():
    export = np.array([name2label["road"].id, name2label["sidewalk"].id])
    scores = CityscapesScores("cpu", export_label_ids=export)
    prediction = torch.tensor([[[0, 1, 1]]])
    gt = torch.tensor([[[name2label["road"].id, name2label["sidewalk"].id, IGNORE_INDEX]]])
    scores.update(prediction, gt)
    result = scores.compute()
    assert result["classScores"]["road"] == 1.0 and result["classScores"]["sidewalk"] == 1.0
    assert scores.confusion.matrix.sum() == 2  # gt outside 0..33 not counted
