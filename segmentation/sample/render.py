"""Drawing core of the synthetic street scenes: camera, depth-buffered canvas, shapes, noise.

World coordinates are metres: X to the right, Y up from the ground, Z forward along the street.
The camera looks level along +Z, so the horizon is one image row and the vanishing point of the
street is (cx, horizon).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels

# Fractional bits of the fixed-point coordinates handed to cv2: edges land at sub-pixel positions,
# so shapes keep their proportions at 64x128 as well as at 1024x2048.
_SHIFT = 3
# Polygons are clipped to this many image sizes around the image before rasterizing: cv2 draws
# in fixed point and overflows for coordinates far outside the image (close-up objects).
_CLIP_MARGIN = 2.0
# Nearest depth (m) anything is drawn at; nearer geometry is clipped or skipped.
NEAR = 0.8


@dataclass(frozen=True)
class Camera:
    """A level pinhole camera at height ``elevation`` (m) and world position (0, elevation, z)."""

    height: int
    width: int
    focal: float  # pixels
    cx: float  # column of the vanishing point
    horizon: float  # row of the horizon
    elevation: float  # metres above the ground
    z: float = 0.0

    def project(self, x, y, z) -> tuple[np.ndarray, np.ndarray]:
        """World points (broadcastable arrays, metres) -> image columns u and rows v."""
        depth = np.maximum(np.asarray(z, dtype=np.float64) - self.z, 1e-6)
        u = self.cx + self.focal * np.asarray(x, dtype=np.float64) / depth
        v = self.horizon - self.focal * (np.asarray(y, dtype=np.float64) - self.elevation) / depth
        return u, v

    def pixels_per_metre(self, z: float) -> float:
        """Image scale of something standing at world depth ``z``."""
        return self.focal / max(z - self.z, 1e-6)


def _clip_polygon(points: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman clipping of a polygon (N, 2) against an axis-aligned rectangle."""
    poly = [tuple(p) for p in points]
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if not poly:
            break
        out = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            cur_in = (cur[axis] >= bound) if keep_above else (cur[axis] <= bound)
            prev_in = (prev[axis] >= bound) if keep_above else (prev[axis] <= bound)
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append(tuple(prev[k] + t * (cur[k] - prev[k]) for k in range(2)))
            if cur_in:
                out.append(cur)
        poly = out
    return np.asarray(poly, dtype=np.float64).reshape(-1, 2)


