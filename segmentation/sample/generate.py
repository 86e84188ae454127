"""Writing the sample trees: scenes drawn by this package, saved in the exact Cityscapes, KITTI
road, KITTI semantics, BDD100K and Mapillary Vistas layouts.

The scenes are procedural (a street in one-point perspective with buildings, vegetation, traffic,
people, poles, signs and lights), painted in natural colours with texture, lighting and noise, so
that a model learns them from shapes and context, as on real images. ``--looks cityscapes``
paints each class in its Cityscapes label colour instead, an easy task that a colour lookup
largely solves; the labels are the same in both looks. Everything follows from ``seed``: the
same arguments give byte-identical files.

    python -m segmentation.sample cityscapes DIR [--height 128 --width 256 --looks natural ...]
    python -m segmentation.sample kitti DIR [--scale 0.25 ...]
    python -m segmentation.sample kitti_semantics DIR [--scale 0.25 ...]
    python -m segmentation.sample bdd100k DIR [--layout current|original --scale 0.1 ...]
    python -m segmentation.sample mapillary DIR [--version v1.2|v2.0|both --scale 0.05 ...]
    python -m segmentation.sample folder DIR [--mask-format index|rgb ...]   (sample/folder.py)

The command line is in sample/cli.py.

File names and folders follow the real datasets' (see docs/data.md).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import id2label, labels

from segmentation.errors import UserError
from segmentation.sample.layout import sample_world
from segmentation.sample.output import Summary, prepare_root
from segmentation.sample.render import Camera, finish_image
from segmentation.sample.street import make_camera, render_world
from segmentation.sample.world import CITYSCAPES, FEATURES, KITTI, LOOKS, ROAD, Style

# Cities of each split. The original project held out ulm, bremen and aachen of the train cities as
# its validation set; hamburg and zurich then stay for training.
CITIES = {
    "train": ("aachen", "bremen", "hamburg", "ulm", "zurich"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld"),
}
TRAIN_EXTRA_CITIES = ("augsburg", "bad-honnef")
VIDEO_SEQUENCES = ("stuttgart_00", "stuttgart_01", "stuttgart_02")
KITTI_CATEGORIES = ("um", "umm", "uu")
# Image sizes (height, width) of KITTI road, before --scale.
KITTI_SIZES = ((370, 1224), (374, 1238), (375, 1242), (376, 1241))
_FRAME = 19  # Cityscapes' annotated frame is the 20th of each snippet: city_000123_000019

_COLOURS = np.zeros((256, 3), np.uint8)
for _label in labels:
    if _label.id >= 0:
        _COLOURS[_label.id] = _label.color


def _rng(seed: int, key: str) -> np.random.Generator:
    """One generator per image, from the seed and the image's name: images do not depend on
    each other, so changing one count leaves the other images as they were."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 0:
            raise UserError(f"{name} must be 0 or more, got {value}")


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write an image given in RGB(A) order (cv2 stores BGR) or a single channel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = image[..., [2, 1, 0, 3][: image.shape[2]]]
    if not cv2.imwrite(str(path), np.ascontiguousarray(image)):
        raise UserError(f"could not write {path}: check the folder is writable and has space")


def _write_polygons(path: Path, height: int, width: int, objects: list[dict]) -> None:
    """The Cityscapes polygons JSON, one object per line (json's indent is slow on big files)."""
    lines = ",\n".join("        " + json.dumps(o, separators=(", ", ": ")) for o in objects)
    text = f'{{\n    "imgHeight": {height},\n    "imgWidth": {width},\n    "objects": [\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + lines + ("\n" if lines else "") + "    ]\n}\n")


