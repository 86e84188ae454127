"""From images to class probabilities: test-time augmentation, sliding windows, clean-up.

All functions take normalized images `(B, 3, H, W)` float on the model's device and return
class probabilities `probs (B, C, H, W)`: softmax for a softmax head, per-channel sigmoid for a
sigmoid head (a single binary channel p becomes the two classes [1 - p, p]), so that every
scheme and head merges and argmaxes the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segmentation.errors import UserError

TTA_MODES = ("none", "hflip", "multiscale")
MERGES = ("mean", "gmean", "tsharpen")


@dataclass(frozen=True)
class PredictionOptions:
    """How a trained model's predictions are made: test-time augmentation, sliding window,
    small-cluster clean-up."""

    tta: str = "none"  # none | hflip | multiscale
    scales: tuple[float, ...] = (0.75, 1.0, 1.25)  # for multiscale
    merge: str = "mean"  # how views merge: mean | gmean | tsharpen
    sliding_window: bool = False  # full resolution in windows (of the training size)
    window: tuple[int, int] | None = None  # sliding_window's window; None: the training size
    stride: tuple[int, int] | None = None  # between windows; None: 2/3 of the window's sides
    whole_frame: bool = False  # full resolution, each frame in one forward pass
    drop_clusters: int = 0  # regions smaller than N x N pixels take their next likeliest class


_EPS = 1e-7


def probabilities_from_logits(logits: torch.Tensor, head: str) -> torch.Tensor:
    """logits (B, K, H, W) -> probs (B, C, H, W) float32, C = 2 when K = 1."""
    logits = logits.float()
    if head == "softmax":
        return logits.softmax(dim=1)
    probs = logits.sigmoid()
    if probs.shape[1] == 1:
        return torch.cat([1.0 - probs, probs], dim=1)
    return probs


def valid_size(height: int, width: int, divisor: int) -> tuple[int, int]:
    """The nearest size whose sides are multiples of `divisor` (at least one divisor)."""
    return (
        max(divisor, round(height / divisor) * divisor),
        max(divisor, round(width / divisor) * divisor),
    )


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, without antialiasing, as the training pipeline's cv2.INTER_LINEAR resize."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _forward(model: nn.Module, images: torch.Tensor, head: str, hflip: bool) -> torch.Tensor:
    probs = probabilities_from_logits(model(images), head)
    if not hflip:
        return probs
    # Street scenes are left-right symmetric, not up-down (the original project flipped vertically).
    flipped = probabilities_from_logits(model(images.flip(-1)), head).flip(-1)
    return torch.stack([probs, flipped])


def predict_in_windows(
    model: nn.Module,
    images: torch.Tensor,
    head: str,
    window: tuple[int, int],
    hflip: bool = False,
    overlap: float = 1 / 3,
    stride: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Probabilities of images larger than `window`, from overlapping windows averaged.

    images (B, 3, H, W); a window side longer than the image's is cut to it. Windows start
    every `stride` (default: the window's sides times 1 - overlap, rounded down), the last
    one flush with the far edge. Returns (V, B, C, H, W) with V = 2 views when hflip else
    (B, C, H, W).
    """
    height, width = images.shape[-2:]
    win_h, win_w = min(window[0], height), min(window[1], width)
    if stride is None:
        stride_h = max(1, int(win_h * (1 - overlap)))
        stride_w = max(1, int(win_w * (1 - overlap)))
    else:
        stride_h, stride_w = min(stride[0], win_h), min(stride[1], win_w)
    tops = list(range(0, height - win_h, stride_h)) + [height - win_h]
    lefts = list(range(0, width - win_w, stride_w)) + [width - win_w]
    total, counts = None, torch.zeros((1, 1, height, width), device=images.device)
    for top in tops:
        for left in lefts:
            tile = images[..., top : top + win_h, left : left + win_w]
            probs = _forward(model, tile, head, hflip)
            if total is None:
                total = torch.zeros((*probs.shape[:-2], height, width), device=images.device)
            total[..., top : top + win_h, left : left + win_w] += probs
            counts[..., top : top + win_h, left : left + win_w] += 1
    return total / counts


class ViewMerger:
    """Merges per-view probabilities (B, C, H, W) as they come, holding one running sum: the
    mean over the views (not over the batch, as the original project did), the geometric mean,
    or the mean of p ** power ("tsharpen")."""

    def __init__(self, merge: str, power: float = 0.5) -> None:
        if merge not in MERGES:
            raise UserError(f"unknown TTA merge '{merge}': use one of {', '.join(MERGES)}")
        self.merge, self.power = merge, power
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, probs: torch.Tensor) -> None:
        if self.merge == "gmean":
            probs = probs.clamp(min=_EPS).log()
        elif self.merge == "tsharpen":
            probs = probs.pow(self.power)
        self.total = probs.clone() if self.total is None else self.total.add_(probs)
        self.count += 1

    def result(self) -> torch.Tensor:
        mean = self.total / self.count
        return mean.exp() if self.merge == "gmean" else mean


