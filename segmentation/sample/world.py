"""What a synthetic street is made of: label ids, palettes, camera styles and the ``World``.

A ``World`` is a plain description in metres (axes in ``synthetic_render``), drawn at random by
``synthetic_layout.sample_world`` and turned into an image for any camera position by
``synthetic_street.render_world``: a video is the same world seen from a moving camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from cityscapesscripts.helpers.labels import labels, name2label

from segmentation.sample import things


def _id(name: str) -> int:
    return name2label[name].id


ROAD, SIDEWALK, PARKING, RAIL = (_id(n) for n in ("road", "sidewalk", "parking", "rail track"))
BUILDING, WALL, FENCE = _id("building"), _id("wall"), _id("fence")
GUARD_RAIL, BRIDGE = _id("guard rail"), _id("bridge")
VEGETATION, TERRAIN, SKY, GROUND = (_id(n) for n in ("vegetation", "terrain", "sky", "ground"))
STATIC, DYNAMIC = _id("static"), _id("dynamic")

# How the void classes, whose Cityscapes colour is black, look in the image.
_VOID_LOOKS = {
    "ego vehicle": (42, 44, 52),
    "rectification border": (5, 5, 5),
    "out of roi": (12, 12, 12),
    "static": (95, 88, 78),
}
# Everyday colours for the KITTI-like scenes, which have no class colours to follow.
_NATURAL_LOOKS = {
    "road": (92, 92, 96),
    "sidewalk": (152, 146, 140),
    "parking": (112, 110, 108),
    "rail track": (120, 104, 92),
    "ground": (128, 118, 104),
    "building": (150, 128, 112),
    "wall": (168, 160, 150),
    "fence": (120, 112, 100),
    "guard rail": (175, 175, 180),
    "bridge": (130, 126, 120),
    "pole": (112, 112, 112),
    "traffic light": (48, 48, 44),
    "traffic sign": (205, 205, 210),
    "vegetation": (72, 108, 48),
    "terrain": (128, 140, 76),
    "sky": (160, 190, 225),
    "person": (92, 72, 84),
    "rider": (82, 64, 96),
    "car": (120, 30, 30),
    "truck": (185, 185, 190),
    "bus": (205, 190, 70),
    "train": (190, 70, 60),
    "motorcycle": (40, 40, 52),
    "bicycle": (44, 44, 44),
    "static": (100, 96, 90),
    "dynamic": (122, 100, 72),
    "ego vehicle": (42, 44, 52),
}
_CAR_LOOKS = [
    (200, 200, 205),
    (30, 30, 35),
    (120, 30, 30),
    (40, 60, 120),
    (150, 150, 155),
    (90, 95, 100),
    (200, 190, 170),
    (30, 80, 60),
]


class Palette:
    """The base colour each label is painted with, and random variations of it."""

    def __init__(self, looks: str) -> None:
        self.looks = looks
        self.base = np.zeros((256, 3), np.float32)
        for label in labels:
            if label.id >= 0:
                self.base[label.id] = label.color
        overrides = _VOID_LOOKS if looks == "cityscapes" else _NATURAL_LOOKS
        for name, rgb in overrides.items():
            self.base[_id(name)] = rgb

    def pick(self, rng: np.random.Generator, label_id: int, jitter: float = 9.0) -> np.ndarray:
        """A colour for one object of this label: the base colour plus a small random shift."""
        base = self.base[label_id]
        if self.looks != "cityscapes" and label_id == things.CAR:
            base = np.asarray(_CAR_LOOKS[rng.integers(len(_CAR_LOOKS))], np.float32)
        if self.looks == "cityscapes" and label_id == STATIC:
            base = base * rng.uniform(0.6, 1.5)
        return np.clip(base + rng.normal(0.0, jitter, 3), 0, 255).astype(np.float32)


@dataclass(frozen=True)
class Style:
    """What kind of street and camera: the Cityscapes car, or one of the KITTI road categories."""

    lanes: tuple[int, ...]  # choices for the number of lanes
    markings: str  # "random", "centre" (um), "all" (umm) or "none" (uu)
    sidewalk_prob: float
    focal: float  # focal length / image height
    elevation: float  # camera height (m)
    horizon: tuple[float, float]  # range of the horizon row / image height
    ego_vehicle: bool  # the Cityscapes bonnet and rectification borders
    looks: str  # palette: "cityscapes" or "natural"
    busy: float = 1.0  # scales how many things stand in the street


CITYSCAPES = Style((1, 2, 2, 2, 3, 4), "random", 0.97, 2.15, 1.25, (0.36, 0.46), True, "cityscapes")
KITTI = {
    "um": Style((2,), "centre", 0.9, 1.92, 1.65, (0.42, 0.5), False, "natural", 0.7),
    "umm": Style((3, 4), "all", 0.9, 1.92, 1.65, (0.42, 0.5), False, "natural", 0.7),
    "uu": Style((1,), "none", 0.35, 1.92, 1.65, (0.42, 0.5), False, "natural", 0.5),
}

# Things a layout can be asked to include for sure (see ``synthetic_layout.sample_world``).
FEATURES = (
    "train",
    "bus",
    "truck",
    "motorcycle",
    "bicycle",
    "wall",
    "fence",
    "traffic light",
    "terrain",
)


@dataclass
class Segment:
    """A stretch [z0, z1) of one roadside plane: a building front, wall, fence or hedge."""

    z0: float
    z1: float
    label_id: int
    height: float
    colour: np.ndarray
    # stripes across Y and along Z (period, duty) and their tone: windows, mortar, fence posts
    pattern: tuple[float, float, float, float, float]
    windows: bool  # stripes combine into windows (AND) rather than lines (OR)
    roughness: float  # texture noise amplitude; for vegetation also a bumpy top


@dataclass
class Plane:
    """A vertical plane along the street at lateral position ``x`` (m), split into segments."""

    x: float
    segments: list[Segment]


@dataclass
class World:
    """Everything in one street, in world metres (see ``synthetic_render`` for the axes)."""

    style: Style
    palette: Palette
    noise: np.ndarray  # texture tile
    horizon: float  # row fraction
    cx: float  # column fraction of the vanishing point
    road: tuple[float, float]
    ego_lane: tuple[float, float]
    markings: list[tuple[float, float, bool]]  # x, width, dashed
    sides: list[list[tuple[int, float]]]  # left, right: (label, width) bands outward from the road
    outer: tuple[int, int]  # ground label beyond the bands, left and right
    patches: list[tuple[int, float, float, float, float]]  # label, x0, x1, z0, z1 on the ground
    crossings: list[tuple[float, float]]  # z ranges of cross streets
    zebras: list[tuple[float, float]]
    planes: list[Plane]
    skyline: list[tuple[float, float, float, int, np.ndarray]]  # x0, x1, height, label, colour
    skyline_z: float
    ground_colours: np.ndarray  # (256, 3) per label
    sky_colour: np.ndarray
    clouds: float
    shadow: float  # ground with X below this is in the shade of the left buildings
    bridge: tuple[float, float, float] | None  # z, y0, y1
    hood: tuple[float, float] | None  # top row fraction, curvature
    things: list = field(default_factory=list)
    speed: float = 0.7  # metres the camera moves per video frame


def pick_one(rng: np.random.Generator, options: dict):
    """One key of ``options``, drawn with the probabilities given as its values."""
    keys = list(options)
    p = np.asarray([options[k] for k in keys], dtype=np.float64)
    return keys[rng.choice(len(keys), p=p / p.sum())]
