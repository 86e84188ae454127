"""KITTI road devkit metrics: hand-built cases and a plain re-implementation of the devkit."""

import math

import numpy as np
import pytest
import torch

from segmentation.data.labels import IGNORE_INDEX
from segmentation.errors import UserError
from segmentation.evaluation.kitti_road import (
    KittiRoadScores,
    level_histograms,
    quantize,
    road_scores,
)


def _scores(road_prob, gt_road, valid=None) -> dict:
    road_prob = torch.as_tensor(road_prob, dtype=torch.float32)[None]
    gt_road = torch.as_tensor(gt_road, dtype=torch.bool)[None]
    valid = torch.ones_like(gt_road) if valid is None else torch.as_tensor(valid)[None]
    histograms = level_histograms(road_prob, gt_road, valid)[0]
    return road_scores(histograms[0], histograms[1])


GT = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 0, 0]], dtype=bool)


def test_perfect_prediction():
    scores = _scores(GT.astype(np.float32), GT)
    assert scores["MaxF"] == pytest.approx(1.0, abs=1e-9)
    assert scores["AP"] == pytest.approx(1.0, abs=1e-9)
    assert (scores["PRE"], scores["REC"], scores["FPR"], scores["FNR"]) == (1.0, 1.0, 0.0, 0.0)
    assert scores["threshold"] == pytest.approx(1 / 255)


def test_inverted_prediction():
    scores = _scores((~GT).astype(np.float32), GT)
    # Only threshold 0 finds road pixels: everything is road there.
    share = GT.sum() / GT.size
    assert scores["MaxF"] == pytest.approx(2 * share / (share + 1), abs=1e-9)
    assert scores["AP"] == pytest.approx(share, abs=1e-9)
    assert scores["PRE"] == pytest.approx(share)
    assert (scores["REC"], scores["FPR"], scores["FNR"], scores["threshold"]) == (1, 1, 0, 0)


def test_half_right_case():
    # road at levels 200, 100; non-road at 150, 50, 50.
    prob = np.array([200, 100, 150, 50, 50], np.float32) / 255
    gt = np.array([True, True, False, False, False])
    scores = _scores(prob[None], gt[None])
    # k <= 50: P 2/5, R 1, F 4/7; 50 < k <= 100: P 2/3, R 1, F 0.8;
    # 100 < k <= 150: P 1/2, R 1/2, F 1/2; 150 < k <= 200: P 1, R 1/2, F 2/3; above: no TP.
    assert scores["MaxF"] == pytest.approx(0.8, abs=1e-9)
    assert scores["threshold"] == pytest.approx(51 / 255)
    assert scores["PRE"] == pytest.approx(2 / 3) and scores["REC"] == 1.0
    assert scores["FPR"] == pytest.approx(1 / 3) and scores["FNR"] == 0.0
    # Recall levels 0..0.5 reach precision 1 (6 levels), 0.6..1.0 only 2/3 (5 levels).
    assert scores["AP"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11, abs=1e-9)


def test_pixels_outside_the_valid_area_count_for_nothing():
    rng = np.random.default_rng(1)
    prob = rng.random((6, 9)).astype(np.float32)
    gt = rng.random((6, 9)) < 0.4
    valid = np.ones((6, 9), bool)
    valid[:, :3] = False
    reference = _scores(prob, gt, valid)
    prob[:, :3] = rng.random((6, 3))
    gt[:, :3] = ~gt[:, :3]
    assert _scores(prob, gt, valid) == reference


def test_quantization_matches_the_devkit_reading_of_8bit_pngs():
    levels = torch.arange(256)
    assert torch.equal(quantize(levels.float() / 255), levels)
    # The devkit's float32 v / 255 never falls below the threshold v / 255.
    as_read = np.arange(256).astype("f4") / 255
    assert (as_read.astype(np.float64) >= np.arange(256) / 255.0).all()
    assert quantize(torch.tensor([-0.2, 1.5, float("nan")])).tolist() == [0, 255, -1]


def test_against_a_plain_devkit_on_random_images(road_devkit):
    rng = np.random.default_rng(2)
    levels, gts, valids = [], [], []
    accumulator = KittiRoadScores("cpu")
    for image, category in enumerate(["um", "umm", "um", "uu"]):
        shape = (20 + image, 31)
        gt = rng.random(shape) < 0.35
        # Probabilities related to the ground truth, so that the scores are not trivial.
        prob = np.clip(0.3 * gt + 0.7 * rng.random(shape), 0, 1).astype(np.float32)
        valid = rng.random(shape) < 0.9
        levels.append(np.rint(prob * np.float32(255)).astype(np.uint8))  # the PNG one would save
        gts.append(gt)
        valids.append(valid)
        accumulator.update(
            torch.from_numpy(prob)[None],
            torch.from_numpy(gt)[None],
            torch.from_numpy(valid)[None],
            category,
        )
    results = accumulator.compute()
    assert set(results) == {"um", "umm", "uu", "overall"}
    expected = road_devkit(levels, gts, valids)
    for key, value in expected.items():
        assert results["overall"][key] == pytest.approx(float(value), abs=1e-12), key
    um = road_devkit([levels[0], levels[2]], [gts[0], gts[2]], [valids[0], valids[2]])
    for key, value in um.items():
        assert results["um"][key] == pytest.approx(float(value), abs=1e-12), key


def test_probabilities_are_counted_at_their_quantized_levels():
    road_prob = torch.sigmoid(torch.tensor([[[3.0, -3.0, 1.0, 0.0]]]))
    target = torch.tensor([[[1, 0, IGNORE_INDEX, 1]]])
    gt_road, valid = target == 1, target != IGNORE_INDEX
    accumulator = KittiRoadScores("cpu")
    accumulator.update(road_prob, gt_road, valid, ["uu"])
    histograms = accumulator.histograms
    assert histograms.sum() == 3
    assert histograms[2, 0, 243] == 1  # sigmoid(3) * 255 = 242.9
    assert histograms[2, 0, 128] == 1  # sigmoid(0) * 255 = 127.5, rounds half to even
    assert histograms[2, 1, 12] == 1  # sigmoid(-3) * 255 = 12.1
    assert set(accumulator.compute()) == {"uu", "overall"}


def test_no_road_pixel_gives_nan():
    scores = road_scores(np.zeros(256, np.int64), np.ones(256, np.int64))
    assert all(math.isnan(value) for value in scores.values())


def test_bad_input_is_a_user_error():
    accumulator = KittiRoadScores("cpu")
    prob = torch.zeros(2, 3, 4)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    with pytest.raises(UserError, match="um, umm, uu"):
        accumulator.update(prob, mask, mask, "city")
    with pytest.raises(UserError, match="categories for a batch"):
        accumulator.update(prob, mask, mask, ["um"])
