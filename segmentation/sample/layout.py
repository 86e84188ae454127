"""Random street layouts: the road, its sides, the roadside buildings and the far skyline.

``sample_world`` draws a whole ``World`` from one random generator; ``population``
adds the things standing in it.
"""

from __future__ import annotations

import numpy as np

from segmentation.sample.population import place_things
from segmentation.sample.render import periodic_noise
from segmentation.sample.world import (
    BUILDING,
    FENCE,
    GROUND,
    GUARD_RAIL,
    PARKING,
    RAIL,
    ROAD,
    SIDEWALK,
    TERRAIN,
    VEGETATION,
    WALL,
    Palette,
    Plane,
    Segment,
    Style,
    World,
    pick_one,
)


def _segment(rng, pal: Palette, kind: int, z0: float, z1: float, tall: float) -> Segment:
    height, pattern, windows, roughness = _segment_shape(rng, kind, tall)
    colour, stripes = pal.facade(kind, pattern[4])
    return Segment(z0, z1, kind, height, colour, pattern, stripes, windows, roughness)


def _segment_shape(rng, kind: int, tall: float) -> tuple[float, tuple, bool, float]:
    """(height, stripe pattern, windows, roughness) of a roadside segment of ``kind``."""
    if kind == BUILDING:
        floor, spacing = rng.uniform(2.8, 3.6), rng.uniform(1.8, 3.4)
        pattern = (
            floor,
            rng.uniform(0.35, 0.6),
            spacing,
            rng.uniform(0.35, 0.65),
            rng.uniform(0.45, 0.75),
        )
        return rng.uniform(4.0, 18.0) * tall, pattern, True, 0.06
    if kind == WALL:
        pattern = (rng.uniform(0.4, 0.8), 0.1, rng.uniform(2.0, 4.0), 0.05, 0.8)
        return rng.uniform(1.2, 3.2), pattern, False, 0.08
    if kind == FENCE:
        pattern = (rng.uniform(0.8, 1.4), 0.12, rng.uniform(0.15, 0.4), 0.4, 0.65)
        return rng.uniform(1.0, 2.3), pattern, False, 0.08
    if kind == GUARD_RAIL:
        return 0.85, (0.85, 0.45, 2.0, 0.06, 0.7), False, 0.05
    height = rng.uniform(1.5, 4.0) if rng.random() < 0.5 else rng.uniform(5.0, 12.0) * tall
    return height, (1.0, 0.0, 1.0, 0.0, 1.0), False, 0.28


def _plane_segments(rng, pal, end, crossings, force=None, tall=1.0):
    """Front and back segments of one side of the street, with gaps at the cross streets."""
    front, back = [], []
    z = -10.0
    while z < end:
        z1 = min(z + rng.uniform(6.0, 28.0), end)
        gap = next(((c0, c1) for c0, c1 in crossings if z1 > c0 - 1.5 and z < c1 + 1.5), None)
        if gap is not None and z < gap[0] - 1.5:
            z1 = gap[0] - 1.5
        elif gap is not None:
            z = gap[1] + 1.5
            continue
        kind = pick_one(
            rng,
            {BUILDING: 0.42, VEGETATION: 0.16, WALL: 0.11, FENCE: 0.11, GUARD_RAIL: 0.03, 0: 0.17},
        )
        if force is not None and z <= 14.0 < z1:
            kind = force
        if kind:
            front.append(_segment(rng, pal, kind, z, z1, tall))
        if kind != BUILDING:
            behind = pick_one(rng, {BUILDING: 0.55, VEGETATION: 0.35, 0: 0.1})
            if behind:
                back.append(_segment(rng, pal, behind, z, z1, tall))
        z = z1
    return front, back


def _bands(road: tuple[float, float], bands, side: int) -> list[tuple[int, float, float]]:
    """(label, x0, x1) of the bands of one side (0 left, 1 right), from the road outward."""
    out, edge = [], road[side]
    for label_id, width in bands:
        x0, x1 = (edge - width, edge) if side == 0 else (edge, edge + width)
        out.append((label_id, x0, x1))
        edge = x0 if side == 0 else x1
    return out


def _markings(rng: np.random.Generator, mode: str, n: int, x0: float, lane_w: float, road) -> list:
    """Lane lines (x, width, dashed) of a road of n lanes from x0."""
    if mode == "random":
        mode = pick_one(rng, {"none": 0.2, "centre": 0.4, "all": 0.4})
    markings = []
    if mode != "none":
        w = rng.uniform(0.12, 0.18)
        for k in range(1, n):
            divides = k == n // 2  # the line between the two directions
            if divides or mode == "all":
                markings.append((x0 + k * lane_w, w, not divides or rng.random() < 0.5))
        if mode == "all" or rng.random() < 0.5:
            markings += [(road[0] + 0.3, w, False), (road[1] - 0.3, w, False)]
    return markings


