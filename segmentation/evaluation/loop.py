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


@torch.no_grad()
def evaluate(
    predict: Predict,
    batches: Iterable,
    matrix: ConfusionMatrix,
    *,
    total: int | None = None,
    show_progress: bool = True,
) -> ConfusionMatrix:
    """Count every batch's predictions against its target into `matrix`, summed over the
    processes of a distributed job. `total`: images expected, for the progress bar."""
    progress = progress_bar(total or 0, "evaluate", enabled=show_progress and bool(total))
    for batch in batches:
        classes, target = predict(batch)
        matrix.update(classes, target)
        progress.update(len(classes))
    progress.close()
    matrix.all_reduce()
    return matrix
