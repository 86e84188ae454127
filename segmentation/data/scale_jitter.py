"""The scale-jitter training augmentation of the field's Cityscapes protocol (mmsegmentation's
`configs/_base_/datasets/cityscapes.py`), at native resolution:

    rescale by a random ratio of base_size (aspect kept) -> random crop of crop_size, redrawn
    while one class covers more than cat_max_ratio of it -> horizontal flip -> photometric
    distortion -> pad to crop_size (image 0, label ignore)

The semantics follow mmsegmentation's RandomResize(ratio_range, keep_ratio=True), RandomCrop
(cat_max_ratio), RandomFlip, PhotoMetricDistortion and Pad; the code is our own, with OpenCV
calls and lookup tables, since it runs in DataLoader workers on 2048x1024 frames. Only the crop
is rescaled, not the whole frame (`rescaled_crop`, `NearestResize`).

The padding is left to the dataset, after the labels are encoded: a stored label value that
every label scheme ignores does not exist (Cityscapes' 'unlabeled' is a class in some schemes),
while IGNORE_INDEX is ignored by every loss and metric. `ScaleJitter` therefore returns crops
that may be smaller than crop_size, and names the size to pad to in `pad_size`.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from segmentation.data.labels import IGNORE_INDEX

CROP_TRIES = 10  # redraws of a crop that fails cat_max_ratio, as mmsegmentation's RandomCrop


def rescaled_size(
    frame_size: tuple[int, int],
    base_size: tuple[int, int] | None,
    ratio: float,
    frame_scale: float = 1.0,
) -> tuple[int, int]:
    """(height, width) a frame is rescaled to for a scale ratio, as mmcv's imrescale with
    keep_ratio: the target is base_size x ratio (each side truncated to an integer), and the
    frame is scaled by one factor so that its long side fits the target's long side and its
    short side the target's short one; sides are rounded half up.

    frame_size: the frame as stored; frame_scale: the fraction of the original frame's side it
    was stored at (a decoded-sample cache), so that the result is the same for the original
    frame and for its cached copy. base_size None: the original frame's own size.
    """
    height, width = (side / frame_scale for side in frame_size)  # the original frame's pixels
    base_height, base_width = (height, width) if base_size is None else base_size
    target = (int(base_height * ratio), int(base_width * ratio))
    factor = min(max(target) / max(height, width), min(target) / min(height, width))
    # At least a pixel: a tiny ratio of a small base would otherwise leave nothing to resize to.
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def crop_box(
    frame_size: tuple[int, int], crop_size: tuple[int, int], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a uniformly placed crop_size box; a frame side smaller
    than the crop's is taken whole (the crop is padded later)."""
    top = int(rng.integers(0, max(frame_size[0] - crop_size[0], 0) + 1))
    left = int(rng.integers(0, max(frame_size[1] - crop_size[1], 0) + 1))
    return top, top + crop_size[0], left, left + crop_size[1]


def rescaled_crop(
    image: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]
) -> np.ndarray:
    """The `box` (top, bottom, left, right; clipped to `size`) of `image` rescaled to `size`
    with bilinear interpolation, computing only the box: at ratio 2 the whole rescaled frame
    is 4x the original's pixels, the box a sixteenth of them. Destination pixel x samples the
    source at (x + 0.5) * source / destination - 0.5, cv2.resize's pixel centres, through
    warpAffine, whose coordinates are kept to 1/32 of a pixel: each value is within one level
    of cv2.resize's (tests/test_scale_jitter.py checks it)."""
    top, bottom, left, right = box
    bottom, right = min(bottom, size[0]), min(right, size[1])
    height, width = image.shape[:2]
    if size == (height, width):
        return image[top:bottom, left:right]
    scale_y, scale_x = height / size[0], width / size[1]
    to_source = np.array(
        [
            [scale_x, 0.0, (left + 0.5) * scale_x - 0.5],
            [0.0, scale_y, (top + 0.5) * scale_y - 0.5],
        ]
    )
    return cv2.warpAffine(
        image,
        to_source,
        (right - left, bottom - top),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,  # cv2.resize clamps to the edge pixels too
    )


def passes_cat_max_ratio(target: np.ndarray, cat_max_ratio: float) -> bool:
    """Whether a crop's class indices (IGNORE_INDEX excluded) hold at least two classes and
    none covers cat_max_ratio or more of the labelled pixels (mmsegmentation's test)."""
    counts = cv2.calcHist([target], [0], None, [256], [0, 256]).ravel()[:IGNORE_INDEX]
    present = counts[counts > 0]
    return len(present) > 1 and present.max() / present.sum() < cat_max_ratio


