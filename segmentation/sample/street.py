"""Rendering a synthetic street (``world.World``) seen from one camera position.

Sky, far skyline, ground and the roadside planes are ray-cast per pixel or per column (numpy);
things are drawn as polygons far to near; a depth buffer settles who hides whom.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from cityscapesscripts.helpers.labels import name2label

from segmentation.sample.render import NEAR, Camera, Canvas
from segmentation.sample.world import (
    BRIDGE,
    GROUND,
    PARKING,
    RAIL,
    ROAD,
    SIDEWALK,
    SKY,
    TERRAIN,
    VEGETATION,
    Plane,
    World,
)

EGO, BORDER, OUT_OF_ROI = (
    name2label[n].id for n in ("ego vehicle", "rectification border", "out of roi")
)
_WHITE = np.array([228.0, 228.0, 222.0], np.float32)
# Texture strength of each ground label: asphalt is smooth, grass is not.
_GROUND_ROUGHNESS = np.zeros(256, np.float32)
for _label, _amount in (
    (ROAD, 0.07),
    (SIDEWALK, 0.08),
    (PARKING, 0.08),
    (RAIL, 0.1),
    (TERRAIN, 0.22),
    (GROUND, 0.12),
):
    _GROUND_ROUGHNESS[_label] = _amount


def make_camera(world: World, height: int, width: int, z: float = 0.0) -> Camera:
    """The camera of ``world``'s style for an image of height x width, at street position z."""
    style = world.style
    return Camera(
        height,
        width,
        style.focal * height,
        world.cx * width,
        world.horizon * height,
        style.elevation,
        z,
    )


def render_world(world: World, camera: Camera, frame: int = 0) -> Canvas:
    """Paint the street; ``frame`` moves the traffic (metres per frame in ``speed``)."""
    canvas = Canvas(camera, world.noise)
    first = _first_ground_row(camera)
    _sky(canvas, world, first)  # sky above the horizon, ground below, then the rest on top
    _ground(canvas, world, first)
    _skyline(canvas, world)
    for plane in world.planes:
        _plane(canvas, plane)
    if world.bridge is not None:
        _bridge(canvas, world)
    moving = [
        replace(t, z=t.z + t.speed * frame) if getattr(t, "speed", 0.0) else t for t in world.things
    ]
    for thing in sorted(moving, key=lambda t: t.z, reverse=True):
        thing.draw(canvas)
    if world.hood is not None:
        _ego_vehicle(canvas, world)
    return canvas


def _first_ground_row(cam: Camera) -> int:
    """The first image row whose pixel centres look down at the ground."""
    return min(max(int(np.floor(cam.horizon + 0.5)), 0), cam.height)


def _sky(canvas: Canvas, world: World, rows: int) -> None:
    if rows <= 0:
        return
    cam = canvas.camera
    region = (slice(0, rows), slice(0, cam.width))
    lighter = np.clip((np.arange(rows, dtype=np.float32) + 0.5) / max(cam.horizon, 1.0), 0, 1)
    zenith, horizon = world.sky
    colour = zenith + (horizon - zenith) * lighter[:, None, None]  # paler towards the horizon
    cloud = np.clip(canvas.noise_patch(region, 11.0, 0.35) * 0.5 + 0.1, 0, 1) * world.clouds
    colour = colour + cloud[..., None] * (np.float32(225.0) - colour)
    canvas.paint(region, np.ones((rows, cam.width), bool), np.inf, SKY, colour)


def _skyline(canvas: Canvas, world: World) -> None:
    depth = world.skyline_z - canvas.camera.z
    for x0, x1, height, label_id, colour in world.skyline:
        (u0, u1), (v1, v0) = canvas.camera.project([x0, x1], [height, 0.0], world.skyline_z)
        shape = canvas.shape()
        if label_id == VEGETATION:
            r = (u1 - u0) / 2
            shape.ellipse((u0 + u1) / 2, v0, r, v0 - v1)
        else:
            shape.rect(u0, v1, u1, v0)
        canvas.fill(shape, depth, label_id, colour, texture=0.1)