def _roadsides(rng: np.random.Generator, style: Style, featured: str | None) -> tuple[list, list]:
    """The bands beside each side of the road (parking, terrain, sidewalk...) and what lies
    beyond them."""
    sides, outer = [], []
    for side in (0, 1):
        bands = []
        if rng.random() < 0.25 * style.busy:
            bands.append((PARKING, rng.uniform(2.0, 2.5)))
        elif rng.random() < 0.2 or (featured == "terrain" and side == 1):
            bands.append((TERRAIN, rng.uniform(0.8, 2.5)))
        if rng.random() < style.sidewalk_prob:
            bands.append((SIDEWALK, rng.uniform(1.8, 5.0)))
        if not bands or bands[-1][0] != SIDEWALK:
            bands.append((TERRAIN if rng.random() < 0.7 else GROUND, rng.uniform(0.5, 3.0)))
        sides.append(bands)
        outer.append(pick_one(rng, {TERRAIN: 0.6, GROUND: 0.25, SIDEWALK: 0.15}))
    return sides, outer


def _crossings(rng: np.random.Generator) -> tuple[list, list]:
    """Cross streets and zebra crossings: (near, far) distances along the road."""
    crossings, zebras = [], []
    if rng.random() < 0.35:
        c0 = rng.uniform(16.0, 45.0)
        crossings.append((c0, c0 + rng.uniform(8.0, 14.0)))
        if rng.random() < 0.7:
            zebras.append((c0 - 4.5, c0 - 1.0))
    elif rng.random() < 0.15:
        zb = rng.uniform(12.0, 35.0)
        zebras.append((zb, zb + 3.5))
    return crossings, zebras


def _facades(rng, pal, abs_bands, end: float, crossings, featured, tall: float) -> list:
    """Two rows of planes (buildings, walls, fences, vegetation) along each side."""
    force = {"wall": WALL, "fence": FENCE}.get(featured or "")
    forced_side = int(rng.integers(2))
    planes = []
    for side in (0, 1):
        front_x = abs_bands[side][-1][1 if side == 0 else 2]
        sign = -1.0 if side == 0 else 1.0
        front, back = _plane_segments(
            rng, pal, end, crossings, force if side == forced_side else None, tall
        )
        planes.append(Plane(front_x, front))
        planes.append(Plane(front_x + sign * rng.uniform(3.0, 12.0), back))
    return planes


def _skyline(rng: np.random.Generator, pal, end: float, tall: float, haze) -> tuple[list, float]:
    skyline_z = end + rng.uniform(15.0, 60.0)
    skyline, sx = [], -0.9 * skyline_z
    while sx < 0.9 * skyline_z:
        width = rng.uniform(8.0, 35.0)
        kind = BUILDING if rng.random() < 0.7 else VEGETATION
        colour = pal.far(pal.facade(kind, 1.0)[0], haze)
        skyline.append((sx, sx + width, rng.uniform(5.0, 22.0) * tall, kind, colour))
        sx += width
    return skyline, skyline_z


def sample_world(rng: np.random.Generator, style: Style, featured: str | None = None) -> World:
    """A random street in ``style``; ``featured`` (one of FEATURES) is made sure to be in view.
    The random draws happen in a fixed order: the same generator gives the same world."""
    # Colours come from a generator of their own: the looks never change the geometry.
    pal = Palette(style.looks, np.random.default_rng(rng.integers(2**63)))
    lane_w = rng.uniform(3.0, 3.6)
    n = max(int(rng.choice(style.lanes)), 2 if featured == "train" else 1)
    ego = int(rng.integers(n // 2, n)) if n > 1 else 0
    x0 = -(ego + 0.5) * lane_w + rng.uniform(-0.35, 0.35)
    road = (x0, x0 + n * lane_w)
    lane_x = [x0 + (k + 0.5) * lane_w for k in range(n)]
    markings = _markings(rng, style.markings, n, x0, lane_w, road)
    sides, outer = _roadsides(rng, style, featured)
    abs_bands = [_bands(road, sides[s], s) for s in (0, 1)]
    crossings, zebras = _crossings(rng)
    end = rng.uniform(70.0, 110.0)
    planes = _facades(rng, pal, abs_bands, end, crossings, featured, style.tall)
    sky = pal.sky()
    skyline, skyline_z = _skyline(rng, pal, end, style.tall, sky[1])
    ground_colours = pal.base.copy()
    for label_id in (ROAD, SIDEWALK, PARKING, RAIL, TERRAIN, GROUND):
        ground_colours[label_id] = pal.pick(label_id, 6.0)
    world = World(
        style=style,
        palette=pal,
        noise=periodic_noise(rng),
        horizon=rng.uniform(*style.horizon),
        cx=rng.uniform(0.42, 0.58),
        road=road,
        ego_lane=(x0 + ego * lane_w, x0 + (ego + 1) * lane_w),
        markings=markings,
        sides=sides,
        outer=tuple(outer),
        patches=[],
        crossings=crossings,
        zebras=zebras,
        planes=planes,
        skyline=skyline,
        skyline_z=skyline_z,
        ground_colours=ground_colours,
        sky=sky,
        clouds=rng.uniform(0.0, 0.45),
        shadow=road[0] + rng.uniform(-2, n * lane_w) if rng.random() < 0.5 else -np.inf,
        bridge=None,
        hood=(rng.uniform(0.86, 0.91), rng.uniform(0.02, 0.05)) if style.ego_vehicle else None,
        wear=pal.wear(),
    )
    if rng.random() < style.bridges:
        y0 = rng.uniform(4.8, 6.5)
        world.bridge = (rng.uniform(30.0, 60.0), y0, y0 + rng.uniform(1.0, 1.8))
    place_things(rng, world, abs_bands, lane_x, ego, featured)
    return world
