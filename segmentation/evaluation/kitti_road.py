"""KITTI road devkit metrics (MaxF, AP, PRE, REC, FPR, FNR) in the image plane.

The devkit (devkit_road `helper.py`) reads road probabilities from 8-bit PNGs, v / 255, and
sweeps the thresholds k / 255, k = 0..255: a pixel is predicted road at threshold k when its
probability is >= k / 255. Only valid pixels (red channel of the ground truth > 0) count; road
is blue channel > 0. Summed over images, two 256-bin histograms of the probability levels, one
for road and one for non-road pixels, hold everything the devkit needs.

Quantization: level = round(clamp(prob, 0, 1) * 255) in float32, halves to even (torch.round),
i.e. what saving the probability as an 8-bit PNG with np.rint would store. For every v in
0..255 the devkit's float32(v / 255) is >= k / 255 exactly when v >= k (checked in the tests),
so "level >= k" is the devkit's decision, and `road_scores` equals the devkit's numbers for
the PNGs one would have written. NaN probabilities are not counted here; the evaluator refuses
them before they reach the score or the export (Evaluator._score), so that both follow one
rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from segmentation.errors import UserError
from segmentation.metrics import all_reduce_sum, count_bins

NUM_LEVELS = 256
CATEGORIES = ("um", "umm", "uu")
THRESHOLDS = np.arange(NUM_LEVELS) / 255.0  # the devkit's np.array(range(0, 256)) / 255.0
SCORE_KEYS = ("MaxF", "AP", "PRE", "REC", "FPR", "FNR", "threshold")


# --------------------------------------------------------------------------- functional core


def quantize(road_prob: torch.Tensor) -> torch.Tensor:
    """Probabilities (any shape) float -> levels 0..255 int64 (see the module docstring).

    NaN becomes -1, a level no histogram counts.
    """
    scaled = torch.round(road_prob.float().clamp(0.0, 1.0) * 255.0)
    return torch.where(torch.isnan(scaled), -1.0, scaled).long()


def level_histograms(
    road_prob: torch.Tensor, gt_road: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Per-image level histograms (B, 2, 256) int64: [:, 0] road pixels, [:, 1] non-road.

    road_prob (B, H, W) float in [0, 1]; gt_road, valid (B, H, W) bool. One count over the
    whole batch, no wait for the device: uncounted pixels go to an extra bin that is dropped.
    """
    if not (road_prob.shape == gt_road.shape == valid.shape) or road_prob.dim() != 3:
        raise UserError(
            f"road_prob {tuple(road_prob.shape)}, gt_road {tuple(gt_road.shape)} and valid "
            f"{tuple(valid.shape)} must all be (B, H, W)"
        )
    batch = road_prob.shape[0]
    level = quantize(road_prob)
    gt_road = gt_road.to(level.device, torch.bool)
    valid = valid.to(level.device, torch.bool) & (level >= 0)
    image = torch.arange(batch, device=level.device).view(batch, 1, 1)
    negative = (~gt_road).long()
    index = (image * 2 + negative) * NUM_LEVELS + level
    bins = batch * 2 * NUM_LEVELS
    index = torch.where(valid, index, bins)
    return count_bins(index, bins + 1)[:-1].view(batch, 2, NUM_LEVELS)


def devkit_counts(pos_hist: np.ndarray, neg_hist: np.ndarray):
    """The devkit's evalExp outputs from level histograms: (FN, FP, posNum, negNum).

    FN[k]: road pixels below threshold k; FP[k]: non-road pixels at or above it. Built as
    evalExp builds them, from histograms over the bins [-inf, t0, ..., t255, inf].
    """
    pos_hist = np.asarray(pos_hist, dtype=np.int64)
    neg_hist = np.asarray(neg_hist, dtype=np.int64)
    # evalExp's 257 bins: nothing below t0 = 0, then level k in the bin [t_k, t_k+1).
    fn_hist = np.concatenate(([0], pos_hist))
    fp_hist = np.concatenate(([0], neg_hist))
    fn = np.cumsum(fn_hist)[:NUM_LEVELS]
    fp = np.flipud(np.cumsum(np.flipud(fp_hist)))[1 : 1 + NUM_LEVELS]
    return fn, fp, int(pos_hist.sum()), int(neg_hist.sum())


def _calc_eval_measures(tp, tn, fp, fn) -> dict[str, float]:
    """calcEvalMeasures on the counts at the MaxF point: float32 arithmetic, as the devkit."""
    tp, tn, fp, fn = (np.float32(value) for value in (tp, tn, fp, fn))
    positives, negatives = tp + fn, tn + fp
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "PRE": float(tp / (tp + fp)),
            "REC": float(tp / positives),
            "FPR": float(fp / negatives),
            "FNR": float(fn / positives),
        }


