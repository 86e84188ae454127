"""The official Cityscapes "pixel-level semantic labeling" scores, from a label-id confusion matrix.

`official_scores` reproduces `getIouScoreForLabel`, `getIouScoreForCategory` and
`getScoreAverage` of cityscapesscripts' evalPixelLevelSemanticLabeling.py on a (34, 34)
confusion matrix of label ids (rows ground truth, columns prediction). What that protocol does
and a plain confusion-matrix IoU does not:
- false positives of a class are counted only on pixels whose ground truth is an evaluated
  label: predicting "road" on an "unlabeled" pixel costs nothing;
- false negatives count every prediction on a pixel of the class, predictions of ignored ids
  included: predicting "unlabeled" on a "road" pixel is a miss.
The instance-level scores (iIoU) need instance ids and are not computed here.

Label definitions come from `cityscapesscripts.helpers.labels` only.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from cityscapesscripts.helpers.labels import category2labels, id2label

from segmentation.errors import UserError
from segmentation.metrics import ConfusionMatrix

# Label ids a labelIds PNG can hold (license plate, id -1, never is stored).
NUM_LABEL_IDS = 34
LABEL_IDS = list(range(NUM_LABEL_IDS))
EVALUATED = np.array([not id2label[i].ignoreInEval for i in LABEL_IDS])  # (34,) bool
EVALUATED_IDS = [i for i in LABEL_IDS if EVALUATED[i]]  # the 19 classes, in label-id order


def _category_ids(category: str) -> list[int]:
    """Evaluated label ids of a category (empty for void)."""
    return [
        label.id
        for label in category2labels[category]
        if not label.ignoreInEval and 0 <= label.id < NUM_LABEL_IDS
    ]


EVALUATED_CATEGORIES = [category for category in category2labels if _category_ids(category)]


def _official_average(scores: dict[str, float]) -> float:
    """getScoreAverage: mean of the non-NaN scores, summed in the same order; NaN if none."""
    valid = [score for score in scores.values() if not math.isnan(score)]
    total = 0.0
    for score in valid:
        total += score
    return total / len(valid) if valid else math.nan


def official_scores(cm_label_ids: np.ndarray | torch.Tensor) -> dict:
    """Cityscapes class and category IoU from a confusion matrix (34, 34) of label ids.

    Returns {"classScores": {name: IoU} for the 19 evaluated classes (label-id order),
    "averageScoreClasses": mean over the non-NaN class scores ("IoU class"),
    "categoryScores": {category: IoU} for the 7 non-void categories,
    "averageScoreCategories": mean over the non-NaN category scores ("IoU category")}.
    A score is NaN (as in the official evaluator) when its class or category is absent from
    both the ground truth and the prediction; keys are those of the official result JSON.
    """
    if isinstance(cm_label_ids, torch.Tensor):
        cm_label_ids = cm_label_ids.detach().cpu().numpy()
    cm = np.asarray(cm_label_ids, dtype=np.int64)
    if cm.shape != (NUM_LABEL_IDS, NUM_LABEL_IDS):
        raise ValueError(f"expected a (34, 34) label-id confusion matrix, got {cm.shape}")

    tp = np.diag(cm)
    fn = cm.sum(axis=1) - tp
    # Column sums over the rows of evaluated labels, the class's own row left out.
    fp = cm[EVALUATED].sum(axis=0) - np.where(EVALUATED, tp, 0)
    class_scores = {}
    for label_id in EVALUATED_IDS:
        denominator = tp[label_id] + fp[label_id] + fn[label_id]
        iou = float(tp[label_id]) / denominator if denominator else math.nan
        class_scores[id2label[label_id].name] = float(iou)

    category_scores = {}
    categories = np.array([id2label[i].category for i in LABEL_IDS])
    for category in EVALUATED_CATEGORIES:
        ids = _category_ids(category)
        tp_category = cm[np.ix_(ids, ids)].sum()
        fn_category = cm[ids].sum() - tp_category
        other_rows = EVALUATED & (categories != category)
        fp_category = cm[np.ix_(other_rows, ids)].sum()
        denominator = tp_category + fp_category + fn_category
        iou = float(tp_category) / denominator if denominator else math.nan
        category_scores[category] = float(iou)

    return {
        "classScores": class_scores,
        "averageScoreClasses": _official_average(class_scores),
        "categoryScores": category_scores,
        "averageScoreCategories": _official_average(category_scores),
    }


class CityscapesScores:
    """Label-id confusion matrix (34, 34) on `device` for the official scores.

    export_label_ids (C,): label id of each predicted class (`LabelScheme.export_label_ids`);
    `update` then takes class predictions. Without it, `update` takes label-id predictions.
    Ground-truth values outside 0..33 are not counted. `update` never waits for the device.
    """

    def __init__(
        self, device: torch.device | str, export_label_ids: Sequence[int] | None = None
    ) -> None:
        self.confusion = ConfusionMatrix(NUM_LABEL_IDS, device)
        self.lookup = None
        if export_label_ids is not None:
            lookup = np.asarray(export_label_ids, dtype=np.int64)
            self.lookup = torch.as_tensor(lookup, device=self.confusion.matrix.device)

    def update(self, prediction: torch.Tensor, gt_label_ids: torch.Tensor) -> None:
        """prediction (B, H, W) classes (or label ids), gt_label_ids (B, H, W) at the same size."""
        if self.lookup is not None:
            prediction = self.lookup[prediction.long()]
        self.confusion.update(prediction, gt_label_ids)

    def all_reduce(self) -> None:
        self.confusion.all_reduce()

    def reset(self) -> None:
        self.confusion.reset()

    def compute(self) -> dict:
        """`official_scores` of the accumulated matrix."""
        return official_scores(self.confusion.matrix)


def run_official_evaluator(
    prediction_files: Sequence[str | Path], ground_truth_files: Sequence[str | Path]
) -> dict:
    """Run cityscapesscripts' evaluateImgLists on labelIds PNGs; returns its result dict.

    prediction_files[i] is the labelIds prediction for ground_truth_files[i]
    (`*_gtFine_labelIds.png`). Only pixel-level scores: the instance-level part is switched
    off (it needs instanceIds files, and cityscapesscripts 2.3.0 calls np.in1d there, which
    numpy 2.4 removed). Nothing is printed or written; the evaluator's global settings are
    restored afterwards.
    """
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    predictions = [str(path) for path in prediction_files]
    ground_truths = [str(path) for path in ground_truth_files]
    if len(predictions) != len(ground_truths):
        raise UserError(
            f"{len(predictions)} predictions for {len(ground_truths)} ground-truth files: give "
            "one prediction per ground-truth image"
        )
    missing = [path for path in predictions + ground_truths if not Path(path).is_file()]
    if missing:
        raise UserError(f"missing file(s) for the official evaluator: {missing[:5]}")

    args = official.args
    saved = dict(vars(args))
    settings = {
        "evalInstLevelScore": False,
        "evalPixelAccuracy": False,  # also calls np.in1d
        "quiet": True,
        "JSONOutput": False,
        "colorized": False,
        "bold": "",
        "nocol": "",
    }
    printed = io.StringIO()
    try:
        vars(args).update(settings)
        with contextlib.redirect_stdout(printed):
            return official.evaluateImgLists(predictions, ground_truths, args)
    except SystemExit:
        # The evaluator reports problems by printing and calling sys.exit.
        message = printed.getvalue().strip().splitlines()
        raise UserError(
            f"the official Cityscapes evaluator failed: {message[-1] if message else 'exit'}"
        ) from None
    finally:
        vars(args).clear()
        vars(args).update(saved)