def label_polygons(instance_ids: np.ndarray, tolerance: float = 0.7) -> list[dict]:
    """Cityscapes polygon objects that redraw an instanceIds map when filled in order.

    One polygon per connected region of each instance (or each label, for classes without
    instances), largest first, so smaller regions inside larger ones are drawn over them.
    """
    objects = []
    for value in np.unique(instance_ids):
        label_id = int(value // 1000 if value >= 1000 else value)
        if label_id == 0:
            continue
        mask = (instance_ids == value).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            approx = cv2.approxPolyDP(contour, tolerance, True)
            points = (approx if len(approx) >= 3 else contour).reshape(-1, 2)
            if len(points) < 3:  # a region one pixel thin: a degenerate polygon draws it
                points = np.resize(points, (3, 2))
            objects.append((cv2.contourArea(contour), id2label[label_id].name, points.tolist()))
    objects.sort(key=lambda o: -o[0])
    return [{"label": name, "polygon": points} for _, name, points in objects]


def coarse_labels(label_ids: np.ndarray, margin: int) -> tuple[np.ndarray, list[dict]]:
    """A coarse annotation of a fine one: regions shrunk by ``margin`` pixels (the boundaries
    become 0 = unlabeled) and outlined by rough polygons; thin or small regions are dropped."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    objects = []
    for value in np.unique(label_ids):
        if value == 0:
            continue
        inner = cv2.erode((label_ids == value).astype(np.uint8), kernel)
        contours, _ = cv2.findContours(inner, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            area = cv2.contourArea(contour)
            approx = cv2.approxPolyDP(contour, float(margin), True)
            if area >= 4 * margin * margin and len(approx) >= 3:
                objects.append((area, int(value), approx.reshape(-1, 2)))
    objects.sort(key=lambda o: -o[0])
    coarse = np.zeros_like(label_ids)
    for _, value, points in objects:
        cv2.fillPoly(coarse, [points.astype(np.int32)], int(value))
    polygons = [{"label": id2label[v].name, "polygon": p.tolist()} for _, v, p in objects]
    return coarse, polygons


def _write_annotation(stem: Path, kind: str, label_ids, instance_ids, polygons) -> int:
    """Write stem_{kind}_labelIds/color/instanceIds.png and stem_{kind}_polygons.json."""
    h, w = label_ids.shape
    colour = np.concatenate([_COLOURS[label_ids], np.full((h, w, 1), 255, np.uint8)], axis=2)
    # The official color files are RGBA (cityscapesscripts' json2labelImg), opaque.
    _write_png(stem.with_name(f"{stem.name}_{kind}_labelIds.png"), label_ids)
    _write_png(stem.with_name(f"{stem.name}_{kind}_color.png"), colour)
    _write_png(
        stem.with_name(f"{stem.name}_{kind}_instanceIds.png"), instance_ids.astype(np.uint16)
    )
    _write_polygons(stem.with_name(f"{stem.name}_{kind}_polygons.json"), h, w, polygons)
    return 4


def _render(world, camera: Camera, rng, frame: int = 0):
    canvas = render_world(world, camera, frame)
    return finish_image(canvas.rgb, rng, camera.height), canvas


def generate_cityscapes(
    root,
    *,
    height: int = 128,
    width: int = 256,
    train_per_city: int = 8,
    val_per_city: int = 4,
    test_per_city: int = 2,
    video_frames: int = 12,
    coarse: int = 0,
    seed: int = 0,
    looks: str = "natural",
    overwrite: bool = False,
) -> Summary:
    """Write a synthetic Cityscapes tree under ``root`` (see the module docstring).

    leftImg8bit/{train,val,test}/{city}/ images with gtFine/ labelIds, color (RGBA),
    instanceIds (16-bit) and polygons; test labels are all zero like the real test set.
    ``video_frames`` frames per demoVideo sequence (stuttgart_00..02, frames from 1).
    ``coarse`` > 0 adds gtCoarse/ for train and val, and that many train_extra images per
    train_extra city (with gtCoarse only). ``looks``: "natural" colours or "cityscapes" (each
    class in its label colour); the labels do not depend on it. Writing into a non-empty
    ``root`` needs ``overwrite``.
    """
    style = _cityscapes_style(height, width, looks)
    _check_counts(
        train_per_city=train_per_city,
        val_per_city=val_per_city,
        test_per_city=test_per_city,
        video_frames=video_frames,
        coarse=coarse,
        seed=seed,
    )
    root = prepare_root(root, overwrite)
    summary = Summary("Cityscapes", root)
    shape = (height, width)
    margin = max(1, round(height / 64)) if coarse else 0
    per_city = {"train": train_per_city, "val": val_per_city, "test": test_per_city}
    if coarse:
        per_city["train_extra"] = coarse
    for split, count in per_city.items():
        cities = TRAIN_EXTRA_CITIES if split == "train_extra" else CITIES[split]
        summary.images[split] = len(cities) * count
        for c, city in enumerate(cities):
            for i in range(count):
                # Cycle the rarer classes through the images so every city has each of them.
                featured = FEATURES[(i + 3 * c) % len(FEATURES)]
                name = f"{city}_{i:06d}_{_FRAME:06d}"
                args = (root, style, split, city, name, shape, featured, seed, margin)
                summary.files += _cityscapes_image(*args)
    summary.images["demoVideo"] = len(VIDEO_SEQUENCES) * video_frames
    if video_frames:
        for s, sequence in enumerate(VIDEO_SEQUENCES):
            args = (root, style, sequence, shape, video_frames, FEATURES[s], seed)
            summary.files += _demo_video(*args)
    return summary


def _cityscapes_style(height: int, width: int, looks: str) -> Style:
    """The Cityscapes street style in ``looks``, once the image size and looks are checked."""
    if height < 32 or width < 32:
        raise UserError(f"images must be at least 32x32 pixels, got {height}x{width}")
    if looks not in LOOKS:
        raise UserError(f"looks must be one of {', '.join(LOOKS)}, got {looks!r}")
    return replace(CITYSCAPES, looks=looks)


def _cityscapes_image(
    root: Path, style: Style, split, city, name, shape, featured, seed, margin
) -> int:
    """One image with its gtFine (dummy zeros for test) and, with ``margin``, its gtCoarse
    (only gtCoarse for train_extra); returns the number of files written."""
    rng = _rng(seed, f"cityscapes/{split}/{name}")
    world = sample_world(rng, style, featured)
    image, canvas = _render(world, make_camera(world, *shape), rng)
    _write_png(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", image)
    files = 1
    fine_stem = root / "gtFine" / split / city / name
    if split == "test":  # dummy labels, as in the real test set
        zeros = np.zeros(shape, np.uint8)
        return files + _write_annotation(fine_stem, "gtFine", zeros, zeros, [])
    if split != "train_extra":
        polygons = label_polygons(canvas.instance)
        files += _write_annotation(fine_stem, "gtFine", canvas.label, canvas.instance, polygons)
    if margin:
        rough, polygons = coarse_labels(canvas.label, margin)
        stem = root / "gtCoarse" / split / city / name
        files += _write_annotation(stem, "gtCoarse", rough, rough, polygons)
    return files


def _demo_video(
    root: Path, style: Style, sequence: str, shape, frames: int, featured: str, seed: int
) -> int:
    """Frames 1..frames of one demoVideo sequence: one street, the camera driving along it."""
    world = sample_world(_rng(seed, f"cityscapes/demoVideo/{sequence}"), style, featured)
    for frame in range(frames):
        camera = make_camera(world, *shape, z=world.speed * frame)
        canvas = render_world(world, camera, frame)
        # The same light in every frame of a sequence; only the sensor noise changes.
        light = _rng(seed, f"cityscapes/demoVideo/{sequence}/light")
        noise = _rng(seed, f"cityscapes/demoVideo/{sequence}/{frame}")
        image = finish_image(canvas.rgb, light, shape[0], noise)
        name = f"{sequence}_000000_{frame + 1:06d}_leftImg8bit.png"
        _write_png(root / "leftImg8bit" / "demoVideo" / sequence / name, image)
    return frames


_MAGENTA, _RED = np.array([255, 0, 255], np.uint8), np.array([255, 0, 0], np.uint8)


def _kitti_ground_truth(world, canvas, rng) -> tuple[np.ndarray, np.ndarray]:
    """Road and ego-lane ground truth as KITTI colours (RGB): magenta road (or ego lane), red
    other valid pixels, black outside the valid area (a strip at the top, some bottom corners)."""
    cam = canvas.camera
    h, w = cam.height, cam.width
    rows, cols = np.mgrid[0:h, 0:w] + 0.5
    valid = rows >= max(1, round(h * rng.uniform(0.02, 0.08)))
    if rng.random() < 0.5:
        corner = rng.uniform(0.05, 0.15) * w
        valid &= (cols + (h - rows) * 2 > corner) & (w - cols + (h - rows) * 2 > corner)
    below = rows > cam.horizon
    z = np.where(below, cam.focal * cam.elevation / np.where(below, rows - cam.horizon, 1), 0)
    x = (cols - cam.cx) * z / cam.focal
    road = canvas.label == ROAD
    lane = road & canvas.ground & below & (x >= world.ego_lane[0]) & (x < world.ego_lane[1])
    images = []
    for positive in (road, lane):
        image = np.zeros((h, w, 3), np.uint8)
        image[valid] = _RED
        image[valid & positive] = _MAGENTA
        images.append(image)
    return images[0], images[1]


def generate_kitti(
    root,
    *,
    scale: float = 0.25,
    train_per_category: int = 6,
    test_per_category: int = 2,
    seed: int = 0,
    overwrite: bool = False,
) -> Summary:
    """Write a synthetic KITTI road tree under ``root``/data_road (see the module docstring).

    training/image_2/{um,umm,uu}_{i:06d}.png with training/gt_image_2/{cat}_road_{i:06d}.png
    (and um_lane_{i:06d}.png for um), testing/image_2/ without ground truth. Image sizes cycle
    through the real KITTI sizes times ``scale``.
    """
    if not 0.065 <= scale <= 2.0:
        raise UserError(
            f"--scale must be between 0.065 and 2 (images of 24 to 750 rows), got {scale}"
        )
    _check_counts(
        train_per_category=train_per_category, test_per_category=test_per_category, seed=seed
    )
    root = prepare_root(root, overwrite)
    summary = Summary("KITTI road", root)
    base = root / "data_road"
    for split, count in (("training", train_per_category), ("testing", test_per_category)):
        summary.images[split] = len(KITTI_CATEGORIES) * count
        for c, category in enumerate(KITTI_CATEGORIES):
            for i in range(count):
                h, w = KITTI_SIZES[(i + c + seed) % len(KITTI_SIZES)]
                height, width = round(h * scale), round(w * scale)
                name = f"{category}_{i:06d}.png"
                rng = _rng(seed, f"kitti/{split}/{name}")
                world = sample_world(rng, KITTI[category])
                image, canvas = _render(world, make_camera(world, height, width), rng)
                _write_png(base / split / "image_2" / name, image)
                summary.files += 1
                if split == "testing":
                    continue
                road, lane = _kitti_ground_truth(world, canvas, rng)
                gt = base / split / "gt_image_2"
                _write_png(gt / f"{category}_road_{i:06d}.png", road)
                summary.files += 1
                if category == "um":
                    _write_png(gt / f"{category}_lane_{i:06d}.png", lane)
                    summary.files += 1
    return summary


def _kitti_instances(label_ids: np.ndarray, instance_ids: np.ndarray) -> np.ndarray:
    """KITTI's instance PNG (uint16) from a Cityscapes instanceIds map: the label id in the
    high byte, the instance (1, 2, ... per class; 0 where none) in the low byte."""
    instance = np.where(instance_ids >= 1000, np.minimum(instance_ids % 1000 + 1, 255), 0)
    return (label_ids.astype(np.uint16) << 8) | instance.astype(np.uint16)


def generate_kitti_semantics(
    root,
    *,
    scale: float = 0.25,
    train: int = 12,
    test: int = 4,
    seed: int = 0,
    overwrite: bool = False,
) -> Summary:
    """Write a synthetic KITTI semantic segmentation tree under ``root`` (data_semantics.zip
    as unpacked): training/image_2/{i:06d}_10.png with training/semantic (Cityscapes label
    ids), semantic_rgb (their colours) and instance (16-bit: label id << 8 | instance), and
    testing/image_2/ without labels. Streets cycle through the KITTI road categories' looks;
    image sizes through the real KITTI sizes times ``scale``.
    """
    if not 0.065 <= scale <= 2.0:
        raise UserError(
            f"--scale must be between 0.065 and 2 (images of 24 to 750 rows), got {scale}"
        )
    _check_counts(train=train, test=test, seed=seed)
    root = prepare_root(root, overwrite)
    summary = Summary("KITTI semantics", root)
    for split, count in (("training", train), ("testing", test)):
        summary.images[split] = count
        for i in range(count):
            h, w = KITTI_SIZES[(i + seed) % len(KITTI_SIZES)]
            height, width = round(h * scale), round(w * scale)
            name = f"{i:06d}_10.png"
            rng = _rng(seed, f"kitti_semantics/{split}/{name}")
            style = KITTI[KITTI_CATEGORIES[i % len(KITTI_CATEGORIES)]]
            world = sample_world(rng, style, FEATURES[i % len(FEATURES)])
            image, canvas = _render(world, make_camera(world, height, width), rng)
            _write_png(root / split / "image_2" / name, image)
            summary.files += 1
            if split == "testing":
                continue
            _write_png(root / split / "semantic" / name, canvas.label)
            _write_png(root / split / "semantic_rgb" / name, _COLOURS[canvas.label])
            _write_png(
                root / split / "instance" / name, _kitti_instances(canvas.label, canvas.instance)
            )
            summary.files += 3
    return summary


# Cityscapes label id -> train id (0..18; 255 for the label ids the benchmark ignores).
_TRAIN_IDS = np.full(256, 255, np.uint8)
for _label in labels:
    if _label.id >= 0 and 0 <= _label.trainId < 19:
        _TRAIN_IDS[_label.id] = _label.trainId
BDD100K_SIZE = (720, 1280)  # height, width of every BDD100K image, before --scale
BDD100K_LAYOUTS = ("current", "original")


def _bdd100k_name(seed: int, split: str, index: int) -> str:
    """A name in BDD100K's style (two 8-digit hex words, e.g. 7d06fefd-f7be05a6), fixed by
    the seed, split and index."""
    first = zlib.crc32(f"bdd100k/{seed}/{split}/{index}".encode())
    second = zlib.crc32(f"bdd100k/{seed}/{split}/{index}/second".encode())
    return f"{first:08x}-{second:08x}"


def generate_bdd100k(
    root,
    *,
    layout: str = "current",
    scale: float = 0.1,
    train: int = 8,
    val: int = 4,
    test: int = 2,
    seed: int = 0,
    overwrite: bool = False,
) -> Summary:
    """Write a synthetic BDD100K semantic segmentation tree under ``root``: JPEG images and
    single-channel masks of Cityscapes train ids (255 where the benchmark ignores a pixel), in
    the ``layout`` of the "current" release (images/10k/{split}/NAME.jpg,
    labels/sem_seg/masks/{split}/NAME.png) or the "original" one (seg/images/{split}/NAME.jpg,
    seg/labels/{split}/NAME_train_id.png). The test split has images only. Images are
    720x1280 times ``scale``.
    """
    if layout not in BDD100K_LAYOUTS:
        raise UserError(f"--layout must be one of {', '.join(BDD100K_LAYOUTS)}, got {layout!r}")
    if not 0.05 <= scale <= 2.0:
        raise UserError(
            f"--scale must be between 0.05 and 2 (images of 36 to 1440 rows), got {scale}"
        )
    _check_counts(train=train, val=val, test=test, seed=seed)
    root = prepare_root(root, overwrite)
    summary = Summary("BDD100K", root)
    height, width = round(BDD100K_SIZE[0] * scale), round(BDD100K_SIZE[1] * scale)
    style = replace(CITYSCAPES, looks="natural")
    if layout == "current":
        images, masks, suffix = (
            root / "images" / "10k",
            root / "labels" / "sem_seg" / "masks",
            ".png",
        )
    else:
        images, masks, suffix = root / "seg" / "images", root / "seg" / "labels", "_train_id.png"
    for split, count in (("train", train), ("val", val), ("test", test)):
        summary.images[split] = count
        for i in range(count):
            name = _bdd100k_name(seed, split, i)
            rng = _rng(seed, f"bdd100k/{split}/{name}")
            world = sample_world(rng, style, FEATURES[i % len(FEATURES)])
            image, canvas = _render(world, make_camera(world, height, width), rng)
            # BDD100K's images are JPEGs: the same lossy encoding, never the masks.
            _write_png(images / split / f"{name}.jpg", image)
            summary.files += 1
            if split != "test":
                _write_png(masks / split / f"{name}{suffix}", _TRAIN_IDS[canvas.label])
                summary.files += 1
    return summary


MAPILLARY_VERSIONS = ("v1.2", "v2.0", "both")
# Image sizes (height, width) of Mapillary Vistas, before --scale: its photos come from phones,
# action cameras and capture rigs, in many resolutions and aspects, some upright.
MAPILLARY_SIZES = (
    (3024, 4032),
    (1080, 1920),
    (2448, 3264),
    (4032, 3024),
    (1536, 2048),
    (2160, 3840),
    (3000, 4000),
)
_KEY_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# The Mapillary label each drawn Cityscapes label is written as, where the versions agree.
_MAPILLARY_OF_CITYSCAPES = {
    "unlabeled": "void--unlabeled",
    "ego vehicle": "void--ego-vehicle",
    "rectification border": "void--unlabeled",
    "out of roi": "void--unlabeled",
    "road": "construction--flat--road",
    "sidewalk": "construction--flat--sidewalk",
    "parking": "construction--flat--parking",
    "rail track": "construction--flat--rail-track",
    "building": "construction--structure--building",
    "wall": "construction--barrier--wall",
    "fence": "construction--barrier--fence",
    "guard rail": "construction--barrier--guard-rail",
    "bridge": "construction--structure--bridge",
    "tunnel": "construction--structure--tunnel",
    "pole": "object--support--pole",
    "traffic sign": "object--traffic-sign--front",
    "vegetation": "nature--vegetation",
    "terrain": "nature--terrain",
    "sky": "nature--sky",
    "rider": "human--rider--bicyclist",
    "car": "object--vehicle--car",
    "truck": "object--vehicle--truck",
    "bus": "object--vehicle--bus",
    "caravan": "object--vehicle--caravan",
    "trailer": "object--vehicle--trailer",
    "train": "object--vehicle--on-rails",
    "motorcycle": "object--vehicle--motorcycle",
    "bicycle": "object--vehicle--bicycle",
}
# Where the versions differ: v2.0 has finer labels for these.
_MAPILLARY_OF_CITYSCAPES_BY_VERSION = {
    "v1.2": {
        "static": "void--unlabeled",
        "dynamic": "void--unlabeled",
        "ground": "void--unlabeled",
        "polegroup": "object--support--pole",
        "traffic light": "object--traffic-light",
        "person": "human--person",
    },
    "v2.0": {
        "static": "void--static",
        "dynamic": "void--dynamic",
        "ground": "void--ground",
        "polegroup": "object--support--pole-group",
        "traffic light": "object--traffic-light--general-upright",
        "person": "human--person--individual",
    },
}


def mapillary_label_indices(labels_of_version: list[dict], version: str) -> np.ndarray:
    """Cityscapes label id -> the index of its Mapillary label in the version's config."""
    index_of = {label["name"]: index for index, label in enumerate(labels_of_version)}
    names = {**_MAPILLARY_OF_CITYSCAPES, **_MAPILLARY_OF_CITYSCAPES_BY_VERSION[version]}
    table = np.full(256, index_of["void--unlabeled"], np.uint8)
    for label in labels:
        if label.id >= 0:
            table[label.id] = index_of[names[label.name]]
    return table


def _mapillary_key(seed: int, split: str, index: int) -> str:
    """A 22-character image key in Mapillary's style (e.g. M2kh294N9c72sICO990Uew)."""
    rng = _rng(seed, f"mapillary/key/{split}/{index}")
    return "".join(_KEY_CHARACTERS[i] for i in rng.integers(0, len(_KEY_CHARACTERS), 22))


def generate_mapillary(
    root,
    *,
    version: str = "both",
    scale: float = 0.05,
    train: int = 8,
    val: int = 4,
    test: int = 2,
    seed: int = 0,
    overwrite: bool = False,
) -> Summary:
    """Write a synthetic Mapillary Vistas tree under ``root``, as
    mapillary-vistas-dataset_public_v2.0.zip unpacks: config_VERSION.json (every label of the
    version), {training,validation,testing}/images/KEY.jpg and
    {training,validation}/VERSION/labels/KEY.png (palette PNGs of label indices), for
    ``version`` v1.2, v2.0 or both (the download holds both). Image sizes cycle through
    Mapillary's varied resolutions times ``scale``.
    """
    from segmentation.data.mapillary import write_palette_png
    from segmentation.sample.mapillary_classes import config_labels

    if version not in MAPILLARY_VERSIONS:
        raise UserError(
            f"--version must be one of {', '.join(MAPILLARY_VERSIONS)}, got {version!r}"
        )
    if not 0.03 <= scale <= 1.0:
        raise UserError(
            f"--scale must be between 0.03 and 1 (images of 32 to 4032 rows), got {scale}"
        )
    _check_counts(train=train, val=val, test=test, seed=seed)
    root = prepare_root(root, overwrite)
    summary = Summary("Mapillary Vistas", root)
    versions = ("v1.2", "v2.0") if version == "both" else (version,)
    tables = {}
    for name in versions:
        labels_of_version = config_labels(name)
        config = {"labels": labels_of_version, "version": name[1:]}
        (root / f"config_{name}.json").write_text(json.dumps(config, indent=4) + "\n")
        palette = np.array([label["color"] for label in labels_of_version], np.uint8)
        tables[name] = (mapillary_label_indices(labels_of_version, name), palette)
        summary.files += 1
    style = replace(CITYSCAPES, looks="natural")
    folders = {"train": "training", "val": "validation", "test": "testing"}
    for split, count in (("train", train), ("val", val), ("test", test)):
        summary.images[folders[split]] = count
        for i in range(count):
            key = _mapillary_key(seed, split, i)
            h, w = MAPILLARY_SIZES[(i + seed) % len(MAPILLARY_SIZES)]
            rng = _rng(seed, f"mapillary/{split}/{key}")
            world = sample_world(rng, style, FEATURES[i % len(FEATURES)])
            camera = make_camera(world, max(32, round(h * scale)), max(32, round(w * scale)))
            image, canvas = _render(world, camera, rng)
            # Mapillary's images are JPEGs: the lossy encoding, never the labels.
            _write_png(root / folders[split] / "images" / f"{key}.jpg", image)
            summary.files += 1
            if split == "test":
                continue
            for name, (indices, palette) in tables.items():
                path = root / folders[split] / name / "labels" / f"{key}.png"
                write_palette_png(path, indices[canvas.label], palette)
                summary.files += 1
    return summary