def road_scores(pos_hist: np.ndarray | torch.Tensor, neg_hist: np.ndarray | torch.Tensor) -> dict:
    """The devkit's scores from level histograms (256,) of road and non-road valid pixels.

    Returns {"MaxF", "AP", "PRE", "REC", "FPR", "FNR", "threshold"} as fractions in [0, 1]
    (evalExp + pxEval_maximizeFMeasure + calcEvalMeasures): PRE, REC, FPR, FNR at the first
    threshold of maximal F; "threshold" is that k / 255; AP the 11-point Pascal VOC average
    precision. All NaN when there is no road pixel (the devkit would fail there).
    """
    if isinstance(pos_hist, torch.Tensor):
        pos_hist = pos_hist.detach().cpu().numpy()
    if isinstance(neg_hist, torch.Tensor):
        neg_hist = neg_hist.detach().cpu().numpy()
    total_fn, total_fp, pos_num, neg_num = devkit_counts(pos_hist, neg_hist)
    if pos_num == 0:
        return dict.fromkeys(SCORE_KEYS, math.nan)

    total_tp = pos_num - total_fn
    total_tn = neg_num - total_fp
    recall = total_tp / float(pos_num)
    precision = total_tp / (total_tp + total_fp + 1e-10)
    # TP == 0 at the highest thresholds only (TP never grows with the threshold), so the
    # removed entries are a suffix and indices below stay those of the full arrays, as the
    # devkit assumes when it indexes totalTP with them.
    invalid = (recall == 0) & (precision == 0)
    recall, precision = recall[~invalid], precision[~invalid]

    average_precision = 0.0
    levels = np.arange(0, 1.1, 0.1)  # 11 levels, with np.arange's rounding (0.30000000000000004)
    for level in levels:
        average_precision += max(precision[np.where(recall >= level)])
    average_precision /= len(levels)

    f_measure = 2 * precision * recall / (precision + recall + 1e-10)
    best = int(f_measure.argmax())
    scores = {"MaxF": float(f_measure[best]), "AP": float(average_precision)}
    scores.update(
        _calc_eval_measures(total_tp[best], total_tn[best], total_fp[best], total_fn[best])
    )
    scores["threshold"] = float(THRESHOLDS[best])
    return scores


# --------------------------------------------------------------------------- accumulator


class KittiRoadScores:
    """Road / non-road level histograms per category (um, umm, uu), on `device`.

    `update` never waits for the device; `compute` gives `road_scores` per category seen and
    "overall" (the histograms of all images summed).
    """

    def __init__(self, device: torch.device | str) -> None:
        # (category, road / non-road, level)
        self.histograms = torch.zeros(
            len(CATEGORIES), 2, NUM_LEVELS, dtype=torch.int64, device=device
        )

    def update(
        self,
        road_prob: torch.Tensor,
        gt_road: torch.Tensor,
        valid: torch.Tensor,
        categories: str | Sequence[str],
    ) -> None:
        """road_prob, gt_road, valid (B, H, W); categories: one per image, or one for all."""
        batch = road_prob.shape[0]
        names = [categories] * batch if isinstance(categories, str) else list(categories)
        if len(names) != batch:
            raise UserError(f"{len(names)} categories for a batch of {batch} images")
        unknown = sorted(set(names) - set(CATEGORIES))
        if unknown:
            raise UserError(f"unknown KITTI road categories {unknown}: use {', '.join(CATEGORIES)}")
        device = self.histograms.device
        per_image = level_histograms(road_prob.to(device), gt_road.to(device), valid.to(device))
        # Categories are known on the host: a per-image add needs no index tensor copied over.
        for image, name in enumerate(names):
            self.histograms[CATEGORIES.index(name)] += per_image[image]

    def all_reduce(self) -> None:
        all_reduce_sum(self.histograms)

    def reset(self) -> None:
        self.histograms.zero_()

    def compute(self) -> dict[str, dict]:
        """{category: scores} for the categories with counted pixels, plus "overall"."""
        histograms = self.histograms.cpu().numpy()
        results = {
            name: road_scores(histograms[i, 0], histograms[i, 1])
            for i, name in enumerate(CATEGORIES)
            if histograms[i].sum() > 0
        }
        overall = histograms.sum(axis=0)
        results["overall"] = road_scores(overall[0], overall[1])
        return results