class PhotometricDistortion:
    """mmsegmentation's PhotoMetricDistortion on an (H, W, 3) uint8 RGB image: brightness
    (+delta, delta ~ U[-32, 32]), then contrast (x alpha, alpha ~ U[0.5, 1.5]) either here or
    last (p=0.5 each), saturation (HSV S x alpha, alpha ~ U[0.5, 1.5]) and hue (HSV H + delta,
    delta an integer in [-18, 18], modulo OpenCV's 180 hues). Each operation is applied with
    its probability (mmsegmentation: 0.5); each one computes in float32, clips to 0..255 and
    truncates to uint8, as mmsegmentation does, here through a 256-entry lookup table.

    Differences: saturation and hue share one HSV round trip where mmsegmentation makes one
    each (a second rounding of the same pixels), and the hue delta reaches +18 (mmsegmentation
    draws from -18..17).
    """

    def __init__(
        self,
        *,
        brightness_delta: float = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
        brightness_p: float = 0.5,
        contrast_p: float = 0.5,
        saturation_p: float = 0.5,
        hue_p: float = 0.5,
    ) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta
        self.p = {
            "brightness": brightness_p,
            "contrast": contrast_p,
            "saturation": saturation_p,
            "hue": hue_p,
        }

    def draw(self, rng: np.random.Generator) -> dict[str, float]:
        """The operations to apply and their parameters; "contrast_first" says where contrast
        goes (before saturation/hue, or after)."""
        chosen: dict[str, float] = {"contrast_first": bool(rng.integers(2))}
        if rng.random() < self.p["brightness"]:
            chosen["brightness"] = rng.uniform(-self.brightness_delta, self.brightness_delta)
        if rng.random() < self.p["contrast"]:
            chosen["contrast"] = rng.uniform(*self.contrast_range)
        if rng.random() < self.p["saturation"]:
            chosen["saturation"] = rng.uniform(*self.saturation_range)
        if rng.random() < self.p["hue"]:
            chosen["hue"] = int(rng.integers(-self.hue_delta, self.hue_delta + 1))
        return chosen

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(image, self.draw(rng))

    @staticmethod
    def apply(image: np.ndarray, chosen: dict[str, float]) -> np.ndarray:
        """`image` with the operations of `draw` applied in mmsegmentation's order.

        Operations on the RGB values that follow each other are one table: looking up
        table2[table1] is exactly applying table1, then table2, truncation included."""
        identity = linear_table(1.0, 0.0)
        rgb = identity
        if "brightness" in chosen:
            rgb = linear_table(1.0, chosen["brightness"])
        if "contrast" in chosen and chosen["contrast_first"]:
            rgb = linear_table(chosen["contrast"], 0.0)[rgb]
        if "saturation" in chosen or "hue" in chosen:
            if rgb is not identity:
                image = cv2.LUT(image, rgb)
            rgb = identity
            # One table per HSV channel, applied in one pass: (hue, saturation, value).
            hue = hue_table(int(chosen["hue"])) if "hue" in chosen else identity
            saturation = (
                linear_table(chosen["saturation"], 0.0) if "saturation" in chosen else identity
            )
            tables = np.stack([hue, saturation, identity], axis=-1).reshape(256, 1, 3)
            hsv = cv2.LUT(cv2.cvtColor(image, cv2.COLOR_RGB2HSV), tables)
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if "contrast" in chosen and not chosen["contrast_first"]:
            rgb = linear_table(chosen["contrast"], 0.0)[rgb]
        return image if rgb is identity else cv2.LUT(image, rgb)


def linear_table(alpha: float, beta: float) -> np.ndarray:
    """uint8 v -> uint8(clip(v * alpha + beta, 0, 255)), computed in float32 as mmsegmentation's
    `convert` does, as a lookup table."""
    values = np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(values, 0, 255).astype(np.uint8)


def hue_table(delta: int) -> np.ndarray:
    """OpenCV hue (0..179) -> (hue + delta) mod 180; values above 179 never occur."""
    return ((np.arange(256) + delta) % 180).astype(np.uint8)


