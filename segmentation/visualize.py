"""Colour masks and overlays of predictions on images."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from segmentation.data.labels import LabelScheme


def colorize(classes: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """Class indices (H, W) -> (H, W, 3) uint8 RGB in the scheme's colours; indices without a
    class (the ignore value) black. An OpenCV lookup table: full-resolution frames are hot."""
    classes = np.ascontiguousarray(classes, dtype=np.uint8)
    palette = np.zeros((256, 1, 3), np.uint8)
    palette[: scheme.num_classes, 0] = scheme.colors
    return cv2.LUT(cv2.merge([classes, classes, classes]), palette)


def overlay(
    image: np.ndarray,
    classes: np.ndarray,
    scheme: LabelScheme,
    alpha: float = 0.5,
    colors: np.ndarray | None = None,
) -> np.ndarray:
    """Blend class colours into an image.

    image (H, W, 3) uint8 RGB; classes (H, W) class indices (IGNORE_INDEX allowed); colors:
    `colorize(classes, scheme)` when the caller has it already. Classes coloured black
    (background, void, unlabeled, ignored) leave the image untouched, so the scene stays
    readable under the mask. Returns (H, W, 3) uint8, image * (1 - alpha) + colour * alpha
    rounded where painted.
    """
    image = np.ascontiguousarray(image)
    classes = np.ascontiguousarray(classes, dtype=np.uint8)
    if colors is None:
        colors = colorize(classes, scheme)
    # uint8 arithmetic and lookups in OpenCV: several times faster than numpy in float64.
    blended = cv2.addWeighted(image, 1.0 - alpha, colors, alpha, 0.0)
    unpainted = np.ones(256, np.uint8)
    unpainted[: scheme.num_classes] = ~scheme.colors.any(axis=1)
    return cv2.copyTo(image, cv2.LUT(classes, unpainted), blended)


class DeviceColors:
    """colorize and overlay as tensor operations on any device: on a GPU the frames are
    coloured and blended where the class maps are, and only the finished uint8 pictures cross
    to the host. On the CPU the OpenCV functions above are faster (measured in
    bench/bench_inference.py's stage table): the Renderer uses these on GPUs only."""

    def __init__(self, scheme: LabelScheme, device: torch.device) -> None:
        palette = np.zeros((256, 3), np.uint8)  # indices without a class (255, ignored): black
        palette[: scheme.num_classes] = scheme.colors
        self.palette = torch.from_numpy(palette).to(device)
        self.painted = (self.palette != 0).any(dim=1)

    def colorize(self, classes: torch.Tensor) -> torch.Tensor:
        """classes (B, H, W) integer -> (B, H, W, 3) uint8 RGB on their device."""
        return self.palette[classes.long()]

    def overlay(
        self,
        images: torch.Tensor,
        classes: torch.Tensor,
        alpha: float,
        colors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """images (B, 3, H, W) uint8 RGB and classes (B, H, W) on one device -> (B, H, W, 3)
        uint8: `overlay` of each, within 1 per channel (float32 rounding here, OpenCV's
        addWeighted there)."""
        if colors is None:
            colors = self.colorize(classes)
        pixels = images.permute(0, 2, 3, 1)
        blended = pixels.float().mul_(1.0 - alpha).add_(colors.float().mul_(alpha))
        blended = blended.round_().clamp_(0, 255).to(torch.uint8)
        painted = self.painted[classes.long()].unsqueeze(-1)
        return torch.where(painted, blended, pixels)