def _ground(canvas: Canvas, world: World, first: int) -> None:
    """Ray-cast the ground plane: each pixel below the horizon -> world (X, Z) -> label."""
    cam = canvas.camera
    if first >= cam.height:
        return
    z = cam.focal * cam.elevation / (np.arange(first, cam.height) + 0.5 - cam.horizon)
    big_z = z + cam.z  # world Z per row, decreasing down the image
    x = (z[:, None] * ((np.arange(cam.width) + 0.5 - cam.cx) / cam.focal)[None, :]).astype(
        np.float32
    )
    zz = np.broadcast_to(big_z[:, None], x.shape).astype(np.float32)
    label, tone = _ground_labels(world, x, big_z)
    texture = world.noise[(zz * 6).astype(np.int64) & 255, (x * 6).astype(np.int64) & 255]
    tone *= 1.0 + _GROUND_ROUGHNESS[label] * texture
    paving = (np.modf(np.abs(x) * 1.6)[0] < 0.07) | (np.modf(zz * 1.6)[0] < 0.07)
    tone[paving & (label == SIDEWALK)] *= 0.88
    road = label == ROAD
    if world.wear:
        tone *= _wear(world, x, zz, road)
    base = world.ground_colours[label]
    colour = base * tone[..., None]
    paint = _road_paint(world, x, zz, big_z, road)
    white = _faded_paint(world, x[paint], zz[paint], base[paint]) if world.wear else _WHITE
    colour[paint] = white * tone[paint][:, None]
    colour[x < world.shadow] *= 0.62

    region = (slice(first, cam.height), slice(0, cam.width))
    depth = np.broadcast_to(z[:, None].astype(np.float32), x.shape)
    win = canvas.paint(region, np.ones(x.shape, bool), depth, label, colour)
    canvas.ground[region] = win


def _rows(big_z: np.ndarray, z0: float, z1: float) -> slice:
    """The ground rows (world Z per row in ``big_z``) that see Z in [z0, z1)."""
    inside = np.nonzero((big_z >= z0) & (big_z < z1))[0]
    return slice(inside.min(), inside.max() + 1) if inside.size else slice(0, 0)


def _ground_labels(world: World, x: np.ndarray, big_z: np.ndarray):
    """Label ids of the ground at world (x, Z of each row) -> (labels, tone): the road, the
    bands beside it, cross streets and patches; tone brightens kerb stones and rails."""
    label = np.full(x.shape, ROAD, np.uint8)
    tone = np.ones(x.shape, np.float32)
    for side in (0, 1):
        d = world.road[0] - x if side == 0 else x - world.road[1]
        edge = 0.0
        for label_id, width in world.sides[side]:
            band = (d >= edge) & (d < edge + width)
            label[band] = label_id
            if label_id == SIDEWALK:  # light kerb stones along the inner edge
                tone[band & (d < edge + 0.25)] = 1.2
            edge += width
        label[d >= edge] = world.outer[side]
    for z0, z1 in world.crossings:
        label[_rows(big_z, z0, z1)] = ROAD
    for label_id, x0, x1, z0, z1 in world.patches:
        rs = _rows(big_z, z0, z1)
        inside = (x[rs] >= x0) & (x[rs] < x1)
        label[rs][inside] = label_id
        if label_id == RAIL:  # two steel rails
            rail = np.abs(np.abs(x[rs] - (x0 + x1) / 2) - 0.72) < 0.05
            tone[rs][inside & rail] = 1.5
    return label, tone


