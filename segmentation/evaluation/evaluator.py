"""Scoring a trained model on a labelled split at the labels' full resolution.

Every prediction is upsampled to its label's size before it is counted. Cityscapes schemes
that contain the 19 evaluated classes report the official "IoU class" (with the evaluator's
rules for ignored ids); the categories scheme adds the official category IoU; KITTI adds the
devkit's MaxF/AP/PRE/REC/FPR/FNR per category. A folder dataset has no official protocol: its
scores are those of the confusion matrix over its classes, ignored pixels left out.
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
from segmentation.data.loading import make_loader
from segmentation.errors import UserError
from segmentation.evaluation.cityscapes import EVALUATED_IDS, CityscapesScores
from segmentation.evaluation.kitti_road import KittiRoadScores, quantize
from segmentation.evaluation.loop import evaluate
from segmentation.files import json_safe
from segmentation.inference.model import TrainedModel
from segmentation.inference.predict import PredictionOptions
from segmentation.metrics import (
    ConfusionMatrix,
    PerImageConfusionMatrix,
    mean_score,
    none_if_nan,
)
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


def _official_dice(cm_label_ids: np.ndarray, evaluated_ids: list[int]) -> np.ndarray:
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
    def __init__(self, trained: TrainedModel, options: EvaluationOptions) -> None:
        self.trained = trained
        self.options = options
        scheme, device = trained.scheme, trained.device
        self.lookup = torch.as_tensor(scheme.lookup, device=device).long()
        # With an image hook, the matrix counts image by image (one pass for both).
        counting = PerImageConfusionMatrix if options.image_hook else ConfusionMatrix
        self.matrix = counting(scheme.num_classes, device)
        self.cityscapes = None
        self.kitti = None
        if scheme.dataset == "cityscapes":
            self.cityscapes = CityscapesScores(device, export_label_ids=scheme.export_label_ids)
        elif scheme.dataset == "kitti":
            self.kitti = KittiRoadScores(device)

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
        if self.cityscapes is not None:
            self.cityscapes.update(classes, stored)
        if self.kitti is not None:
            valid = stored >= 2  # colour code: 2 * valid + road (labels.kitti_codes)
            road = (stored & 1).bool()
            self.kitti.update(probs[:, 1], road, valid, [sample.group for sample in samples])
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
        scheme, root = self.trained.scheme, Path(self.options.export_dir)
        class_maps = classes.to(torch.uint8).cpu().numpy()
        if scheme.dataset == "folder":
            # Index masks under the ground truth's relative folder and stem: a folder dataset's
            # masks/SPLIT, written as DIR/masks.
            for class_map, sample in zip(class_maps, samples):
                write_png(root / "masks" / f"{sample.name}.png", class_map)
        elif scheme.dataset == "cityscapes":
            for class_map, sample in zip(class_maps, samples):
                # {city}_{seq}_{frame}*.png under one folder: what the official evaluator finds.
                path = root / "labelIds" / sample.group / f"{sample.name}_labelIds.png"
                write_png(path, scheme.to_label_ids(class_map))
        else:
            # The KITTI devkit's result format: road probability as 8-bit, e.g. um_road_000000,
            # quantized as kitti_road.quantize counts it.
            levels = quantize(probs[:, 1]).to(torch.uint8).cpu().numpy()
            for level, sample in zip(levels, samples):
                category, index = sample.name.split("_")
                write_png(root / f"{category}_{scheme.name}_{index}.png", level)
        if self.options.export_color:
            for class_map, sample in zip(class_maps, samples):
                color_path = root / "color" / sample.group / f"{sample.name}_color.png"
                if scheme.dataset == "folder":  # its names hold their folders already
                    color_path = root / "color" / f"{sample.name}.png"
                write_png(color_path, colorize(class_map, scheme))

    def _results(self, num_images: int) -> dict:
        scheme = self.trained.scheme
        scores = self.matrix.compute(scheme.class_names)
        results = {
            "dataset": scheme.dataset,
            "labels": scheme.name,
            "checkpoint": str(self.trained.checkpoint),
            "images": num_images,
            "tta": self.options.prediction.tta,
            "amp": self.trained.amp,
            **scores,
        }
        if self.cityscapes is not None:
            official = self.cityscapes.compute()
            results["cityscapes"] = {key: json_safe(value) for key, value in official.items()}
            if scheme.contains_evaluated_classes:
                self._use_official_classes(results, official)
        if self.kitti is not None:
            results["kitti_road"] = json_safe(self.kitti.compute())
        return results

    def _use_official_classes(self, results: dict, official: dict) -> None:
        """The headline mIoU of a 19-class scheme is the official "IoU class"; Dice follows
        the same counting rules."""
        matrix = self.cityscapes.confusion.matrix.cpu().numpy()
        ids = EVALUATED_IDS
        dice = _official_dice(matrix, ids)
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