def parse_scales(text: str) -> list[float]:
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--scales must be numbers separated by commas, got '{text}'") from None
    if not scales or any(not math.isfinite(scale) or scale <= 0 for scale in scales):
        raise UserError(f"--scales must be positive numbers, e.g. 0.75,1.0,1.25; got '{text}'")
    return scales


@torch.no_grad()
def predict_probabilities(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    head: str,
    *,
    base_size: tuple[int, int],
    divisor: int,
    tta: str = "none",
    scales: Sequence[float] = (1.0,),
    merge: str = "mean",
    sliding_window: bool = False,
    out_size: tuple[int, int] | None = None,
    window: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    whole_frame: bool = False,
) -> torch.Tensor:
    """Class probabilities of normalized images (B, 3, H, W) at `out_size` (default H x W).

    base_size: the size the model was trained at. By default every view resizes the whole
        frame to base_size x scale. With `sliding_window`, views run at the frame's own size x
        scale in overlapping windows of base_size: for models trained on crops at full
        resolution. `window` (default base_size) and `stride` (default 2/3 of the window)
        set the windows; a window given that is larger than the frame is refused.
    whole_frame: views run at the frame's own size x scale, each in one pass.
    tta: "none"; "hflip" adds the mirrored view; "multiscale" runs each of `scales`, with and
        without the flip. Views are merged with `merge`.
    """
    if tta not in TTA_MODES:
        raise UserError(f"unknown TTA mode '{tta}': use one of {', '.join(TTA_MODES)}")
    out_size = out_size or tuple(images.shape[-2:])
    view_scales = list(scales) if tta == "multiscale" else [1.0]
    hflip = tta in ("hflip", "multiscale")
    merger = ViewMerger(merge)
    if sliding_window and window is not None:
        check_window(window, tuple(images.shape[-2:]), divisor)
    window = tuple(window or base_size)
    if sliding_window and stride is not None and (stride[0] > window[0] or stride[1] > window[1]):
        raise UserError(
            f"the stride {stride[0]}x{stride[1]} is larger than the sliding window "
            f"{window[0]}x{window[1]}: windows would leave gaps; use a stride of at most the window"
        )
    for scale in view_scales:
        native = sliding_window or whole_frame
        reference = images.shape[-2:] if native else base_size
        size = valid_size(reference[0] * scale, reference[1] * scale, divisor)
        scaled = resize(images, size)
        if sliding_window and (size[0] > window[0] or size[1] > window[1]):
            probs = predict_in_windows(model, scaled, head, window, hflip, stride=stride)
        else:
            probs = _forward(model, scaled, head, hflip)
        for view in probs if hflip else [probs]:
            merger.add(resize(view, out_size))
    return merger.result()


def check_window(window: tuple[int, int], frame: tuple[int, int], divisor: int = 1) -> None:
    """Refuse a sliding window larger than the frame it slides over, or one whose sides the
    model cannot take (not multiples of `divisor`)."""
    if window[0] % divisor or window[1] % divisor:
        low = (
            max(divisor, window[0] // divisor * divisor),
            max(divisor, window[1] // divisor * divisor),
        )
        raise UserError(
            f"the sliding window {window[0]}x{window[1]} has sides that are not multiples of "
            f"{divisor}, which the model needs: use e.g. {low[0]}x{low[1]} or "
            f"{low[0] + divisor}x{low[1] + divisor}"
        )
    if window[0] > frame[0] or window[1] > frame[1]:
        raise UserError(
            f"the sliding window {window[0]}x{window[1]} is larger than the {frame[0]}x{frame[1]} "
            "frame: use a window of at most the frame's size (--window, train.val_window)"
        )


def drop_small_clusters(
    classes: np.ndarray, probs: np.ndarray, min_side: int, ignore: Sequence[int] = ()
) -> np.ndarray:
    """The original project's clean-up: connected regions of a class smaller than
    min_side x min_side pixels take the next most probable class instead.

    classes (H, W) int class map; probs (C, H, W) float probabilities; returns a new map.
    """
    if min_side <= 0:
        return classes
    min_area = min_side * min_side
    cleaned = classes.copy()
    for class_index in np.unique(classes):
        if class_index in ignore:
            continue
        mask = (classes == class_index).astype(np.uint8)
        count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < min_area) + 1
        if small.size == 0:
            continue
        region = np.isin(components, small)
        others = probs[:, region].copy()
        others[class_index] = -math.inf
        cleaned[region] = others.argmax(axis=0)
    return cleaned


def drop_small_clusters_in_batch(
    classes: torch.Tensor, probs: torch.Tensor, min_side: int
) -> torch.Tensor:
    """drop_small_clusters on each map of classes (B, H, W) with probs (B, C, H, W), on the
    host (connected components are an OpenCV job): the cleaned maps (B, H, W) there."""
    cleaned = [
        drop_small_clusters(class_map, class_probs, min_side)
        for class_map, class_probs in zip(classes.cpu().numpy(), probs.cpu().numpy())
    ]
    return torch.from_numpy(np.stack(cleaned))
