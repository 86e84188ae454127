"""The things standing in a synthetic street: traffic, parked cars, people, poles, trees, clutter.

``place_things`` fills ``World.things`` at random, keeping out of the camera's own lane so the
road ahead stays visible.
"""

from __future__ import annotations

import numpy as np

from segmentation.sample import things
from segmentation.sample.world import (
    DYNAMIC,
    GROUND,
    PARKING,
    RAIL,
    SIDEWALK,
    STATIC,
    TERRAIN,
    VEGETATION,
    Palette,
    World,
    pick_one,
)


def _walk(bands: list[tuple[int, float, float]]) -> tuple[float, float]:
    """Where people walk on one side: the sidewalk, else the outermost band."""
    return next(((x0, x1) for lab, x0, x1 in bands if lab == SIDEWALK), bands[-1][1:])


def _vehicle(rng, pal: Palette, label_id: int, x: float, z: float, oncoming: bool):
    if label_id in (things.MOTORCYCLE, things.BICYCLE):
        yaw = rng.uniform(0.3, 0.7) * rng.choice((-1, 1)) + (np.pi if oncoming else 0.0)
        colour = pal.pick(label_id)
        rider, rider_trim = pal.person(things.RIDER)
        trim = pal.trim(label_id, colour) | {f"rider_{k}": v for k, v in rider_trim.items()}
        return things.TwoWheeler(label_id, x, z, yaw, colour, rider, trim=trim)
    length, width, height = {
        things.CAR: (rng.uniform(3.8, 4.8), rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.6)),
        things.TRUCK: (rng.uniform(6.0, 9.0), 2.5, rng.uniform(3.0, 3.8)),
        things.BUS: (rng.uniform(11.0, 13.0), 2.55, rng.uniform(3.0, 3.3)),
        things.TRAIN: (rng.uniform(20.0, 30.0), 2.6, rng.uniform(3.3, 3.6)),
    }[label_id]
    if label_id == things.CAR and rng.random() < 0.15:  # vans
        length, height = rng.uniform(4.8, 5.4), rng.uniform(1.9, 2.1)
    colour = pal.pick(label_id)
    trim = pal.trim(label_id, colour)
    return things.Vehicle(label_id, x, z, length, width, height, colour, oncoming, trim=trim)


def _pole(rng, pal: Palette, x: float, z: float, towards: float, kind: str):
    """A bare pole, street lamp, sign post or traffic-light post; ``towards`` points at the road."""
    grey = pal.pick(things.POLE, 6.0)
    if kind == "lamp":
        return things.Pole(x, z, rng.uniform(6.5, 9.0), grey, towards * rng.uniform(1.2, 2.5))
    if kind == "sign":
        height, signs = rng.uniform(2.6, 3.6), []
        for k in range(int(rng.integers(1, 3))):
            size = rng.uniform(0.55, 0.85)
            signs.append(_sign(rng, pal, height - 0.4 - 0.9 * k, size))
        return things.Pole(x, z, height, grey, 0.0, signs)
    if kind == "light":
        height = rng.uniform(3.2, 4.5)
        signs = [_light(rng, pal, height - 0.55, 0.0)]
        if rng.random() < 0.4:
            signs.append(_sign(rng, pal, 2.3, 0.6))
        return things.Pole(x, z, height, grey, 0.0, signs)
    if kind == "overhead":
        height, arm = rng.uniform(5.5, 6.5), towards * rng.uniform(3.0, 5.0)
        signs = [_light(rng, pal, height - 0.7, 0.9 * arm), _light(rng, pal, 3.4, 0.0)]
        return things.Pole(x, z, height, grey, arm, signs)
    return things.Pole(x, z, rng.uniform(2.5, 5.0), grey)


def _sign(rng, pal: Palette, y: float, size: float) -> tuple:
    """A traffic sign on a pole (see ``things.Pole.signs``): a random form, in its colours."""
    form = int(rng.integers(4))
    return ("sign", y, 0.0, size, form, pal.sign(form))


def _light(rng, pal: Palette, y: float, dx: float) -> tuple:
    """A traffic light on a pole (or ``dx`` along its arm) with one random lamp lit."""
    lit = int(rng.integers(3))
    return ("light", y, dx, 0.0, lit, pal.light(lit))


