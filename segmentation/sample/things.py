"""Things that stand in the synthetic street: vehicles, people, two-wheelers, poles, trees, clutter.

Each thing is a small dataclass placed in world coordinates (see ``render``), with its
random appearance fixed when it is made, so a video renders the same thing in every frame.
``draw(canvas)`` paints it with its label, a fresh instance id and textured colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from cityscapesscripts.helpers.labels import name2label

from segmentation.sample.render import NEAR, Canvas

CAR, TRUCK, BUS, TRAIN = (name2label[n].id for n in ("car", "truck", "bus", "train"))
MOTORCYCLE, BICYCLE = name2label["motorcycle"].id, name2label["bicycle"].id
PERSON, RIDER = name2label["person"].id, name2label["rider"].id
POLE, LIGHT, SIGN = (name2label[n].id for n in ("pole", "traffic light", "traffic sign"))
VEGETATION = name2label["vegetation"].id

# Thinnest size (fraction of the image height) a pole, a traffic light and a sign is drawn at,
# so that small classes stay learnable in 128x256 images.
_MIN_POLE, _MIN_LIGHT, _MIN_SIGN = 1 / 48, 1 / 26, 1 / 22


def _rgb(colour, tone: float = 1.0) -> np.ndarray:
    return np.clip(np.asarray(colour, dtype=np.float32) * tone, 0, 255)


def in_view(canvas: Canvas, x0, x1, y0, y1, z0, z1) -> bool:
    """Whether any of the world box [x0, x1] x [y0, y1] x [z0, z1] can show in the image: a
    cheap test that spares drawing the parts of things out of sight."""
    cam = canvas.camera
    near, far = max(z0, cam.z + NEAR) - cam.z, z1 - cam.z
    if far <= 0 or near > far:
        return False
    us = [cam.cx + cam.focal * x / d for x in (x0, x1) for d in (near, far)]
    vs = [cam.horizon - cam.focal * (y - cam.elevation) / d for y in (y0, y1) for d in (near, far)]
    return max(us) >= 0 and min(us) <= cam.width and max(vs) >= 0 and min(vs) <= cam.height


def _face_quad(face: np.ndarray, s0: float, s1: float, t0: float, t1: float) -> np.ndarray:
    """World corners of the part [s0, s1] x [t0, t1] of a planar face given as (4, 3) corners
    p00, p10, p11, p01 (s along the first edge, t along the last)."""
    p00, p10, p11, p01 = face
    pts = []
    for s, t in ((s0, t0), (s1, t0), (s1, t1), (s0, t1)):
        pts.append((1 - s) * (1 - t) * p00 + s * (1 - t) * p10 + s * t * p11 + (1 - s) * t * p01)
    return np.asarray(pts)


def _project(canvas: Canvas, points) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    u, v = canvas.camera.project(pts[:, 0], pts[:, 1], pts[:, 2])
    return np.stack([u, v], axis=1)


def box_faces(canvas: Canvas, shape, box, colour) -> dict:
    """Add the faces of an axis-aligned box (x0, x1, y0, y1, z0, z1) that face the camera to
    ``shape``, each in its own shade of ``colour``.

    Returns the world corners (4, 3) of each face by name (front, side, top), for drawing
    windows or wheels on them; nearer than NEAR the box is cut off.
    """
    x0, x1, y0, y1, z0, z1 = box
    cam = canvas.camera
    z0 = max(z0, cam.z + NEAR)
    if z1 <= z0:
        return {}
    faces = {}
    if y1 < cam.elevation:
        faces["top"] = (np.array([[x0, y1, z0], [x1, y1, z0], [x1, y1, z1], [x0, y1, z1]]), 1.12)
    if x1 < 0 or x0 > 0:
        xs = x1 if x1 < 0 else x0
        faces["side"] = (np.array([[xs, y0, z0], [xs, y0, z1], [xs, y1, z1], [xs, y1, z0]]), 0.82)
    faces["front"] = (np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0]]), 1.0)
    for face, tone in faces.values():
        shape.pen(_rgb(colour, tone)).polygon(_project(canvas, face))
    return {name: face for name, (face, _) in faces.items()}


def _face_parts(canvas: Canvas, shape, face, parts, colour) -> None:
    """Add parts (s0, s1, t0, t1) of a face in one colour: windows, lights, tyres."""
    shape.pen(colour)
    for part in parts:
        shape.polygon(_project(canvas, _face_quad(face, *part)))


@dataclass
class Vehicle:
    """A car, truck, bus or tram: boxes with windows, lights and wheels, along the street."""

    label_id: int
    x: float  # centre
    z: float  # rear end (nearest to the camera if it drives away)
    length: float
    width: float
    height: float
    colour: np.ndarray
    oncoming: bool = False  # shows its front (white lights) instead of its rear
    speed: float = 0.0  # metres per video frame
    trim: dict = field(default_factory=dict)  # "glass", "tyre" colours; default: body shades

    def draw(self, canvas: Canvas) -> None:
        x0, x1 = self.x - self.width / 2, self.x + self.width / 2
        z0, z1 = self.z, self.z + self.length
        if not in_view(canvas, x0, x1, 0.0, self.height + 1.2, z0, z1):
            return
        cam, shape, label_id = canvas.camera, canvas.shape(), self.label_id
        dark = self.trim.get("glass", _rgb(self.colour, 0.4))
        tyre = self.trim.get("tyre", _rgb(self.colour, 0.22))
        lamp = _rgb((255, 245, 230) if self.oncoming else (200, 40, 40))
        if label_id == CAR:
            body = box_faces(canvas, shape, (x0, x1, 0.2, 0.95, z0, z1), self.colour)
            inset, cz = 0.1 * self.width, 0.2 * self.length
            cabin = (x0 + inset, x1 - inset, 0.95, self.height, z0 + cz, z1 - 0.8 * cz)
            cab = box_faces(canvas, shape, cabin, self.colour)
            windows = {"front": [(0.06, 0.94, 0.05, 0.9)], "side": [(0.05, 0.95, 0.1, 0.85)]}
            low, high = 0.2, 0.95
        else:
            low, high = 0.15 if label_id == TRAIN else 0.3, self.height
            body = cab = box_faces(canvas, shape, (x0, x1, low, self.height, z0, z1), self.colour)
            top = 0.35 if label_id == TRUCK and not self.oncoming else 0.9
            n = max(2, int(self.length / 2.2))
            side = [((k + 0.2) / n, (k + 0.8) / n, 0.5, 0.85) for k in range(n)]
            windows = {"front": [(0.08, 0.92, 0.5, top)], "side": side if label_id != TRUCK else []}
            if label_id == TRAIN:  # pantograph on the roof
                mid = self.z + self.length / 2
                ends = _project(canvas, [[self.x, self.height, mid], [self.x, 4.6, mid + 1.5]])
                shape.pen(dark).bar(ends[0], ends[1], max(cam.pixels_per_metre(mid) * 0.08, 1.0))
        for face, parts in windows.items():
            if face in cab:
                _face_parts(canvas, shape, cab[face], parts, dark)
        if "front" in body:
            t0, t1 = ((y - low) / (high - low) for y in (0.62, 0.82))  # lamps at 0.6-0.8 m
            lamps = [(0.04, 0.2, t0, t1), (0.8, 0.96, t0, t1)]
            _face_parts(canvas, shape, body["front"], lamps, lamp)
            bottom = body["front"].copy()  # tyres peeking out under the body
            bottom[:, 1] = [0.0, 0.0, 0.45, 0.45]
            tyres = [(0.03, 0.22, 0.0, 1.0), (0.78, 0.97, 0.0, 1.0)]
            _face_parts(canvas, shape, bottom, tyres, tyre)
        if "side" in body and label_id != TRAIN:
            xs = body["side"][0, 0]
            shape.pen(tyre)
            for wz in (z0 + 0.2 * min(self.length, 5.0), z1 - 0.2 * min(self.length, 5.0)):
                if wz - cam.z < NEAR + 0.4:
                    continue
                ((u, v),) = _project(canvas, [[xs, 0.34, wz]])
                r = 0.34 * cam.pixels_per_metre(wz)
                squeeze = abs(xs) / np.hypot(xs, wz - cam.z)
                shape.ellipse(u, v, max(r * squeeze, 1.0), r)
        depth = max(z0 - cam.z, NEAR)
        canvas.fill(shape, depth, label_id, instance=canvas.new_instance(label_id), texture=0.05)


@dataclass
class Person:
    """A pedestrian, drawn as a flat figure facing the camera."""

    x: float
    z: float
    height: float
    colour: np.ndarray
    stride: float  # metres between the feet (walking phase)
    speed: float = 0.0
    trim: dict = field(default_factory=dict)  # "legs", "skin" colours; default: clothes shades

    def draw(self, canvas: Canvas) -> None:
        cam = canvas.camera
        if self.z - cam.z < 2.0 or not in_view(
            canvas, self.x - 0.5, self.x + 0.5, 0.0, self.height, self.z, self.z
        ):
            return
        s = cam.pixels_per_metre(self.z)
        ((u, v),) = _project(canvas, [[self.x, 0.0, self.z]])
        h = self.height

        def pt(dx, y):
            return (u + dx * s, v - y * s)

        shape = canvas.shape().pen(self.trim.get("legs", _rgb(self.colour, 0.55)))
        for side in (-1, 1):
            shape.bar(
                pt(side * 0.08, 0.53 * h), pt(side * self.stride / 2, 0.0), max(0.15 * s, 1.5)
            )
        shape.pen(None).polygon(
            [pt(-0.16, 0.5 * h), pt(0.16, 0.5 * h), pt(0.21, 0.82 * h), pt(-0.21, 0.82 * h)]
        )
        for side in (-1, 1):
            hand = pt(side * 0.25 + self.stride * 0.3 * side, 0.47 * h)
            shape.bar(pt(side * 0.2, 0.8 * h), hand, max(0.1 * s, 1.2))
        r = 0.12 * h / 1.75
        skin = self.trim.get("skin", _skin(self.colour))
        shape.pen(skin).ellipse(*pt(0.0, 0.84 * h + r), max(0.85 * r * s, 1.0), r * s)
        inst = canvas.new_instance(PERSON)
        canvas.fill(shape, self.z - cam.z, PERSON, self.colour, inst, texture=0.08)


def _skin(colour) -> np.ndarray:
    """A face: the clothes' colour lightened, so the whole figure keeps its class look."""
    return _rgb(0.6 * np.asarray(colour, dtype=np.float32) + 90)


