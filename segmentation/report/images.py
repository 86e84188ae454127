"""Pictures of single images for the report: input | ground truth | prediction | error map, and
the worst and best images by mIoU, kept while the evaluation pass runs.

Keeping them during the pass (rendered small as soon as an image enters one of the two lists)
costs no second prediction: predicting the 2N shown images again afterwards would add 2N
forwards, a third of the pass for N = 8 on 50 images.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from segmentation.data.labels import IGNORE_INDEX, LabelScheme
from segmentation.report.summary import image_miou
from segmentation.visualize import colorize

WRONG = (255, 0, 0)
IGNORED = (128, 128, 128)
RIGHT_DIMMING = 0.35  # right pixels keep a dim copy of the image, so the scene stays readable
GAP = 4  # white pixels between the tiles of a panel
TILE_WIDTH = 512


def error_map(image: np.ndarray, wrong: np.ndarray, ignored: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: wrong pixels red, ignored ones grey, right ones the image dimmed.

    image (H, W, 3) uint8 RGB; wrong, ignored (H, W) float in [0, 1]: the share of each
    pixel that is wrong or ignored (0 or 1 at full resolution, fractions once scaled down,
    where a thin mistake still tints its pixel)."""
    wrong = wrong[..., None].astype(np.float32)
    ignored = ignored[..., None].astype(np.float32)
    right = 1.0 - wrong - ignored
    shown = image.astype(np.float32) * (RIGHT_DIMMING * right)
    shown += wrong * np.float32(WRONG) + ignored * np.float32(IGNORED)
    return np.clip(shown + 0.5, 0, 255).astype(np.uint8)


def panel(
    image: np.ndarray,
    target: np.ndarray,
    prediction: np.ndarray,
    scheme: LabelScheme,
    tile_width: int = TILE_WIDTH,
) -> np.ndarray:
    """(h, 4 * w + 3 * GAP, 3) uint8: input | ground truth | prediction | errors, each scaled
    down by the smallest whole factor that makes it at most `tile_width` wide (whole factors
    take OpenCV's fast area path: 2048 -> 512, KITTI's 1242 -> 414). Class maps are scaled by
    nearest neighbour (exact class colours), the image and the error masks by area, so that
    thin mistakes stay visible. Only the masks are computed at full resolution. Ignored ground
    truth is grey in the ground-truth tile too."""
    height, width = target.shape
    factor = max(1, math.ceil(width / tile_width))  # 1: small images are never enlarged
    size = (max(1, round(width / factor)), max(1, round(height / factor)))

    def shrink(pixels: np.ndarray, nearest: bool = False) -> np.ndarray:
        return cv2.resize(
            pixels, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
        )

    target = np.ascontiguousarray(target, np.uint8)
    prediction = np.ascontiguousarray(prediction, np.uint8)
    # 0 / 255 masks by OpenCV: a few times faster than numpy's booleans on 2 Mpixel maps.
    ignored = cv2.compare(target, IGNORE_INDEX, cv2.CMP_EQ)
    wrong = cv2.bitwise_and(cv2.compare(target, prediction, cv2.CMP_NE), cv2.bitwise_not(ignored))
    small_target = shrink(target, nearest=True)
    truth = colorize(small_target, scheme)
    truth[small_target == IGNORE_INDEX] = IGNORED
    predicted = colorize(shrink(prediction, nearest=True), scheme)
    small_image = shrink(image)
    masks = [shrink(mask) / np.float32(255.0) for mask in (wrong, ignored)]
    tiles = [small_image, truth, predicted, error_map(small_image, *masks)]
    gap = np.full((size[1], GAP, 3), 255, np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2], gap, tiles[3]], axis=1)


@dataclass(frozen=True)
class Shown:
    """One image of the report: its name, mIoU, and panel (RGB)."""

    name: str
    miou: float
    pixels: np.ndarray = field(repr=False)


# (image (H, W, 3) uint8 RGB, target (H, W) classes, prediction (H, W) classes) on the host.
Fetch = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]


class ImageKeeper:
    """Keeps the `count` worst and `count` best images by per-image mIoU while batches stream
    by, and every image's confusion counts. A panel is drawn only when its image enters a list,
    so most images of a long split are never drawn. Ties break by name, so the choice does not
    depend on the batch order."""

    def __init__(self, scheme: LabelScheme, count: int, tile_width: int = TILE_WIDTH) -> None:
        self.scheme, self.count, self.tile_width = scheme, count, tile_width
        self.counts: dict[int, np.ndarray] = {}  # sample index -> (C, C)
        self.names: dict[int, str] = {}
        # Heaps of (key, Shown), the key unique (the sample index ends it): the worst list pops
        # its largest mIoU first (negated keys), the best list its smallest.
        self._worst: list[tuple[tuple, Shown]] = []
        self._best: list[tuple[tuple, Shown]] = []

    def add_batch(
        self, indices: list[int], names: list[str], counts: np.ndarray, fetch: Fetch
    ) -> None:
        """counts (B, C, C) of the batch's images; fetch(i) gives image i's pictures."""
        for position, (index, name, miou) in enumerate(zip(indices, names, image_miou(counts))):
            self.counts[index], self.names[index] = counts[position], name
            if self.count == 0 or math.isnan(miou):
                continue  # an image without counted pixels has no rank
            draw = functools.cache(functools.partial(self._draw, fetch, position, name, miou))
            self._offer(self._worst, (-miou, _reversed(name), -index), draw)
            self._offer(self._best, (miou, name, index), draw)

    def _draw(self, fetch: Fetch, position: int, name: str, miou: float) -> Shown:
        return Shown(name, float(miou), panel(*fetch(position), self.scheme, self.tile_width))

    def _offer(self, heap: list, key: tuple, draw: Callable[[], Shown]) -> None:
        if len(heap) < self.count:
            heapq.heappush(heap, (key, draw()))
        elif key > heap[0][0]:
            heapq.heapreplace(heap, (key, draw()))

    def per_image(self) -> tuple[list[str], np.ndarray | None]:
        """Names and (N, C, C) confusion counts of every image seen, in sample order."""
        order = sorted(self.counts)
        counts = [self.counts[index] for index in order]
        return [self.names[index] for index in order], np.stack(counts) if counts else None

    def chosen(self) -> tuple[list[Shown], list[Shown]]:
        """(worst, best): worst ascending by mIoU, best descending, no image in both (with
        fewer than 2N images, the best list holds the ones the worst list left)."""
        worst = sorted((item[1] for item in self._worst), key=lambda s: (s.miou, s.name))
        taken = {shown.name for shown in worst}
        best = sorted(
            (item[1] for item in self._best if item[1].name not in taken),
            key=lambda s: (-s.miou, s.name),
        )
        return worst, best


def _reversed(name: str) -> tuple[int, ...]:
    """A key that orders names backwards: among equal mIoU the worst list keeps the first
    names, as the sorted order does."""
    return tuple(-ord(character) for character in name) + (1,)