def place_things(rng, world: World, abs_bands, lane_x, ego, featured) -> None:
    """Add vehicles, people, poles, trees and clutter to ``world``.

    abs_bands: (label, x0, x1) bands of each side of the road; lane_x: lane centres; ego: the
    camera's lane; featured: one of ``FEATURES`` to make sure of (or None).
    """
    world.speed = rng.uniform(0.5, 0.9)  # the traffic keeps pace with the camera
    blocked = _parked_cars(rng, world, abs_bands, len(lane_x))
    _traffic(rng, world, lane_x, ego, blocked, featured)
    walks = [_walk(abs_bands[s]) for s in (0, 1)]
    _people(rng, world, walks, featured)
    _poles(rng, world, walks, featured)
    _trees(rng, world, walks)
    _clutter(rng, world, walks)
    if world.style.ego_vehicle and not any(
        getattr(t, "label_id", 0) == things.CAR for t in world.things
    ):
        car = _vehicle(
            rng, world.palette, things.CAR, world.road[1] - 1.1, rng.uniform(8, 20), False
        )
        world.things.append(car)


def _parked_cars(rng, world: World, abs_bands, n: int) -> list[bool]:
    """Rows of parked cars in parking bands or along the kerb; -> whether each side's kerb
    lane is taken by them."""
    blocked = [False, False]
    for side in (0, 1):
        parking = [(x0, x1) for lab, x0, x1 in abs_bands[side] if lab == PARKING]
        inward = 1.0 if side == 0 else -1.0
        x = float(np.mean(parking[0])) if parking else world.road[side] + inward * 1.1
        if (not parking and (abs(x) < 2.2 or n == 1)) or rng.random() > 0.6:
            continue
        blocked[side] = not parking
        z = rng.uniform(2.0, 10.0)
        while z < 70.0:
            oncoming = side == 0 and rng.random() < 0.7
            car = _vehicle(rng, world.palette, things.CAR, x, z, oncoming)
            if rng.random() < 0.45 * world.style.busy:
                world.things.append(car)
            z += car.length + rng.uniform(0.8, 8.0)
    return blocked


def _traffic(rng, world: World, lane_x, ego, blocked, featured) -> None:
    """Vehicles driving in the lanes; the left half of the lanes is oncoming traffic."""
    n = len(lane_x)
    lanes = [k for k in range(n) if not (k == 0 and blocked[0] or k == n - 1 and blocked[1])]
    lanes = lanes or [ego]
    wanted = {"train": things.TRAIN, "bus": things.BUS, "truck": things.TRUCK}.get(featured or "")
    wanted = things.MOTORCYCLE if featured == "motorcycle" else wanted
    # A tram runs on rails in a lane of its own (not the camera's, where there is another).
    others = [k for k in lanes if k != ego] if wanted == things.TRAIN else []
    wanted_lane = (others or lanes)[int(rng.integers(len(others or lanes)))]
    mix = {things.CAR: 0.62, things.TRUCK: 0.12, things.BUS: 0.1, things.MOTORCYCLE: 0.09}
    mix[things.BICYCLE] = 0.07
    for k in lanes:
        oncoming = n > 1 and k < n // 2
        kinds = [wanted] if wanted is not None and k == wanted_lane else []
        kinds += [pick_one(rng, mix) for _ in range(int(rng.poisson(0.9 * world.style.busy)))]
        z = rng.uniform(10.0 if k == ego else 6.0, 22.0)
        for kind in kinds:
            if kind == things.TRAIN:
                world.patches.append((RAIL, lane_x[k] - 0.85, lane_x[k] + 0.85, -20.0, 200.0))
            x = lane_x[k] + rng.uniform(-0.3, 0.3)
            thing = _vehicle(rng, world.palette, kind, x, z, oncoming)
            pace = rng.uniform(-1.0, -0.6) if oncoming else rng.uniform(0.7, 1.1)
            thing.speed = world.speed * pace
            world.things.append(thing)
            z += getattr(thing, "length", 2.0) + rng.uniform(4.0, 25.0)
            if z > 70.0:
                break


