"""The official protocols a dataset kind can score with, beside the confusion matrix that
scores every dataset: the Cityscapes evaluator's IoU (the 19 classes and the categories) and
the KITTI road devkit's MaxF/AP/PRE/REC/FPR/FNR. A kind names its scorer (kinds/*.py)."""

from __future__ import annotations

import numpy as np
import torch

from segmentation.data.dataset import Sample
from segmentation.data.labels import LabelScheme
from segmentation.evaluation.cityscapes import EVALUATED_IDS, CityscapesScores
from segmentation.evaluation.kitti_road import CATEGORIES, KittiRoadScores
from segmentation.files import json_safe
from segmentation.metrics import mean_score, none_if_nan


def official_dice(cm_label_ids: np.ndarray, evaluated_ids: list[int]) -> np.ndarray:
    """Dice 2TP / (2TP + FP + FN) of the evaluated classes, counted as the official evaluator
    counts IoU: false positives only on pixels of evaluated ground truth, predictions of
    ignored ids as misses. NaN where a class is absent from both sides."""
    cm = cm_label_ids.astype(np.float64)
    rows = cm[evaluated_ids]
    tp = rows[:, evaluated_ids].diagonal()
    fn = rows.sum(axis=1) - tp
    fp = rows[:, evaluated_ids].sum(axis=0) - tp
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


class OfficialCityscapes:
    """Stored values are Cityscapes label ids; predictions go out as the scheme's label ids.
    Results gain "cityscapes" (the evaluator's scores); a scheme that predicts the 19 evaluated
    classes takes its headline (per-class IoU, mIoU, Dice, accuracy) from them."""

    def __init__(self, scheme: LabelScheme, device: torch.device) -> None:
        self.scheme = scheme
        self.scores = CityscapesScores(device, export_label_ids=scheme.export_label_ids)

    def update(
        self, classes: torch.Tensor, probs: torch.Tensor, stored: torch.Tensor, samples: list
    ) -> None:
        self.scores.update(classes, stored)

    def add_results(self, results: dict) -> None:
        official = self.scores.compute()
        results["cityscapes"] = {key: json_safe(value) for key, value in official.items()}
        if self.scheme.contains_evaluated_classes:
            self._use_official_classes(results, official)

    def _use_official_classes(self, results: dict, official: dict) -> None:
        """The headline mIoU of a 19-class scheme is the official "IoU class"; Dice follows
        the same counting rules."""
        matrix = self.scores.confusion.matrix.cpu().numpy()
        ids = EVALUATED_IDS
        dice = official_dice(matrix, ids)
        names = list(official["classScores"])
        results["per_class"] = {
            name: {"iou": none_if_nan(official["classScores"][name]), "dice": none_if_nan(dice[i])}
            for i, name in enumerate(names)
        }
        results["mIoU"] = none_if_nan(official["averageScoreClasses"])
        results["mDice"] = none_if_nan(mean_score(dice))
        rows = matrix[ids]
        total = rows.sum()
        results["pixel_accuracy"] = none_if_nan(
            rows[:, ids].trace() / total if total else float("nan")
        )

    def report_histograms(self) -> None:
        return None


class KittiRoadDevkit:
    """Stored values are KITTI colour codes (labels.kitti_codes: 2 * valid + road); the road
    probability is scored per category as the devkit scores it. Results gain "kitti_road"."""

    def __init__(self, device: torch.device) -> None:
        self.scores = KittiRoadScores(device)

    def update(
        self,
        classes: torch.Tensor,
        probs: torch.Tensor,
        stored: torch.Tensor,
        samples: list[Sample],
    ) -> None:
        valid = stored >= 2
        road = (stored & 1).bool()
        self.scores.update(probs[:, 1], road, valid, [sample.group for sample in samples])

    def add_results(self, results: dict) -> None:
        results["kitti_road"] = json_safe(self.scores.compute())

    def report_histograms(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{category: (road, non-road) level histograms}, and "overall"."""
        counts = self.scores.histograms.cpu().numpy()
        histograms = {name: (counts[i, 0], counts[i, 1]) for i, name in enumerate(CATEGORIES)}
        histograms["overall"] = (counts[:, 0].sum(axis=0), counts[:, 1].sum(axis=0))
        return histograms