def _road_paint(world: World, x, zz, big_z, road) -> np.ndarray:
    """Where the road is painted white: lane lines (not across cross streets) and zebras."""
    paint = np.zeros(x.shape, bool)
    for mx, width, dashed in world.markings:
        line = road & (np.abs(x - mx) < width / 2)
        paint |= line & (np.mod(zz, 9.0) < 3.5) if dashed else line
    for z0, z1 in world.crossings:
        paint[_rows(big_z, z0, z1)] = False
    for z0, z1 in world.zebras:
        rs = _rows(big_z, z0, z1)
        paint[rs] |= road[rs] & (np.mod(x[rs], 1.0) < 0.5)
    return paint


def _wear(world: World, x, zz, road) -> np.ndarray:
    """Tone of a worn road (natural looks): darker tyre tracks in each lane, darker patches of
    newer asphalt where low-frequency noise, read at a scale of metres, is high."""
    tone = np.ones(x.shape, np.float32)
    lane_w = world.ego_lane[1] - world.ego_lane[0]
    phase = np.mod(x - world.road[0], lane_w) / lane_w
    tracks = road & ((np.abs(phase - 0.27) < 0.08) | (np.abs(phase - 0.73) < 0.08))
    tone[tracks] *= 1.0 - 0.1 * world.wear
    big = world.noise[(zz * 0.5).astype(np.int64) & 255, (x * 0.5 + 97).astype(np.int64) & 255]
    tone[road & (big > 1.0)] *= 1.0 - 0.18 * world.wear
    return tone


def _faded_paint(world: World, x, zz, asphalt) -> np.ndarray:
    """Colours (N, 3) of worn road paint at points (x, zz): white, with the asphalt showing
    through unevenly."""
    fine = world.noise[(zz * 3 + 50).astype(np.int64) & 255, (x * 3).astype(np.int64) & 255]
    faded = np.clip(world.wear * (0.3 + 0.25 * fine), 0.0, 0.8)[:, None]
    return _WHITE * (1.0 - faded) + asphalt * faded


def _plane(canvas: Canvas, plane: Plane) -> None:
    """Ray-cast a roadside plane X = plane.x column by column, then its blocks' front faces."""
    if not plane.segments:
        return
    cam = canvas.camera
    du = (np.arange(cam.width) + 0.5 - cam.cx) / cam.focal
    facing = du * plane.x > 0
    z = np.where(facing, plane.x / np.where(facing, du, 1.0), -1.0)
    big_z = z + cam.z
    starts = np.array([s.z0 for s in plane.segments])
    idx = np.clip(np.searchsorted(starts, big_z, "right") - 1, 0, len(starts) - 1)
    segs = plane.segments
    ends = np.array([s.z1 for s in segs])
    valid = facing & (z > NEAR) & (big_z >= starts[idx]) & (big_z < ends[idx])
    if valid.any():
        cols = np.nonzero(valid)[0]
        cs = slice(cols.min(), cols.max() + 1)
        idx, z, big_z, valid = idx[cs], z[cs], big_z[cs], valid[cs]
        height = np.array([s.height for s in segs])[idx]
        rough = np.array([s.roughness for s in segs])[idx]
        bumpy = np.array([s.label_id == VEGETATION for s in segs])[idx]
        wave = canvas.noise[7, (big_z * 2).astype(np.int64) & 255]
        height = np.where(bumpy, height * (1 + 0.12 * wave), height)
        v_top = cam.horizon - cam.focal * (height - cam.elevation) / z
        v_bot = cam.horizon + cam.focal * cam.elevation / z
        r0 = max(int(np.floor(v_top[valid].min())), 0)
        r1 = min(int(np.ceil(v_bot[valid].max())) + 1, cam.height)
        if r1 > r0:
            vc = (np.arange(r0, r1) + 0.5)[:, None]
            mask = valid & (vc >= v_top) & (vc < v_bot)
            y = (cam.elevation - (vc - cam.horizon) * z / cam.focal).astype(np.float32)
            zz = np.broadcast_to(big_z.astype(np.float32), y.shape)
            pattern = np.array([s.pattern for s in segs], np.float32)[idx]
            py, dy, pz, dz, _ = pattern.T
            across = np.modf(np.abs(y) / py)[0] < dy
            along = np.modf(np.abs(zz) / pz)[0] < dz
            windows = np.array([s.windows for s in segs])[idx]
            stripes = np.where(windows, across & along & (y > 2.2), across | along)
            texture = canvas.noise[(y * 5).astype(np.int64) & 255, (zz * 5).astype(np.int64) & 255]
            tone = 1 + rough * texture
            colours = np.array([s.colour for s in segs], np.float32)[idx]
            stripe_colours = np.array([s.stripe_colour for s in segs], np.float32)[idx]
            colours = np.where(stripes[..., None], stripe_colours, colours)
            labels = np.array([s.label_id for s in segs], np.uint8)[idx]
            canvas.paint(
                (slice(r0, r1), cs),
                mask,
                np.broadcast_to(z.astype(np.float32), y.shape),
                np.broadcast_to(labels, y.shape),
                colours * tone[..., None],
            )
    outward = 1.0 if plane.x > 0 else -1.0
    for seg in segs:
        if seg.z0 - cam.z <= NEAR:
            continue
        (u0, u1), (v1, v0) = cam.project(
            [plane.x, plane.x + outward * 40.0], [seg.height, 0.0], seg.z0
        )
        shape = canvas.shape().rect(min(u0, u1), v1, max(u0, u1), v0)
        canvas.fill(shape, seg.z0 - cam.z, seg.label_id, seg.colour * 0.78, texture=seg.roughness)