def _people(rng, world: World, walks, featured) -> None:
    """Pedestrians on the sidewalks and zebra crossings, cyclists, parked two-wheelers."""
    pal, road, add = world.palette, world.road, world.things.append
    count = int(rng.poisson(4.0 * world.style.busy)) + (1 if world.style.ego_vehicle else 0)
    for _ in range(count):
        wx0, wx1 = walks[int(rng.integers(2))]
        x = rng.uniform(wx0 + 0.3, max(wx1 - 0.3, wx0 + 0.31))
        add(_person(rng, pal, x, rng.uniform(5.0, 38.0), walking=True))
    for zb0, zb1 in world.zebras:
        for _ in range(int(rng.poisson(1.2))):
            z = rng.uniform(zb0 + 0.5, zb1 - 0.5)
            add(_person(rng, pal, rng.uniform(*road), z, walking=False))
    if featured == "bicycle" or rng.random() < 0.45 * world.style.busy:
        add(_vehicle(rng, pal, things.BICYCLE, road[1] - 0.9, rng.uniform(7.0, 28.0), False))
    parked = [things.BICYCLE] * int(rng.poisson(0.4)) + [things.MOTORCYCLE] * int(rng.poisson(0.25))
    for kind in parked:  # seen from the side
        wx0, wx1 = walks[int(rng.integers(2))]
        z, yaw = rng.uniform(6.0, 30.0), np.pi / 2 * rng.choice((-1, 1))
        colour = pal.pick(kind)
        trim = pal.trim(kind, colour)
        add(things.TwoWheeler(kind, (wx0 + wx1) / 2, z, yaw, colour, trim=trim))


def _poles(rng, world: World, walks, featured) -> None:
    """Poles along both kerbs, traffic lights at the crossings."""
    kerbs = [walks[0][1], walks[1][0]]  # the road-side edges of where people walk
    for side in (0, 1):
        towards = 1.0 if side == 0 else -1.0  # from the pole to the road
        x = kerbs[side] - towards * 0.5
        z = rng.uniform(2.0, 12.0)
        while z < 75.0:
            kind = pick_one(rng, {"lamp": 0.25, "sign": 0.35, "light": 0.3, "bare": 0.1})
            world.things.append(_pole(rng, world.palette, x, z, towards, kind))
            z += rng.uniform(10.0, 28.0)
        for c0, _ in world.crossings:
            kind = "overhead" if side else "light"
            world.things.append(_pole(rng, world.palette, x, c0 - 1.5, towards, kind))
    if featured == "traffic light":
        side = int(rng.integers(2))
        towards = 1.0 if side == 0 else -1.0
        x, z = kerbs[side] - towards * 0.5, rng.uniform(10.0, 22.0)
        world.things.append(_pole(rng, world.palette, x, z, towards, "light"))


def _trees(rng, world: World, walks) -> None:
    """Rows of street trees, each in a small patch of terrain."""
    for side in (0, 1):
        if rng.random() > 0.45:
            continue
        x = sum(walks[side]) / 2
        z = rng.uniform(3.0, 12.0)
        while z < 60.0:
            count = int(rng.integers(3, 6))
            blobs = rng.uniform((-1.2, 0.6, 1.0), (1.2, 2.2, 2.0), size=(count, 3))  # dx, dy, r
            colour = world.palette.pick(VEGETATION, 12.0)
            world.things.append(things.Tree(x, z, rng.uniform(2.0, 3.2), blobs, colour))
            world.patches.append((TERRAIN, x - 0.6, x + 0.6, z - 0.6, z + 0.6))
            z += rng.uniform(7.0, 14.0)


# Sizes (width, height, depth in m) of static street furniture: bin, bench, column, box.
_FURNITURE = ((0.6, 1.1, 0.6), (0.6, 0.9, 1.8), (1.2, 2.8, 1.2), (1.0, 1.2, 1.5))


def _clutter(rng, world: World, walks) -> None:
    """Street furniture (static), a container (dynamic), driveways (ground) on the sidewalks."""
    count = int(rng.poisson(1.5 * world.style.busy))
    boxes = [(STATIC, _FURNITURE[rng.integers(len(_FURNITURE))]) for _ in range(count)]
    if rng.random() < 0.35:
        boxes.append((DYNAMIC, (1.2, 1.4, 1.0)))
    for label_id, (w, h, d) in boxes:
        wx0, wx1 = walks[int(rng.integers(2))]
        x = rng.uniform(wx0, max(wx1 - w, wx0 + 0.01))
        z = rng.uniform(5.0, 40.0)
        colour = world.palette.pick(label_id)
        world.things.append(things.Clutter(label_id, (x, x + w, 0.0, h, z, z + d), colour))
    for side in (0, 1):
        if rng.random() < 0.3:
            wx0, wx1 = walks[side]
            z0 = rng.uniform(8.0, 50.0)
            world.patches.append((GROUND, wx0, wx1, z0, z0 + rng.uniform(3.0, 6.0)))


def _person(rng, pal: Palette, x: float, z: float, walking: bool) -> things.Person:
    colour, trim = pal.person(things.PERSON)
    speed = rng.uniform(-0.08, 0.08) if walking else 0.0  # metres per video frame
    height, stride = rng.uniform(1.55, 1.95), rng.uniform(-0.35, 0.35)
    return things.Person(x, z, height, colour, stride, speed, trim=trim)