@dataclass
class TwoWheeler:
    """A bicycle or motorcycle at yaw ``yaw`` (0: riding away along +Z), with or without rider."""

    label_id: int  # BICYCLE or MOTORCYCLE
    x: float
    z: float
    yaw: float  # radians
    colour: np.ndarray
    rider_colour: np.ndarray | None = None
    speed: float = 0.0
    # "tyre", "rim", "rider_skin" colours; default: shades of the bike's and rider's colours
    trim: dict = field(default_factory=dict)

    def _image_point(self, canvas: Canvas, s: float, y: float) -> np.ndarray:
        """Image point of (s metres along the heading, y up) from the centre."""
        point = [self.x + s * np.sin(self.yaw), y, self.z + s * np.cos(self.yaw)]
        return _project(canvas, [point])[0]

    def draw(self, canvas: Canvas) -> None:
        cam = canvas.camera
        if self.z - cam.z < 3.0 or not in_view(
            canvas, self.x - 1.2, self.x + 1.2, 0.0, 1.9, self.z - 1.2, self.z + 1.2
        ):
            return
        depth = self.z - cam.z
        motor = self.label_id == MOTORCYCLE
        half, r = (0.75, 0.32) if motor else (0.55, 0.34)
        scale = cam.pixels_per_metre(self.z)
        # wheels are circles in the bike's vertical plane: squeezed by the viewing angle
        normal = np.array([np.cos(self.yaw), 0.0, -np.sin(self.yaw)])
        view = np.array([self.x, r - cam.elevation, depth])
        squeeze = max(abs(normal @ view) / np.linalg.norm(view), 0.12)
        shape = canvas.shape()
        tyre = self.trim.get("tyre", _rgb(self.colour, 0.35))
        rim = self.trim.get("rim", _rgb(self.colour, 1.1))
        for s in (-half, half):
            u, v = self._image_point(canvas, s, r)
            rv = r * scale
            shape.pen(tyre).ellipse(u, v, rv * squeeze, rv)
            shape.pen(rim).ellipse(u, v, 0.6 * rv * squeeze, 0.6 * rv)
        where = {
            "rear": (-half, r),
            "front": (half, r),
            "crank": (0.0, 0.35),
            "seat": (-0.15, 0.85 if motor else 0.95),
            "bar": (half - 0.12, 1.05),
        }
        p = {name: self._image_point(canvas, *sy) for name, sy in where.items()}
        shape.pen(None)
        if motor:
            shape.polygon([p["rear"], p["seat"], p["bar"], p["front"], p["crank"]])
        thick = max(0.07 * scale, cam.height / 110)
        for a, b in (
            ("rear", "seat"),
            ("seat", "bar"),
            ("bar", "front"),
            ("rear", "crank"),
            ("crank", "seat"),
            ("crank", "bar"),
        ):
            shape.bar(p[a], p[b], thick)
        inst = canvas.new_instance(self.label_id)
        canvas.fill(shape, depth, self.label_id, self.colour, inst, texture=0.05)
        if self.rider_colour is not None:
            self._draw_rider(canvas, p, scale, depth)

    def _draw_rider(self, canvas, p, scale, depth) -> None:
        seat, bar, crank = p["seat"], p["bar"], p["crank"]
        shoulder = seat + (bar - seat) * 0.3 + np.array([0.0, -0.62 * scale])
        body = canvas.shape().bar(seat, shoulder, max(0.36 * scale, 2.0))
        body.bar(shoulder, bar, max(0.1 * scale, 1.2))
        body.bar(seat, crank, max(0.15 * scale, 1.5))
        head = shoulder + np.array([0.0, -0.17 * scale])
        skin = self.trim.get("rider_skin", _skin(self.rider_colour))
        body.pen(skin).ellipse(*head, 0.1 * scale, 0.12 * scale)
        inst = canvas.new_instance(RIDER)
        canvas.fill(body, depth, RIDER, self.rider_colour, inst, texture=0.08)