def _bridge(canvas: Canvas, world: World) -> None:
    z, y0, y1 = world.bridge
    cam = canvas.camera
    if z - cam.z <= NEAR:
        return
    colour = world.palette.base[BRIDGE]
    _, (v1, v0) = cam.project(0.0, np.array([y1, y0]), z)
    shape = canvas.shape().rect(0, v1, cam.width, v0)
    for x in (world.road[0] - 1.0, world.road[1] + 0.2):
        (u0, u1), (_, vb) = cam.project([x, x + 0.8], [y0, 0.0], z)
        shape.rect(u0, v0 - 1, u1, vb)
    canvas.fill(shape, z - cam.z, BRIDGE, colour, texture=0.1)


def _ego_vehicle(canvas: Canvas, world: World) -> None:
    """The Cityscapes camera's view: the car's bonnet, rectification borders, out-of-roi rows."""
    cam = canvas.camera
    h, w = cam.height, cam.width
    top, curve = world.hood
    across = (np.arange(w) + 0.5 - w / 2) / (w / 2)
    edge = h * (top + curve * across**2)
    r0 = min(int(edge.min()), h - 1)
    rows = (np.arange(r0, h) + 0.5)[:, None]
    shine = 0.75 + 0.6 * np.exp(-np.maximum(rows - edge, 0) / (0.04 * h))
    colour = world.palette.base[EGO] * shine[..., None].astype(np.float32)
    canvas.paint((slice(r0, h), slice(0, w)), rows >= edge, 0.0, EGO, colour)
    # rectification borders: thin strips down the sides, widening towards the bottom
    rows = (np.arange(h) + 0.5)[:, None]
    strip = int(np.ceil(4 * max(2.0, 0.008 * w)))
    width = max(2.0, 0.008 * w) * (1 + 3 * (rows / h) ** 4)
    cols = (np.arange(strip) + 0.5)[None, :]
    for cs in (slice(0, strip), slice(w - strip, w)):
        inside = cols < width if cs.start == 0 else cols[:, ::-1] < width
        canvas.paint((slice(0, h), cs), inside, 0.0, BORDER, world.palette.base[BORDER])
    r0 = h - max(1, round(0.012 * h))
    canvas.paint(
        (slice(r0, h), slice(0, w)),
        np.ones((h - r0, w), bool),
        0.0,
        OUT_OF_ROI,
        world.palette.base[OUT_OF_ROI],
    )
