"""What a synthetic street is made of: label ids, palettes, camera styles and the ``World``.

A ``World`` is a plain description in metres (axes in ``render``), drawn at random by
``layout.sample_world`` and turned into an image for any camera position by
``street.render_world``: a video is the same world seen from a moving camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from cityscapesscripts.helpers.labels import labels, name2label

from segmentation.sample import looks as natural
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
LOOKS = ("natural", "cityscapes")


def _rgb(colour) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32)


class Palette:
    """The colours a street is painted with: the Cityscapes label colours, or natural ones.

    The palette draws every colour from its own generator, so the geometry of a street (drawn
    from the layout's generator) is the same in both looks: only the painting differs.
    """

    def __init__(self, looks: str, rng: np.random.Generator) -> None:
        if looks not in LOOKS:
            raise ValueError(f"looks must be one of {LOOKS}, got {looks!r}")
        self.looks = looks
        self.natural = looks == "natural"
        self.rng = rng
        self.base = np.zeros((256, 3), np.float32)
        for label in labels:
            if label.id >= 0:
                self.base[label.id] = label.color
        overrides = natural.BASE if self.natural else _VOID_LOOKS
        for name, rgb in overrides.items():
            self.base[_id(name)] = rgb
        self._choices = {_id(name): options for name, options in natural.CHOICES.items()}

    def _choose(self, options: list) -> np.ndarray:
        return _rgb(options[self.rng.integers(len(options))])

    def _jitter(self, colour, amount: float) -> np.ndarray:
        return np.clip(_rgb(colour) + self.rng.normal(0.0, amount, 3), 0, 255).astype(np.float32)

    def pick(self, label_id: int, jitter: float = 9.0) -> np.ndarray:
        """A colour for one object of this label: its base colour (natural looks: one of the
        label's everyday colours) plus a small random shift."""
        base = self.base[label_id]
        if self.natural and label_id in self._choices:
            base = self._choose(self._choices[label_id])
        if not self.natural and label_id == STATIC:
            base = base * self.rng.uniform(0.6, 1.5)
        return self._jitter(base, jitter)

    def facade(self, label_id: int, dark: float) -> tuple[np.ndarray, np.ndarray]:
        """(wall colour, colour of its stripes) of a roadside segment: windows for buildings,
        mortar or posts for the rest. Natural buildings are of one of several materials, with
        glass windows; otherwise the stripes are the wall colour darkened by ``dark``."""
        if self.natural and label_id == BUILDING:
            wall = self._jitter(self._choose(natural.FACADES), 10.0)
            return wall, self._jitter(self._choose(natural.WINDOWS), 6.0)
        wall = self.pick(label_id, 12.0)
        return wall, wall * np.float32(dark)

    def far(self, colour: np.ndarray, horizon: np.ndarray) -> np.ndarray:
        """The colour of something far away: natural looks fade it into the horizon's haze."""
        if not self.natural:
            return colour
        return (0.8 * colour + 0.2 * horizon).astype(np.float32)

    def sky(self) -> tuple[np.ndarray, np.ndarray]:
        """(zenith, horizon) colours of the sky's gradient."""
        if not self.natural:
            colour = self.pick(SKY, 8.0)
            return colour * np.float32(0.82), colour * np.float32(1.12)
        zenith, horizon = natural.SKIES[self.rng.integers(len(natural.SKIES))]
        return self._jitter(zenith, 6.0), self._jitter(horizon, 4.0)

    def wear(self) -> float:
        """How worn the asphalt and its paint are (0: not drawn, as in the label colours)."""
        return float(self.rng.uniform(0.4, 1.0)) if self.natural else 0.0

    def trim(self, label_id: int, colour: np.ndarray) -> dict[str, np.ndarray]:
        """Colours of the parts of a thing other than its body (see ``things``): glass and
        tyres of vehicles, trousers and skin of people. Empty for the Cityscapes looks, whose
        parts are shades of the body colour, so each thing keeps its class colour."""
        if not self.natural:
            return {}
        if label_id in (things.PERSON, things.RIDER):
            legs = self._jitter(self._choose(natural.TROUSERS), 8.0)
            return {"legs": legs, "skin": self._jitter(self._choose(natural.SKIN), 6.0)}
        if label_id in (things.BICYCLE, things.MOTORCYCLE):
            return {"tyre": _rgb(natural.TYRE), "rim": self._jitter(natural.RIM, 8.0)}
        if label_id in (things.CAR, things.TRUCK, things.BUS, things.TRAIN):
            glass = self._jitter(self._choose(natural.GLASS), 4.0)
            return {"glass": glass, "tyre": _rgb(natural.TYRE)}
        return {}

    def person(self, label_id: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(clothes, trim) of a pedestrian or a rider (``label_id``)."""
        if not self.natural:
            return self.pick(label_id, 14.0 if label_id == things.PERSON else 12.0), {}
        clothes = self._jitter(self._choose(natural.TOPS), 10.0)
        return clothes, self.trim(label_id, clothes)

    def sign(self, form: int) -> tuple[np.ndarray, np.ndarray]:
        """(face, inner symbol) of a traffic sign of ``form`` (see ``things.Pole``)."""
        if not self.natural:
            face = self.pick(things.SIGN)
            return face, face * np.float32(0.75)
        options = natural.SIGNS[form]
        face, inner = options[self.rng.integers(len(options))]
        return self._jitter(face, 6.0), self._jitter(inner, 4.0)

    def light(self, lit: int) -> tuple[np.ndarray, ...]:
        """(housing, top, middle and bottom lamp) of a traffic light whose lamp ``lit`` is on."""
        if not self.natural:
            housing = self.pick(things.LIGHT)
            lamps = [housing * np.float32(1.35 if k == lit else 0.55) for k in range(3)]
            return (housing, *(np.clip(lamp, 0, 255) for lamp in lamps))
        housing = self._jitter(self._choose(natural.HOUSINGS), 4.0)
        lamps = [natural.LAMPS_LIT[k] if k == lit else natural.LAMPS_OFF[k] for k in range(3)]
        return (housing, *(_rgb(lamp) for lamp in lamps))


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
    looks: str  # palette: "natural" or "cityscapes" (the label colours); never the geometry
    busy: float = 1.0  # scales how many things stand in the street
    tall: float = 1.0  # scales the height of buildings
    bridges: float = 0.0  # chance of a bridge across the street


# City streets; ``dataclasses.replace(CITYSCAPES, looks="cityscapes")`` paints them in the
# label colours.
CITYSCAPES = Style(
    (1, 2, 2, 2, 3, 4), "random", 0.97, 2.15, 1.25, (0.36, 0.46), True, "natural", bridges=0.06
)
# Suburban roads: fewer things, lower buildings.
KITTI = {
    "um": Style((2,), "centre", 0.9, 1.92, 1.65, (0.42, 0.5), False, "natural", 0.7, 0.7),
    "umm": Style((3, 4), "all", 0.9, 1.92, 1.65, (0.42, 0.5), False, "natural", 0.7, 0.7),
    "uu": Style((1,), "none", 0.35, 1.92, 1.65, (0.42, 0.5), False, "natural", 0.5, 0.7),
}

# Things a layout can be asked to include for sure (see ``layout.sample_world``).
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
    # stripes across Y and along Z (period, duty), and their tone in the Cityscapes looks:
    # windows, mortar, fence posts
    pattern: tuple[float, float, float, float, float]
    stripe_colour: np.ndarray  # what the stripes are painted in
    windows: bool  # stripes combine into windows (AND) rather than lines (OR)
    roughness: float  # texture noise amplitude; for vegetation also a bumpy top


@dataclass
class Plane:
    """A vertical plane along the street at lateral position ``x`` (m), split into segments."""

    x: float
    segments: list[Segment]


@dataclass
class World:
    """Everything in one street, in world metres (see ``render`` for the axes)."""

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
    sky: tuple[np.ndarray, np.ndarray]  # zenith and horizon colours
    clouds: float
    shadow: float  # ground with X below this is in the shade of the left buildings
    bridge: tuple[float, float, float] | None  # z, y0, y1
    hood: tuple[float, float] | None  # top row fraction, curvature
    wear: float = 0.0  # tyre tracks, patches and faded paint on the road (natural looks)
    things: list = field(default_factory=list)
    speed: float = 0.7  # metres the camera moves per video frame


def pick_one(rng: np.random.Generator, options: dict):
    """One key of ``options``, drawn with the probabilities given as its values."""
    keys = list(options)
    p = np.asarray([options[k] for k in keys], dtype=np.float64)
    return keys[rng.choice(len(keys), p=p / p.sum())]