@dataclass
class Pole:
    """A pole with, optionally, an arm over the road and traffic signs / lights on it."""

    x: float
    z: float
    height: float
    colour: np.ndarray
    arm: float = 0.0  # signed length (m) of a horizontal arm at the top, towards the road
    # (kind, y, dx, size, form, colours): "sign" (face, inner symbol) of form 0 circle,
    # 1 triangle, 2 diamond, 3 rectangle; "light" (housing, top, middle, bottom lamp), its
    # form the lit lamp
    signs: list = field(default_factory=list)

    def draw(self, canvas: Canvas) -> None:
        cam = canvas.camera
        reach = (min(self.arm, 0.0) - 0.8, max(self.arm, 0.0) + 0.8)
        if self.z - cam.z < 1.5 or not in_view(
            canvas, self.x + reach[0], self.x + reach[1], 0.0, self.height, self.z, self.z
        ):
            return
        depth = self.z - cam.z
        s = cam.pixels_per_metre(self.z)
        (u, v0), (_, v1) = _project(canvas, [[self.x, 0.0, self.z], [self.x, self.height, self.z]])
        half = max(0.1 * s, _MIN_POLE * cam.height) / 2
        pole = canvas.shape().rect(u - half, v1, u + half, v0)
        if self.arm:
            end = _project(canvas, [[self.x + self.arm, self.height, self.z]])[0]
            pole.bar((u, v1 + half), end, 2 * half)
            pole.rect(end[0] - 3 * half, end[1] - half, end[0] + 3 * half, end[1] + 2 * half)
        canvas.fill(pole, depth, POLE, self.colour, texture=0.05)
        for kind, y, dx, size, form, colours in self.signs:
            ((cu, cv),) = _project(canvas, [[self.x + dx, y, self.z]])
            if kind == "light":
                _draw_light(canvas, cu, cv, max(0.34 * s, _MIN_LIGHT * cam.height), depth, colours)
            else:
                a = max(size * s, _MIN_SIGN * cam.height) / 2
                _draw_sign(canvas, cu, cv, a, form, depth, colours)


