"""Scoring a trained model on a labelled split at the labels' full resolution.

Every prediction is upsampled to its label's size before it is counted. The confusion matrix
over the scheme's classes (ignored pixels left out) scores every dataset; the dataset's kind
adds its official protocol where it has one (evaluation/scorers.py: Cityscapes schemes that
contain the 19 evaluated classes report the official "IoU class", the categories scheme the
official category IoU, KITTI the devkit's MaxF/AP/PRE/REC/FPR/FNR per category), and writes
--export-dir in its own evaluator's format. The dataset may be of another kind than the one
trained on (evaluation/mapping.py): its scheme then feeds the model's classes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segmentation.data.dataset import FullResolutionDataset, Sample, collate_size_groups
from segmentation.data.io import write_png
from segmentation.data.kinds.catalog import kind_of
from segmentation.data.loading import make_loader
from segmentation.errors import UserError
from segmentation.evaluation.loop import evaluate
from segmentation.evaluation.mapping import ScoredOn, own_dataset
from segmentation.metrics import ConfusionMatrix, PerImageConfusionMatrix
from segmentation.prediction.predict import PredictionOptions
from segmentation.prediction.trained_model import TrainedModel
from segmentation.visualize import colorize

logger = logging.getLogger(__name__)

# fetch(i) -> image i of a batch as (image (H, W, 3) uint8 RGB, target (H, W) uint8 classes or
# the ignore index, prediction (H, W) uint8 classes), on the host.
FetchImage = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]
# Called once a batch with (sample indices, sample names, per-image confusion counts (B, C, C)
# int64 on the host, fetch): what a report needs to rank images and draw the ones it keeps.
ImageHook = Callable[[list[int], list[str], np.ndarray, FetchImage], None]


@dataclass
class EvaluationOptions:
    prediction: PredictionOptions = field(default_factory=PredictionOptions)
    export_dir: Path | None = None
    export_color: bool = False
    batch_size: int = 2
    workers: int = 2
    image_hook: ImageHook | None = None  # per-image counts for a report (evaluate.py --report)


def _refuse_nan(probs: torch.Tensor, samples: list[Sample]) -> None:
    """One rule for scores and exports: a NaN probability is an error naming its image (the
    KITTI score left NaN pixels out while the export wrote them as 255; an argmax takes NaN
    for the largest value). The check waits for the device once a batch, which costs little
    next to the forward pass."""
    nan_images = probs.isnan().flatten(1).any(dim=1)
    if nan_images.any():
        bad = [sample.image_path for sample, nan in zip(samples, nan_images.tolist()) if nan]
        raise UserError(
            f"the model predicts NaN probabilities for {bad[0]}"
            + (f" and {len(bad) - 1} more image(s) of its batch" if len(bad) > 1 else "")
            + ": the checkpoint holds NaN or overflowing weights; evaluate another one (e.g. "
            "best.pt) or train again"
        )


class Evaluator:
    def __init__(
        self, trained: TrainedModel, options: EvaluationOptions, scored: ScoredOn | None = None
    ) -> None:
        """`scored`: the dataset kind and scheme scored (evaluation/mapping.py); by default
        the model's own kind and scheme."""
        self.trained = trained
        self.options = options
        self.scored = scored or own_dataset(kind_of(trained.config.data), trained.scheme)
        # The model's classes, read from the scored dataset's stored values.
        self.scheme, self.kind = self.scored.scheme, self.scored.kind
        scheme, device = self.scheme, trained.device
        self.lookup = torch.as_tensor(scheme.lookup, device=device).long()
        # With an image hook, the matrix counts image by image (one pass for both).
        counting = PerImageConfusionMatrix if options.image_hook else ConfusionMatrix
        self.matrix = counting(scheme.num_classes, device)
        self.scorer = self.kind.scorer(scheme, device)

    def run(self, samples: list[Sample], read_label) -> dict:
        options = self.options
        loader = make_loader(
            FullResolutionDataset(samples, read_label),
            batch_size=options.batch_size,
            workers=options.workers,
            device=self.trained.device,
            collate_fn=collate_size_groups,
        )
        groups = (group for batches in loader for group in batches)

        def predict(group: dict) -> tuple[torch.Tensor, torch.Tensor]:
            chosen = [samples[index] for index in group["index"]]
            return self._score(group["image"], group["stored"], chosen)

        def counted(group: dict, classes: torch.Tensor, target: torch.Tensor) -> None:
            names = [samples[index].name for index in group["index"]]
            self._per_image(group, names, classes, target)

        hook = counted if options.image_hook is not None else None
        evaluate(predict, groups, self.matrix, total=len(samples), on_counted=hook)
        return self._results(len(samples))

    def _score(
        self, images: torch.Tensor, stored: torch.Tensor, samples: list[Sample]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict a group of equally sized images; feed the official scores and the export.
        Returns (predicted classes, target classes) for the confusion matrix."""
        options = self.options
        classes, probs = self.trained.predict(images, options.prediction)
        _refuse_nan(probs, samples)
        stored = stored.to(self.trained.device, non_blocking=True).long()
        if self.scorer is not None:
            self.scorer.update(classes, probs, stored, samples)
        if options.export_dir is not None:
            self._export(classes, probs, samples)
        return classes, self.lookup[stored]

    def _per_image(
        self, group: dict, names: list[str], classes: torch.Tensor, target: torch.Tensor
    ) -> None:
        """Hand the batch's per-image confusion counts, which the matrix has just counted, to
        the image hook: one copy to the host per batch (the NaN check waits for the device
        there anyway). Pictures are copied only for the images the hook asks for."""
        counts = self.matrix.last

        def fetch(position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            image = group["image"][position].permute(1, 2, 0).cpu().numpy()
            return (
                np.ascontiguousarray(image),
                target[position].to(torch.uint8).cpu().numpy(),
                classes[position].to(torch.uint8).cpu().numpy(),
            )

        self.options.image_hook(list(group["index"]), names, counts.cpu().numpy(), fetch)

    def _export(self, classes: torch.Tensor, probs: torch.Tensor, samples: list[Sample]) -> None:
        scheme, root = self.scheme, Path(self.options.export_dir)
        self.kind.export(root, classes, probs, samples, scheme)
        if self.options.export_color:
            class_maps = classes.to(torch.uint8).cpu().numpy()
            for class_map, sample in zip(class_maps, samples):
                write_png(self.kind.color_path(root, sample), colorize(class_map, scheme))

    def _results(self, num_images: int) -> dict:
        scheme = self.scheme
        scores = self.matrix.compute(scheme.class_names)
        results = {
            "dataset": self.kind.name,  # the dataset scored (a scheme may serve several kinds)
            "labels": scheme.name,
            "checkpoint": str(self.trained.checkpoint),
            "images": num_images,
            "tta": self.options.prediction.tta,
            "amp": self.trained.amp,
            **scores,
        }
        if self.scored.crosses:
            results["mapping"] = self.scored.describe()
        if self.scorer is not None:
            self.scorer.add_results(results)
        self.scored.drop_unscored(results)
        return results