class Shape:
    """Polygons and ellipses in image coordinates, rasterized together into one mask.

    Each primitive takes the colour last given to ``pen`` (None: the colour passed to
    ``Canvas.fill``), so one shape paints a whole object - body, windows, wheels - in one go.
    Later primitives cover earlier ones.
    """

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.items: list[tuple[str, object, int]] = []  # kind, geometry, colour slot
        self.colours: list[np.ndarray] = []
        self._slot = 1  # slot 1 is the fill colour; own colours from 2
        self._bounds: list[tuple[float, float, float, float]] = []

    def pen(self, colour) -> Shape:
        """Draw the next primitives in ``colour`` (RGB), or in the fill colour if None."""
        if colour is None:
            self._slot = 1
        else:
            self.colours.append(np.asarray(colour, dtype=np.float32))
            self._slot = len(self.colours) + 1
        return self

    def polygon(self, points) -> Shape:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        mx, my = _CLIP_MARGIN * self.width, _CLIP_MARGIN * self.height
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        if hi[0] < 0 or hi[1] < 0 or lo[0] > self.width or lo[1] > self.height:
            return self  # entirely outside the image
        if lo[0] < -mx or lo[1] < -my or hi[0] > self.width + mx or hi[1] > self.height + my:
            pts = _clip_polygon(pts, -mx, -my, self.width + mx, self.height + my)
            if len(pts) < 3:
                return self
            lo, hi = pts.min(axis=0), pts.max(axis=0)
        self.items.append(("polygon", pts, self._slot))
        self._bounds.append((lo[0], lo[1], hi[0], hi[1]))
        return self

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> Shape:
        return self.polygon([(u0, v0), (u1, v0), (u1, v1), (u0, v1)])

    def bar(self, p0, p1, thickness: float) -> Shape:
        """A straight bar of ``thickness`` pixels from image point p0 to p1."""
        p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
        d = p1 - p0
        n = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-9) * thickness / 2
        return self.polygon([p0 + n, p1 + n, p1 - n, p0 - n])

    def ellipse(self, u: float, v: float, ru: float, rv: float) -> Shape:
        ru, rv = max(ru, 0.5), max(rv, 0.5)
        if -ru <= u <= self.width + ru and -rv <= v <= self.height + rv:
            self.items.append(("ellipse", (u, v, ru, rv), self._slot))
            self._bounds.append((u - ru, v - rv, u + ru, v + rv))
        return self

    def rasterize(self) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """-> (region of the image, uint8 colour slot per pixel over it, 0 = outside the
        shape), or None if nothing is visible."""
        if not self.items:
            return None
        b = np.asarray(self._bounds)
        x0, y0 = max(int(np.floor(b[:, 0].min())), 0), max(int(np.floor(b[:, 1].min())), 0)
        x1 = min(int(np.ceil(b[:, 2].max())) + 1, self.width)
        y1 = min(int(np.ceil(b[:, 3].max())) + 1, self.height)
        if x1 <= x0 or y1 <= y0:
            return None
        slots = np.zeros((y1 - y0, x1 - x0), np.uint8)
        scale, offset = 1 << _SHIFT, np.array([x0 + 0.5, y0 + 0.5])
        # cv2 puts pixel centres at integer coordinates; ours are at +0.5.
        for kind, geometry, slot in self.items:
            if kind == "polygon":
                fixed = np.round((geometry - offset) * scale).astype(np.int32)
                cv2.fillPoly(slots, [fixed], slot, cv2.LINE_8, _SHIFT)
            else:
                u, v, ru, rv = geometry
                centre = (round((u - offset[0]) * scale), round((v - offset[1]) * scale))
                axes = (round(ru * scale), round(rv * scale))
                cv2.ellipse(slots, centre, axes, 0, 0, 360, slot, -1, cv2.LINE_8, _SHIFT)
        return (slice(y0, y1), slice(x0, x1)), slots


def periodic_noise(rng: np.random.Generator, size: int = 256, roughness: float = 1.6) -> np.ndarray:
    """Smooth tileable noise (size, size), zero mean, unit std: 1/f^roughness spectrum."""
    radius = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    radius[0, 0] = 1.0
    amplitude = radius**-roughness
    amplitude[0, 0] = 0.0
    angle = 2 * np.pi * rng.random(amplitude.shape)
    field = np.fft.irfft2(amplitude * (np.cos(angle) + 1j * np.sin(angle)), s=(size, size))
    return ((field - field.mean()) / field.std()).astype(np.float32)


