"""What a run writes as it goes: TensorBoard events, metrics.jsonl, console lines.

Only the main process writes; the others get a logger that does nothing.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segmentation.data.labels import LabelScheme
from segmentation.files import json_safe
from segmentation.visualize import overlay

logger = logging.getLogger("segmentation")


@dataclass
class ValidationPictures:
    """What a validation pass leaves for TensorBoard besides its scores: up to
    `train.log_images` (image, target, prediction) for the panel, the confusion matrix (C, C)
    int64 (rows ground truth), and for KITTI schemes the (2, 256) level histograms of the
    positive class's probability on its pixels and on the others (valid pixels only)."""

    panel: list = field(default_factory=list)
    confusion: np.ndarray | None = None
    road_histograms: np.ndarray | None = None


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None = None) -> None:
        self.enabled = enabled
        self.metrics_path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if enabled:
            # Imported here: TensorBoard's import is slow, and non-main processes never need it.
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed run logged after its last checkpoint.
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def images(self, tag: str, images: np.ndarray, step: int) -> None:
        """images (N, H, W, 3) uint8, shown as one picture, one image a row."""
        if self.writer is None or len(images) == 0:
            return
        column = np.concatenate(list(images), axis=0)
        self.writer.add_image(tag, torch.from_numpy(column), step, dataformats="HWC")

    def charts(
        self, scheme: LabelScheme, metrics: dict, pictures: ValidationPictures, step: int
    ) -> None:
        """The confusion-matrix heatmap and the per-class IoU chart of the report, drawn from
        the validation pass's confusion matrix, and a KITTI scheme's PR curve from its counts.
        Measured on the demo config: 0.27-0.29 s an epoch for its 8 classes (0.75 s the first
        epoch, matplotlib's import included), about 0.5 s for 20 classes; nothing on the
        device."""
        if self.writer is None or pictures.confusion is None:
            return
        # Imported here: matplotlib's import is slow, and only the main process draws.
        from segmentation.report import charts, summary

        cm, names = pictures.confusion, list(scheme.class_names)
        heatmap = charts.confusion_figure(summary.row_normalized(cm), names, scheme.colors)
        self.writer.add_image("val/confusion_matrix", charts.rgb_array(heatmap), step,
                              dataformats="HWC")  # fmt: skip
        per_class = [metrics["per_class"][name] for name in names]
        bars = charts.class_scores_figure(
            names,
            [scores["iou"] for scores in per_class],
            [scores["dice"] for scores in per_class],
            summary.pixel_shares(cm),
            scheme.colors,
        )
        self.writer.add_image("val/class_scores", charts.rgb_array(bars), step, dataformats="HWC")
        if pictures.road_histograms is not None:
            self._pr_curve(f"val/pr_{names[1]}", pictures.road_histograms, step)

    def _pr_curve(self, tag: str, histograms: np.ndarray, step: int) -> None:
        """add_pr_curve_raw at the devkit's 256 thresholds k / 255 (TensorBoard spaces its
        thresholds the same way), from the positive and negative level histograms."""
        from segmentation.evaluation.kitti_road import NUM_LEVELS, devkit_counts

        fn, fp, positives, negatives = devkit_counts(histograms[0], histograms[1])
        if positives == 0:
            return
        tp, tn = positives - fn, negatives - fp
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall = tp / positives
        self.writer.add_pr_curve_raw(tag, tp, fp, tn, fn, precision, recall, step, NUM_LEVELS)

    def epoch_record(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(json_safe(record)) + "\n")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def log_epoch(
        self,
        training,
        result,
        metrics: dict,
        pictures: ValidationPictures,
        seconds: float,
        improved: bool,
    ) -> None:
        """One validation's record in metrics.jsonl, its scalars, image panel and charts in
        TensorBoard, and its console line: after each epoch, or in a run of train.iters after
        each validation, at its optimizer step (as the training scalars)."""
        state, config = training.state, training.config.train
        key = config.key_metric
        by_iteration = config.iters is not None
        step = state.step if by_iteration else state.epoch
        record = {
            "epoch": state.epoch,
            "step": state.step,
            "lr": training.optimizer.param_groups[0]["lr"],
            "train_loss": result.loss,
            "train_images_per_second": result.images_per_second,
            "val_loss": metrics["loss"],
            "val_mIoU": metrics["mIoU"],
            "val_mDice": metrics["mDice"],
            "val_pixel_accuracy": metrics["pixel_accuracy"],
            "per_class": metrics["per_class"],
            "seconds": seconds,
        }
        if "seconds" in metrics:  # a full-resolution validation: how long it took
            record["val_seconds"] = metrics["seconds"]
        self.epoch_record(record)
        scalars = {
            "val/loss": metrics["loss"],
            "val/mIoU": metrics["mIoU"],
            "val/mDice": metrics["mDice"],
            "val/pixel_accuracy": metrics["pixel_accuracy"],
            "train/epoch_loss": result.loss,
            "train/epoch_images_per_second": result.images_per_second,
        }
        for name, scores in metrics["per_class"].items():
            scalars[f"val_IoU/{name}"] = scores["iou"]
            scalars[f"val_Dice/{name}"] = scores["dice"]
        if "seconds" in metrics:
            scalars["val/seconds"] = metrics["seconds"]
        self.scalars(scalars, step)
        self.images(
            "val/input_truth_prediction", panel_image(pictures.panel, training.scheme), step
        )
        self.charts(training.scheme, metrics, pictures, step)
        self.flush()
        if self.enabled:
            best = f" (best {key}, saved best.pt)" if improved else ""
            where = (
                f"iteration {state.step}/{config.iters}"
                if by_iteration
                else f"epoch {state.epoch}/{config.epochs}"
            )
            val_loss = "" if metrics["loss"] is None else f"  val loss {metrics['loss']:.4f}"
            logger.info(
                "%s  train loss %.4f%s  mIoU %.4f  mDice %.4f  %.1f img/s  %.0fs%s",
                where,
                result.loss,
                val_loss,
                metrics["mIoU"] or 0.0,
                metrics["mDice"] or 0.0,
                result.images_per_second,
                seconds,
                best,
            )


def panel_image(panel: list, scheme: LabelScheme) -> np.ndarray:
    """(N, H, 3W, 3) uint8: input, ground truth over input, prediction over input. The inputs
    are the loader's own uint8 (H, W, 3) images: shown as they are, nothing to undo."""
    rows = []
    for image, target, prediction in panel:
        rgb = image.numpy()
        truth = overlay(rgb, target.numpy(), scheme)
        predicted = overlay(rgb, prediction.numpy().astype(np.uint8), scheme)
        rows.append(np.concatenate([rgb, truth, predicted], axis=1))
    return np.stack(rows) if rows else np.zeros((0, 1, 1, 3), np.uint8)