def _draw_light(canvas: Canvas, cu: float, cv: float, w: float, depth: float, colours) -> None:
    """A traffic light w pixels wide centred at (cu, cv): housing and three lamps."""
    housing, *lamps = colours
    shape = canvas.shape().rect(cu - w / 2, cv - 1.4 * w, cu + w / 2, cv + 1.4 * w)
    for k, lamp in enumerate(lamps):
        shape.pen(lamp).ellipse(cu, cv + (k - 1) * 0.9 * w, 0.24 * w, 0.24 * w)
    canvas.fill(shape, depth, LIGHT, housing, texture=0.04)


def _draw_sign(canvas: Canvas, cu, cv, a: float, form: int, depth: float, colours) -> None:
    """A traffic sign of half-size a pixels centred at (cu, cv), with its inner symbol."""
    face, inner = colours
    shape = canvas.shape()
    if form == 0:
        shape.ellipse(cu, cv, a, a)
    elif form == 1:
        shape.polygon([(cu - a, cv - 0.8 * a), (cu + a, cv - 0.8 * a), (cu, cv + a)])
    elif form == 2:
        shape.polygon([(cu, cv - a), (cu + a, cv), (cu, cv + a), (cu - a, cv)])
    else:
        shape.rect(cu - 1.4 * a, cv - 0.7 * a, cu + 1.4 * a, cv + 0.7 * a)
    shape.pen(inner).ellipse(cu, cv, 0.45 * a, 0.45 * a)
    canvas.fill(shape, depth, SIGN, face, texture=0.05)