class Canvas:
    """Label ids, instance ids, depth and colour of one image, painted with a depth test."""

    def __init__(self, camera: Camera, noise: np.ndarray) -> None:
        h, w = camera.height, camera.width
        self.camera = camera
        self.noise = noise  # a periodic noise tile for textures
        self.label = np.zeros((h, w), np.uint8)
        self.instance = np.zeros((h, w), np.int32)
        self.depth = np.full((h, w), np.inf, np.float32)
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.ground = np.zeros((h, w), bool)  # where the ground plane itself is visible
        self._instance_counts: dict[int, int] = {}

    def shape(self) -> Shape:
        return Shape(self.camera.height, self.camera.width)

    def new_instance(self, label_id: int) -> int:
        """Instance id as Cityscapes stores it: label id * 1000 + k, or the label id alone."""
        if not _HAS_INSTANCES[label_id]:
            return label_id
        k = self._instance_counts.get(label_id, 0)
        self._instance_counts[label_id] = k + 1
        return label_id * 1000 + k

    def paint(self, region, mask, depth, label_id: int, colour, instance: int | None = None):
        """Paint ``mask`` (bool, over ``region``) where it is not behind what is already there.

        depth, label_id: scalars or arrays over the region (depth in m); colour: (3,) RGB or
        (h, w, 3) over the region.
        Equal depths overwrite, so the parts of one object paint in order.
        """
        win = mask & (depth <= self.depth[region])
        if win.all():  # plain slice assignment: much faster for big regions
            win = slice(None)
        elif not win.any():
            return win
        self.depth[region][win] = depth if np.isscalar(depth) else depth[win]
        label_id = label_id if np.isscalar(label_id) else label_id[win]
        self.label[region][win] = label_id
        self.instance[region][win] = label_id if instance is None else instance
        colour = np.asarray(colour, dtype=np.float32)
        self.rgb[region][win] = colour if colour.ndim == 1 else colour[win]
        self.ground[region][win] = False
        return mask if isinstance(win, slice) else win

    def fill(
        self, shape: Shape, depth: float, label_id: int, colour=None, instance=None, texture=0.0
    ):
        """Rasterize and paint a shape at one depth, in ``colour`` where the shape has no pen
        colour of its own; ``texture`` adds screen-space noise."""
        raster = shape.rasterize()
        if raster is None:
            return
        region, slots = raster
        mask = slots > 0
        if not mask.any():
            return
        fill_colour = np.zeros(3, np.float32) if colour is None else colour
        lut = np.stack(
            [np.zeros(3, np.float32), np.asarray(fill_colour, np.float32)] + shape.colours
        )
        colour = lut[slots] if len(lut) > 2 else lut[1]
        if texture:
            colour = colour * (1.0 + texture * self.noise_patch(region, depth))[..., None]
        self.paint(region, mask, depth, label_id, colour, instance)

    def noise_patch(self, region, seed: float, scale: float = 1.0) -> np.ndarray:
        """Noise over an image region, at a scale that follows the image size."""
        step = scale * 128.0 / self.camera.height
        offset = int(seed * 7919) & 255
        rows = (np.arange(region[0].start, region[0].stop) * step).astype(np.int64) + offset
        cols = (np.arange(region[1].start, region[1].stop) * step).astype(np.int64) + 3 * offset
        return self.noise[np.ix_(rows & 255, cols & 255)]


_HAS_INSTANCES = {label.id: label.hasInstances for label in labels if label.id >= 0}


def finish_image(rgb: np.ndarray, rng: np.random.Generator, height: int, noise_rng=None):
    """Lighting, lens blur and sensor noise on the painted colours -> (H, W, 3) uint8 RGB.

    The random gain, colour cast and vignetting keep colour from being a perfect cue.
    ``noise_rng`` (default ``rng``) draws the sensor noise alone, so video frames can share
    their lighting.
    """
    noise_rng = rng if noise_rng is None else noise_rng
    h, w = rgb.shape[:2]
    gain = (rng.uniform(0.75, 1.2) * rng.uniform(0.93, 1.07, size=3)).astype(np.float32)
    across = ((np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (w / 2)) ** 2
    down = ((np.arange(h, dtype=np.float32) + 0.5 - h / 2) / (h / 2)) ** 2
    vignette = np.float32(rng.uniform(0.05, 0.15))
    light = 1.0 - vignette * (down[:, None] + across[None, :])
    image = rgb * light[..., None] * gain + np.float32(rng.uniform(-8, 8))
    sigma = 0.6 * max(1.0, height / 512)  # a soft lens; full-size images stay sharp
    image = cv2.GaussianBlur(image, (0, 0), sigma)
    noise = noise_rng.standard_normal(size=image.shape, dtype=np.float32)
    image += noise * np.float32(rng.uniform(2.0, 6.0))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
