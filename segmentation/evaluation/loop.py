"""The one confusion-matrix pass over a labelled loader, shared by validation during training
and by evaluate.py: what differs between them is only how a batch becomes predictions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from segmentation.data.loading import progress_bar
from segmentation.metrics import ConfusionMatrix

# batch -> (predicted classes (B, H, W), target classes (B, H, W) with the ignore index), on
# the matrix's device.
Predict = Callable[[Any], tuple[torch.Tensor, torch.Tensor]]
# (batch, predicted classes, target classes), called once the matrix has counted the batch.
Counted = Callable[[Any, torch.Tensor, torch.Tensor], None]


@torch.no_grad()
def evaluate(
    predict: Predict,
    batches: Iterable,
    matrix: ConfusionMatrix,
    *,
    total: int | None = None,
    show_progress: bool = True,
    on_counted: Counted | None = None,
) -> ConfusionMatrix:
    """Count every batch's predictions against its target into `matrix`, summed over the
    processes of a distributed job. `total`: images expected, for the progress bar.
    `on_counted`: what to do with a batch once counted (a report's per-image look at it)."""
    progress = progress_bar(total or 0, "evaluate", enabled=show_progress and bool(total))
    for batch in batches:
        classes, target = predict(batch)
        matrix.update(classes, target)
        if on_counted is not None:
            on_counted(batch, classes, target)
        progress.update(len(classes))
    progress.close()
    matrix.all_reduce()
    return matrix
