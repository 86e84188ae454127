"""Colour masks and overlays of predictions on images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segmentation.data.labels import LabelScheme


def overlay(
    image: np.ndarray, classes: np.ndarray, scheme: LabelScheme, alpha: float = 0.5
) -> np.ndarray:
    """Blend class colours into an image.

    image (H, W, 3) uint8 RGB; classes (H, W) class indices (IGNORE_INDEX allowed). Classes
    coloured black (background, void, unlabeled, ignored) leave the image untouched, so the
    scene stays readable under the mask.
    """
    colors = scheme.colorize(classes)
    painted = colors.any(axis=-1, keepdims=True)
    blended = image * (1.0 - alpha) + colors * alpha
    return np.where(painted, blended, image).astype(np.uint8)


def denormalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalized (3, H, W) float image -> (H, W, 3) uint8 RGB for display."""
    pixels = image.transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    return np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