@dataclass
class Tree:
    """A street tree: trunk and a crown of overlapping blobs (all vegetation, as in Cityscapes)."""

    x: float
    z: float
    trunk: float  # height (m) where the crown starts
    blobs: np.ndarray  # (n, 3): dx, dy above the trunk, radius (m)
    colour: np.ndarray

    def draw(self, canvas: Canvas) -> None:
        cam = canvas.camera
        radius = float(self.blobs[:, 2].max())
        if self.z - radius - cam.z < 1.5 or not in_view(
            canvas, self.x - 3.5, self.x + 3.5, 0.0, self.trunk + 5.0, self.z - 2.5, self.z + 2.5
        ):
            return
        s = cam.pixels_per_metre(self.z)
        (u, v0), (_, v1) = _project(canvas, [[self.x, 0, self.z], [self.x, self.trunk + 1, self.z]])
        half = max(0.14 * s, _MIN_POLE * cam.height) / 2
        shape = canvas.shape().pen(_rgb((110, 80, 50), 0.5) + 0.5 * self.colour)
        shape.rect(u - half, v1, u + half, v0).pen(None)
        for dx, dy, r in self.blobs:
            ((cu, cv),) = _project(canvas, [[self.x + dx, self.trunk + dy, self.z]])
            shape.ellipse(cu, cv, r * s, 0.9 * r * s)
        canvas.fill(shape, self.z - radius - cam.z, VEGETATION, self.colour, texture=0.25)


@dataclass
class Clutter:
    """A box on the sidewalk: bins, benches, kiosks (static) or carts and containers (dynamic)."""

    label_id: int
    box: tuple  # x0, x1, y0, y1, z0, z1
    colour: np.ndarray

    @property
    def z(self) -> float:
        return self.box[4]

    def draw(self, canvas: Canvas) -> None:
        if not in_view(canvas, *self.box):
            return
        shape = canvas.shape()
        box_faces(canvas, shape, self.box, self.colour)
        depth = max(self.box[4] - canvas.camera.z, NEAR)
        canvas.fill(shape, depth, self.label_id, texture=0.1)
