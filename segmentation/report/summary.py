"""The numbers a report shows, from counts the evaluation pass already has: row-normalized
confusions, the classes' shares of the ground truth, per-image mIoU, precision-recall curves,
and the comparison with an earlier run. Pure numpy, no drawing."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segmentation.data.labels import LabelScheme
from segmentation.errors import UserError
from segmentation.evaluation.kitti_road import devkit_counts
from segmentation.report.text import visible


@dataclass(frozen=True)
class Confusion:
    truth: str
    predicted: str
    fraction: float  # of the truth class's counted pixels

    def __str__(self) -> str:
        return f"{self.truth} -> {self.predicted} {self.fraction:.0%} of {self.truth} pixels"


def row_normalized(cm: np.ndarray) -> np.ndarray:
    """(C, C) float64, each ground-truth row divided by its sum; rows without pixels stay 0."""
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def pixel_shares(cm: np.ndarray) -> np.ndarray:
    """(C,) each class's share of the counted ground-truth pixels (zeros when none)."""
    rows = np.asarray(cm, dtype=np.float64).sum(axis=1)
    total = rows.sum()
    return rows / total if total > 0 else rows


def top_confusions(
    cm: np.ndarray, names: list[str], count: int = 10, minimum: float = 0.01
) -> list[Confusion]:
    """The largest off-diagonal entries of the row-normalized matrix, at least `minimum`."""
    normalized = row_normalized(cm)
    np.fill_diagonal(normalized, 0.0)
    order = np.argsort(-normalized, axis=None, kind="stable")[:count]
    pairs = [np.unravel_index(flat, normalized.shape) for flat in order]
    return [
        Confusion(names[truth], names[predicted], float(normalized[truth, predicted]))
        for truth, predicted in pairs
        if normalized[truth, predicted] >= minimum
    ]


def image_miou(per_image: np.ndarray) -> np.ndarray:
    """(N,) mean IoU of each image's (C, C) matrix over the classes present in its ground truth
    or prediction (the toolkit's mIoU rule, image by image); NaN for an image without counted
    pixels."""
    cm = np.asarray(per_image, dtype=np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    union = cm.sum(axis=1) + cm.sum(axis=2) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    present = (union > 0).sum(axis=1)
    sums = np.where(union > 0, iou, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(present > 0, sums / np.maximum(present, 1), np.nan)


@dataclass(frozen=True)
class PrecisionRecall:
    precision: np.ndarray  # (256,) at the thresholds k / 255
    recall: np.ndarray
    best: int  # the threshold index of MaxF
    max_f: float


def precision_recall(pos_hist: np.ndarray, neg_hist: np.ndarray) -> PrecisionRecall | None:
    """The devkit's precision and recall at every threshold, from level histograms of road and
    non-road pixels (kitti_road.level_histograms), and its MaxF point; None without road."""
    fn, fp, positives, _ = devkit_counts(pos_hist, neg_hist)
    if positives == 0:
        return None
    tp = positives - fn
    recall = tp / float(positives)
    precision = tp / (tp + fp + 1e-10)
    # As the devkit: thresholds where nothing is found count for nothing in the maximum.
    f_measure = np.where(
        (recall == 0) & (precision == 0), 0.0, 2 * precision * recall / (precision + recall + 1e-10)
    )
    best = int(f_measure.argmax())
    return PrecisionRecall(precision, recall, best, float(f_measure[best]))


def read_comparison(path: Path) -> dict:
    """An earlier evaluate.py JSON, checked to be one: a mistake is one line."""
    try:
        other = json.loads(Path(path).read_text())
    except OSError as error:
        raise UserError(f"cannot read --compare {path}: {error.strerror or error}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(
            f"--compare {path} is not JSON ({error}): give an evaluate.py JSON"
        ) from None
    keys = ("dataset", "labels", "mIoU", "per_class")
    if not isinstance(other, dict) or any(key not in other for key in keys):
        raise UserError(
            f"--compare {path} is not an evaluate.py JSON (it needs {', '.join(keys)}): give a "
            "file written by evaluate.py --output-json"
        )
    _check_scores(other, path)
    return other


def _is_score(value: object) -> bool:
    """A number the report can show and subtract (null: a class without a score)."""
    if value is None:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_scores(other: dict, path: Path) -> None:
    """The numbers of a --compare JSON that the report reads, checked now: a wrong one found
    while the page is written would come after the whole evaluation."""
    wrong = [
        (key, other[key])
        for key in ("mIoU", "mDice", "pixel_accuracy")
        if key in other and not _is_score(other[key])
    ]
    per_class = other["per_class"]
    if not isinstance(per_class, dict):
        wrong.append(("per_class", per_class))
    else:
        for name, scores in per_class.items():
            if not isinstance(scores, dict):
                wrong.append((f"per_class/{name}", scores))
            elif not _is_score(scores.get("iou")):
                wrong.append((f"per_class/{name}/iou", scores["iou"]))
    if wrong:
        key, value = wrong[0]
        raise UserError(
            f"--compare {path}: {key} is {json.dumps(value)[:40]}, not a score (a number or "
            "null): give a file written by evaluate.py --output-json"
        )


def check_same_scheme(other: dict, scheme: LabelScheme, path: Path) -> None:
    """Per-class deltas mean something only between models of one label scheme, and a folder
    dataset's scheme is its classes (every classes.yaml gives the scheme name "all"). The
    datasets scored may differ (evaluate.py --dataset): the deltas then show the domain
    shift, and the report names both datasets."""
    if other["labels"] != scheme.name:
        raise UserError(
            f"--compare {path} scores the {other['dataset']} '{other['labels']}' label scheme, "
            f"this checkpoint the '{scheme.name}' scheme: compare runs of one scheme"
        )
    # A name fixes the classes within one dataset kind only: Mapillary's 'classes' are not
    # Cityscapes'.
    if scheme.name_fixes_classes and other["dataset"] == scheme.dataset:
        return
    theirs, ours = set(other["per_class"]), set(scheme.class_names)
    if theirs != ours:
        raise UserError(
            f"--compare {path} scores other classes than this checkpoint (only there: "
            f"{_listed(theirs - ours)}; only here: {_listed(ours - theirs)}): compare runs of "
            "the same classes (for folder datasets, of one classes.yaml)"
        )


def _listed(names: set[str], count: int = 5) -> str:
    shown = [visible(name) for name in sorted(names)[:count]]
    more = f" and {len(names) - count} more" if len(names) > count else ""
    return ", ".join(shown) + more if shown else "none"


def iou_deltas(results: dict, other: dict) -> dict[str, float | None]:
    """{class: this run's IoU minus the other's}, None where either has no score."""
    deltas = {}
    for name, scores in results["per_class"].items():
        before = other["per_class"].get(name, {}).get("iou")
        now = scores["iou"]
        deltas[name] = None if now is None or before is None else now - before
    return deltas