class ScaleJitter:
    """The training transform of the scale-jitter style, called as an albumentations pipeline
    is: `transform(image=..., mask=...)` -> {"image", "mask"}, with `set_random_seed(seed)`.

    image (H, W, 3) uint8 RGB; mask (H, W) uint8 stored label values. The result is at most
    crop_size: the dataset encodes the labels and pads both to `pad_size`.

    encode: stored label values -> class indices or IGNORE_INDEX (the scheme's), for
        cat_max_ratio. frame_scale: the fraction of the original side the frames come at (a
        cache's data.cache_scale), so that scale ratios stay relative to the original pixels.
    """

    def __init__(
        self,
        *,
        crop_size: tuple[int, int],
        scale: tuple[float, float],
        base_size: tuple[int, int] | None = None,
        cat_max_ratio: float = 1.0,
        hflip: float = 0.5,
        photometric: bool = False,
        encode: Callable[[np.ndarray], np.ndarray] | None = None,
        frame_scale: float = 1.0,
    ) -> None:
        if cat_max_ratio < 1.0 and encode is None:
            raise ValueError("cat_max_ratio needs `encode`, the scheme's label lookup")
        self.crop_size = tuple(crop_size)
        self.scale = tuple(scale)
        self.base_size = None if base_size is None else tuple(base_size)
        self.cat_max_ratio = cat_max_ratio
        self.hflip = hflip
        self.photometric = PhotometricDistortion() if photometric else None
        self.encode = encode
        self.frame_scale = frame_scale
        self.rng = np.random.default_rng()
        self.seeded: np.random.Generator | None = None

    @property
    def pad_size(self) -> tuple[int, int]:
        return self.crop_size

    def set_random_seed(self, seed: int) -> None:
        """Make the next call a pure function of `seed` (the sampler's per-sample seed)."""
        self.seeded = np.random.default_rng(seed)

    def draw_ratio(self) -> float:
        return float(self.rng.uniform(*self.scale))

    def __call__(self, *, image: np.ndarray, mask: np.ndarray | None = None) -> dict:
        # Unseeded, fresh entropy: DataLoader workers forked with one generator's state would
        # otherwise draw the same augmentations.
        self.rng = self.seeded if self.seeded is not None else np.random.default_rng()
        self.seeded = None
        size = rescaled_size(image.shape[:2], self.base_size, self.draw_ratio(), self.frame_scale)
        labels = None if mask is None else NearestResize(mask, size)
        top, bottom, left, right = self.choose_crop(size, labels)
        image = rescaled_crop(image, size, (top, bottom, left, right))
        mask = None if labels is None else labels.crop(top, bottom, left, right)
        if self.rng.random() < self.hflip:
            image = cv2.flip(image, 1)
            mask = None if mask is None else cv2.flip(mask, 1)
        if self.photometric is not None:
            image = self.photometric(np.ascontiguousarray(image), self.rng)
        result = {"image": np.ascontiguousarray(image)}
        if mask is not None:
            result["mask"] = np.ascontiguousarray(mask)
        return result

    def choose_crop(
        self, size: tuple[int, int], labels: NearestResize | None
    ) -> tuple[int, int, int, int]:
        """A crop box; with cat_max_ratio < 1, redrawn up to CROP_TRIES times while its labels
        fail the test, the last draw kept (mmsegmentation's RandomCrop)."""
        box = crop_box(size, self.crop_size, self.rng)
        if self.cat_max_ratio >= 1.0 or labels is None:
            return box
        for _ in range(CROP_TRIES):
            target = self.encode(labels.crop(*box))
            if passes_cat_max_ratio(target, self.cat_max_ratio):
                break
            box = crop_box(size, self.crop_size, self.rng)
        return box


class NearestResize:
    """A label map resized to `size` with nearest neighbour, of which only the crops asked for
    are computed: the pixels of cv2.resize(..., INTER_NEAREST), whose source of destination
    pixel x is floor(x * source / destination) (tests/test_scale_jitter.py checks the match),
    at the cost of the crop rather than of the whole rescaled frame (up to 4x the original's
    pixels at ratio 2)."""

    def __init__(self, labels: np.ndarray, size: tuple[int, int]) -> None:
        self.labels = labels
        self.rows = _nearest_sources(labels.shape[0], size[0])
        self.columns = _nearest_sources(labels.shape[1], size[1])

    def crop(self, top: int, bottom: int, left: int, right: int) -> np.ndarray:
        """Rows top..bottom, columns left..right of the resized map (clipped to it)."""
        # take(), not fancy indexing: a plain gather, several times faster here.
        rows = self.labels.take(self.rows[top:bottom], axis=0)
        return rows.take(self.columns[left:right], axis=1)


def _nearest_sources(source: int, destination: int) -> np.ndarray:
    # OpenCV's resizeNN: the scale as a double, the source index floored and clipped.
    step = 1.0 / (destination / source)
    return np.minimum(np.floor(np.arange(destination) * step).astype(np.intp), source - 1)


def pad_to(
    image: np.ndarray, target: np.ndarray | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pad an image with 0 and its target with IGNORE_INDEX at the bottom and right up to
    `size` (mmsegmentation's Pad): the padding counts for no loss and no metric."""
    bottom, right = size[0] - image.shape[0], size[1] - image.shape[1]
    if bottom <= 0 and right <= 0:
        return image, target
    bottom, right = max(bottom, 0), max(right, 0)
    image = cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    if target is not None:
        target = cv2.copyMakeBorder(
            target, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=IGNORE_INDEX
        )
    return image, target
