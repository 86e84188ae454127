"""Albumentations pipelines for training and evaluation.

Geometry first, at the cost of one resize: the random crop is cut from the full frame and
resized straight to the training size, so flips and colour changes touch only training-size
pixels. Labels are always resized with nearest neighbour. Images stay uint8: the model's device
normalizes them (data/normalize.py), so that workers ship a quarter of float32's bytes.
"""

from __future__ import annotations

import albumentations as A
import cv2


def weather_transforms() -> list[A.BasicTransform]:
    """The optional "hard" augmentations: fog, rain, snow, sun flare or shadow."""
    return [
        A.OneOf(
            [
                A.RandomFog(fog_coef_range=(0.1, 0.4), alpha_coef=0.08),
                A.RandomRain(rain_type="drizzle", brightness_coefficient=0.9),
                A.RandomSnow(snow_point_range=(0.1, 0.3), brightness_coeff=2.0),
                A.RandomSunFlare(flare_roi=(0.0, 0.0, 1.0, 0.5), src_radius=100),
                A.RandomShadow(shadow_roi=(0.0, 0.5, 1.0, 1.0)),
            ],
            p=0.3,
        )
    ]


def training_transform(
    height: int,
    width: int,
    *,
    crop_scale: tuple[float, float] = (0.81, 1.0),
    hflip: float = 0.5,
    color: float = 0.5,
    weather: bool = False,
) -> A.Compose:
    """The original project's augmentations: a random crop of about 0.9 of the frame's side
    (0.81 of its area), resized to height x width; a horizontal flip; one of brightness/contrast
    or gamma; optionally weather. Output: image (H, W, 3) uint8, mask (H, W), not normalized."""
    aspect = width / height
    pipeline = [
        A.RandomResizedCrop(
            size=(height, width),
            scale=crop_scale,
            ratio=(aspect, aspect),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
        ),
        A.HorizontalFlip(p=hflip),
        A.OneOf(
            [
                A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=1.0),
                A.RandomGamma(gamma_limit=(80, 120), p=1.0),
            ],
            p=color,
        ),
    ]
    if weather:
        pipeline += weather_transforms()
    return A.Compose(pipeline)


def evaluation_transform(height: int, width: int) -> A.Compose:
    """Resize to height x width (labels with nearest neighbour). Output: image (H, W, 3)
    uint8, mask (H, W), not normalized."""
    return A.Compose(
        [
            A.Resize(
                height,
                width,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
            ),
        ]
    )
