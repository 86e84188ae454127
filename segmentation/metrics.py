"""Segmentation metrics: pure functions over a confusion matrix, and its device-side accumulator.

A confusion matrix `cm (C, C)` int64 has ground truth in rows and prediction in columns.
A class absent from both ground truth and prediction has no score: NaN, left out of the means,
exactly as the official Cityscapes evaluator does; a class that is only predicted scores 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

from segmentation.data.labels import IGNORE_INDEX
from segmentation.errors import UserError

# --------------------------------------------------------------------------- functional core


def _as_float_matrix(cm: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(cm, torch.Tensor):
        cm = cm.detach().cpu().numpy()
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix is (C, C), got shape {cm.shape}")
    return cm.astype(np.float64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def true_false_counts(cm: np.ndarray | torch.Tensor) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn) per class, each (C,) float64."""
    matrix = _as_float_matrix(cm)
    tp = np.diag(matrix)
    return tp, matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp


def iou_per_class(cm: np.ndarray | torch.Tensor) -> np.ndarray:
    """(C,) float64 TP / (TP + FP + FN); NaN for classes absent from ground truth and prediction."""
    tp, fp, fn = true_false_counts(cm)
    return _ratio(tp, tp + fp + fn)


def dice_per_class(cm: np.ndarray | torch.Tensor) -> np.ndarray:
    """(C,) float64 2TP / (2TP + FP + FN) (= F1); NaN for classes absent from both."""
    tp, fp, fn = true_false_counts(cm)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def pixel_accuracy(cm: np.ndarray | torch.Tensor) -> float:
    """Correct pixels / counted pixels; NaN when nothing was counted."""
    matrix = _as_float_matrix(cm)
    return float(_ratio(np.trace(matrix), matrix.sum()))


def mean_score(scores: np.ndarray) -> float:
    """Mean over the classes that have a score (not NaN); NaN when none has."""
    present = scores[~np.isnan(scores)]
    return float(present.mean()) if present.size else math.nan


def none_if_nan(value: float) -> float | None:
    """JSON has no NaN: scores that do not exist are reported as None (null)."""
    return None if math.isnan(value) else float(value)


def predictions_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """logits (B, K, H, W) -> predicted classes (B, H, W) int64.

    K > 1: argmax over channels. K == 1 (binary sigmoid head, the logit of class 1): class 1
    where logit > 0, i.e. probability > 0.5.
    """
    if logits.dim() != 4:
        raise UserError(f"logits must be (B, K, H, W), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


# Copies of the histogram that an accelerator's atomic adds spread over (see scatter_count):
# the fastest of 1, 8, 32 and 128 on an H200 (bench/bench_metrics.py --device cuda has a row
# for each).
SCATTER_COPIES = 128


def count_bins(index: torch.Tensor, num_bins: int) -> torch.Tensor:
    """(num_bins,) int64 occurrences of each value 0..num_bins-1 in `index` (any shape).

    Values (int32 or int64) must lie in 0..num_bins-1. On the CPU this is one torch.bincount.
    On an accelerator it is one scatter_add_ instead, because CUDA's bincount copies the
    input's min and max to the host to size its output: a device sync on every call, which the
    training loop must not pay. Integer atomic adds are exact, so both give the same counts.
    """
    index = index.reshape(-1)
    if index.device.type == "cpu":
        return torch.bincount(index, minlength=num_bins)
    return scatter_count(index, num_bins, SCATTER_COPIES)


def scatter_count(index: torch.Tensor, num_bins: int, copies: int = 1) -> torch.Tensor:
    """`count_bins` by scatter_add_: (num_bins,) int64, on any device, without a host sync.

    With copies > 1, element i adds to copy i % copies of the histogram, and the copies are
    summed: a million atomic adds onto a few hundred bins wait for each other, spread over
    more addresses they wait less."""
    index = index.reshape(-1).long()  # scatter_add_ takes int64 indices
    if copies > 1:
        lane = torch.arange(index.numel(), device=index.device) % copies
        index = index + lane * num_bins
    counts = torch.zeros(copies * num_bins, dtype=torch.int64, device=index.device)
    counts.scatter_add_(0, index, torch.ones_like(index))
    return counts.view(copies, num_bins).sum(0)


def all_reduce_sum(tensor: torch.Tensor) -> None:
    """Sum `tensor` in place over all processes when torch.distributed is initialized."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def _pair_index(
    prediction: torch.Tensor,
    target: torch.Tensor,
    classes: int,
    ignore_index: int,
    device: torch.device,
) -> torch.Tensor:
    """(B, H, W) int32 target * C + prediction on `device`; C * C where a pixel is not counted
    (target or prediction outside 0..C-1, or the ignore index)."""
    # int32 halves the memory traffic of these passes, the whole cost of an update on a CPU.
    target = target.to(device, torch.int32)
    prediction = prediction.to(device, torch.int32)
    valid = target >= 0
    valid &= target < classes
    valid &= prediction >= 0
    valid &= prediction < classes
    if 0 <= ignore_index < classes:
        valid &= target != ignore_index
    index = target * classes
    index += prediction
    return index.masked_fill_(~valid, classes * classes)


def per_image_confusion(
    prediction: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """One confusion matrix per image: (B, C, C) int64 on the tensors' device, counted as
    `ConfusionMatrix.update` counts (their sum over B is its update). One count over the whole
    batch and no wait for the device: the images' bins lie side by side, and uncounted pixels
    go to one extra bin that is dropped."""
    if prediction.shape != target.shape or prediction.dim() != 3:
        raise UserError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must both "
            "be (B, H, W)"
        )
    batch, square = prediction.shape[0], num_classes * num_classes
    index = _pair_index(prediction, target, num_classes, ignore_index, prediction.device)
    image = torch.arange(batch, device=index.device, dtype=torch.int32).view(batch, 1, 1)
    # Counted pixels of image b land in bins b*C*C .. (b+1)*C*C-1; the others in B*C*C.
    index = torch.where(index < square, index + image * square, batch * square)
    counts = count_bins(index, batch * square + 1)[:-1]
    return counts.view(batch, num_classes, num_classes)


# --------------------------------------------------------------------------- accumulator


class ConfusionMatrix:
    """Confusion matrix (C, C) int64 accumulated on `device`, rows ground truth.

    `update` never waits for the device (no .item(), .cpu() or data-dependent shapes), so it is
    safe on every training step. Counted pixels: target in 0..C-1. IGNORE_INDEX, and any other
    target value outside 0..C-1 (a label the scheme does not know), count as ignored; so do
    predictions outside 0..C-1, which argmax over C channels never produces.
    """

    def __init__(
        self, num_classes: int, device: torch.device | str, ignore_index: int = IGNORE_INDEX
    ) -> None:
        if num_classes < 1:
            raise UserError(f"a confusion matrix needs at least one class, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Count prediction (B, H, W) int against target (B, H, W) int (same shape)."""
        if prediction.shape != target.shape:
            raise UserError(
                f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ "
                "in shape: resize the prediction to the target first"
            )
        classes = self.num_classes
        index = _pair_index(prediction, target, classes, self.ignore_index, self.matrix.device)
        # Uncounted pixels went to one extra bin, dropped here: masking them out instead
        # (index[valid]) would make the size data-dependent and wait for the device.
        counts = count_bins(index, classes * classes + 1)[:-1]
        self.matrix += counts.view(classes, classes)

    def all_reduce(self) -> None:
        """Sum the matrices of all processes (no-op without torch.distributed)."""
        all_reduce_sum(self.matrix)

    def reset(self) -> None:
        self.matrix.zero_()

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        """Scores of the accumulated matrix (copies it to the host once).

        Returns {"mIoU", "mDice", "pixel_accuracy": float | None,
        "per_class": {name: {"iou": float | None, "dice": float | None}}}; None where a score
        does not exist (class absent from ground truth and prediction; nothing counted), so that
        the dict is valid JSON. Means leave those classes out.
        """
        names = list(class_names) if class_names is not None else None
        if names is None:
            names = [str(index) for index in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise UserError(f"{len(names)} class names for {self.num_classes} classes")
        matrix = self.matrix.cpu().numpy()
        iou, dice = iou_per_class(matrix), dice_per_class(matrix)
        return {
            "mIoU": none_if_nan(mean_score(iou)),
            "mDice": none_if_nan(mean_score(dice)),
            "pixel_accuracy": none_if_nan(pixel_accuracy(matrix)),
            "per_class": {
                name: {"iou": none_if_nan(iou[i]), "dice": none_if_nan(dice[i])}
                for i, name in enumerate(names)
            },
        }


class PerImageConfusionMatrix(ConfusionMatrix):
    """A `ConfusionMatrix` that counts image by image: `update` keeps the batch's per-image
    matrices (B, C, C) on the device in `last` and adds their sum, so that a report's
    per-image counts and the matrix come from one pass over the pixels."""

    def __init__(
        self, num_classes: int, device: torch.device | str, ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__(num_classes, device, ignore_index)
        self.last: torch.Tensor | None = None

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        if prediction.shape != target.shape:
            super().update(prediction, target)  # its error message
        device = self.matrix.device
        self.last = per_image_confusion(
            prediction.to(device), target.to(device), self.num_classes, self.ignore_index
        )
        self.matrix += self.last.sum(dim=0)
