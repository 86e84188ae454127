"""The scale-jitter style (issue #23, part 1): scale ratios uniform over data.augment.scale and
relative to data.base_size in the files' pixels (a cache's frames too), crops of crop_size
padded with 0 / IGNORE_INDEX, cat_max_ratio as mmsegmentation's RandomCrop, the photometric
distortion's ranges and identities, and the refusals."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
from scipy import stats

from segmentation.config import DataConfig, config_from_dict
from segmentation.data.build import build_training_datasets, training_transform_for
from segmentation.data.labels import IGNORE_INDEX, get_scheme
from segmentation.data.scale_jitter import (
    NearestResize,
    PhotometricDistortion,
    ScaleJitter,
    rescaled_crop,
    rescaled_size,
)
from segmentation.engine.setup import load_starting_point
from segmentation.errors import UserError

SEEDS = 2000


def jitter_config(root, cache=None, **augment) -> DataConfig:
    """Cityscapes 64x128 frames, scheme 'classes' (every stored id is a class, so that any
    IGNORE_INDEX in a target is padding), crops of the frame's size."""
    augment = {"scale": [0.5, 2.0], **augment}
    return DataConfig(
        root=str(root),
        labels=["classes"],
        image_size=(32, 64),
        base_size=(64, 128),
        crop_size=(64, 128),
        cache=None if cache is None else str(cache),
        augment=augment,
    )


def valid_extent(target: np.ndarray) -> tuple[int, int]:
    """(rows, columns) of the top-left block holding labels; asserts that everything else, and
    only that, is IGNORE_INDEX (a bottom/right padding band)."""
    labelled = target != IGNORE_INDEX
    rows, columns = int(labelled.any(1).sum()), int(labelled.any(0).sum())
    assert labelled[:rows, :columns].all()
    assert not labelled[rows:].any() and not labelled[:, columns:].any()
    return rows, columns


# --------------------------------------------------------------------------- scale draws


def test_scale_ratios_are_uniform_over_the_range_and_relative_to_base_size():
    # A 200x200 frame with base_size 400x400: the rescaled frame is 400 x ratio, seen whole in
    # an 800x800 crop.
    frame = np.full((200, 200, 3), 9, np.uint8)
    mask = np.ones((200, 200), np.uint8)
    jitter = ScaleJitter(crop_size=(800, 800), scale=(0.5, 2.0), base_size=(400, 400), hflip=0)
    ratios = []
    for seed in range(SEEDS):
        jitter.set_random_seed(seed)
        result = jitter(image=frame, mask=mask)
        assert result["mask"].shape == result["image"].shape[:2]
        assert result["mask"].shape[0] == result["mask"].shape[1]
        ratios.append(result["mask"].shape[0] / 400)
    assert min(ratios) >= 0.5 and max(ratios) <= 2.0
    # Sides are whole pixels: 1/400 of discretization, well below the KS test's resolution.
    assert stats.kstest(ratios, stats.uniform(loc=0.5, scale=1.5).cdf).pvalue > 0.01


@pytest.mark.parametrize(
    ("frame", "base", "ratio", "expected"),
    [
        ((1024, 2048), (1024, 2048), 0.5, (512, 1024)),
        ((1024, 2048), (1024, 2048), 1.75, (1792, 3584)),
        # mmcv's imrescale: the long side fits max(base) x ratio, the short min(base) x ratio
        # -> factor min(2048 / 1242, 1024 / 375) = 1.6490; 375 x 1.6490 = 618.4
        ((375, 1242), (1024, 2048), 1.0, (618, 2048)),
        # target (int(1024 x 0.3), int(2048 x 0.3)) = (307, 614): factor 0.29980
        ((1024, 2048), (1024, 2048), 0.3, (307, 614)),
        # target (0, 1): nothing left, the frame keeps a pixel
        ((64, 128), (64, 128), 0.01, (1, 1)),
    ],
)
def test_rescaled_size_keeps_the_aspect_and_fits_the_target(frame, base, ratio, expected):
    assert rescaled_size(frame, base, ratio) == expected


def test_cached_frames_are_rescaled_relative_to_the_files_pixels():
    # A frame stored at half its side (data.cache_scale 0.5) ends at the size of the original.
    for ratio in (0.5, 0.77, 1.3, 2.0):
        original = rescaled_size((1024, 2048), (1024, 2048), ratio)
        assert rescaled_size((512, 1024), (1024, 2048), ratio, frame_scale=0.5) == original
        assert rescaled_size((256, 512), None, ratio, frame_scale=0.25) == (
            rescaled_size((1024, 2048), None, ratio)
        )


# --------------------------------------------------------------------------- crops


def test_label_crops_are_those_of_opencvs_nearest_resize():
    # Only the crop is computed (NearestResize): the pixels must be cv2.resize's.
    rng = np.random.default_rng(5)
    for _ in range(60):
        height, width = (int(side) for side in rng.integers(5, 200, 2))
        size = tuple(int(side) for side in rng.integers(3, 500, 2))
        labels = rng.integers(0, 255, (height, width), dtype=np.uint8)
        reference = cv2.resize(labels, size[::-1], interpolation=cv2.INTER_NEAREST)
        top, left = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        bottom, right = top + int(rng.integers(1, 80)), left + int(rng.integers(1, 80))
        crop = NearestResize(labels, size).crop(top, bottom, left, right)
        assert np.array_equal(crop, reference[top:bottom, left:right])


def test_a_crop_of_the_whole_rescaled_frame_is_opencvs_resize():
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)
    labels = rng.integers(0, 30, (40, 90), dtype=np.uint8)
    # ratio 1.5 of base 60x120: target (90, 180); factor min(180 / 90, 90 / 40) = 2.0
    jitter = ScaleJitter(crop_size=(80, 180), scale=(1.5, 1.5), base_size=(60, 120), hflip=0)
    jitter.set_random_seed(0)
    result = jitter(image=image, mask=labels)
    assert within_one_level(result["image"], cv2.resize(image, (180, 80)))
    assert np.array_equal(
        result["mask"], cv2.resize(labels, (180, 80), interpolation=cv2.INTER_NEAREST)
    )


def within_one_level(image: np.ndarray, reference: np.ndarray) -> bool:
    return (
        image.shape == reference.shape
        and int(np.abs(image.astype(np.int16) - reference.astype(np.int16)).max()) <= 1
    )


def test_image_crops_are_opencvs_bilinear_resize_within_one_level():
    # Only the crop is computed (rescaled_crop): cv2.resize's pixels, to a level, at every
    # ratio, box and edge, and exactly the frame where nothing is rescaled.
    rng = np.random.default_rng(8)
    for _ in range(60):
        height, width = (int(side) for side in rng.integers(5, 200, 2))
        size = tuple(int(side) for side in rng.integers(3, 500, 2))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        reference = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
        top, left = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        bottom, right = top + int(rng.integers(1, 80)), left + int(rng.integers(1, 80))
        crop = rescaled_crop(image, size, (top, bottom, left, right))
        assert within_one_level(crop, reference[top:bottom, left:right]), (size, image.shape)
    image = rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)
    assert np.array_equal(rescaled_crop(image, (40, 90), (5, 60, 10, 200)), image[5:, 10:])


def test_every_crop_has_crop_size_and_its_padding_is_ignore_and_black(cityscapes_root):
    config = jitter_config(cityscapes_root)
    train, _ = build_training_datasets(config)
    padded = 0
    for seed in range(40):
        item = train[(seed % len(train), seed)]
        image, target = item["image"].numpy(), item["target"].numpy()
        assert image.shape == (64, 128, 3) and target.shape == (64, 128)
        rows, columns = valid_extent(target)
        assert (image[rows:] == 0).all() and (image[:, columns:] == 0).all()
        # A frame scaled below the crop keeps its aspect: both sides shrink alike.
        assert abs(rows / 64 - columns / 128) <= 1 / 64
        padded += rows < 64
    assert 5 < padded < 35  # ratios below 1 (a third of the range) pad, the others do not


def test_crops_from_the_cache_match_the_files(cityscapes_root, tmp_path):
    # cache_scale 1.0: the same samples exactly; 0.5: the same geometry (ratio relative to the
    # files' pixels), labels up to the cache's coarser grid.
    files, _ = build_training_datasets(jitter_config(cityscapes_root, scale=[0.5, 1.5]))
    for cache_scale in (1.0, 0.5):
        config = jitter_config(cityscapes_root, tmp_path / f"cache{cache_scale}", scale=[0.5, 1.5])
        config = config.model_copy(update={"cache_scale": cache_scale})
        cached, _ = build_training_datasets(config)
        for seed in range(12):
            key = (seed % len(files), seed)
            a, b = files[key], cached[key]
            if cache_scale == 1.0:
                assert torch_equal(a["image"], b["image"]) and torch_equal(a["target"], b["target"])
                continue
            assert b["image"].shape == a["image"].shape
            assert valid_extent(a["target"].numpy()) == valid_extent(b["target"].numpy())
            assert (a["target"] == b["target"]).float().mean() > 0.8


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_a_seed_fixes_the_sample_and_unseeded_copies_differ():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    labels = rng.integers(0, 30, (64, 128), dtype=np.uint8)
    jitter = ScaleJitter(crop_size=(32, 64), scale=(0.5, 2.0), photometric=True)
    results = []
    for _ in range(2):
        jitter.set_random_seed(11)
        results.append(jitter(image=image, mask=labels))
    assert all(np.array_equal(results[0][key], results[1][key]) for key in ("image", "mask"))
    # Forked DataLoader workers hold copies of one transform: without seeds they must not
    # repeat each other's draws.
    twin = copy.deepcopy(jitter)
    first, second = jitter(image=image, mask=labels), twin(image=image, mask=labels)
    assert not np.array_equal(first["image"], second["image"])


# --------------------------------------------------------------------------- cat_max_ratio


def dominated_frame() -> np.ndarray:
    """64x128 labels: class 0 everywhere but a 20x40 block of class 1 at (10, 70), and the
    bottom 16 rows ignored."""
    mask = np.zeros((64, 128), np.uint8)
    mask[10:30, 70:110] = 1
    mask[48:] = IGNORE_INDEX
    return mask


def passing_share(mask: np.ndarray, crop: tuple[int, int], ratio: float) -> float:
    """The share of all crop positions whose labelled pixels (ignore excluded) hold two classes
    or more and no class reaching `ratio`: counted over every position, independently of the
    transform."""
    passing = total = 0
    for top in range(mask.shape[0] - crop[0] + 1):
        for left in range(mask.shape[1] - crop[1] + 1):
            window = mask[top : top + crop[0], left : left + crop[1]]
            labelled = window[window != IGNORE_INDEX]
            counts = np.array([np.count_nonzero(labelled == c) for c in (0, 1)])
            total += 1
            passing += counts.min() > 0 and counts.max() / counts.sum() < ratio
    return passing / total


def test_cat_max_ratio_redraws_a_dominated_crop_up_to_ten_times():
    mask = dominated_frame()
    image = np.zeros((64, 128, 3), np.uint8)
    crop, ratio = (32, 48), 0.75
    share = passing_share(mask, crop, ratio)
    assert 0.05 < share < 0.5  # the tree: valid crops exist, most crops are dominated

    def passing_rate(cat_max_ratio: float) -> tuple[int, int]:
        jitter = ScaleJitter(
            crop_size=crop,
            scale=(1.0, 1.0),
            cat_max_ratio=cat_max_ratio,
            hflip=0,
            encode=lambda stored: stored,
        )
        passed = 0
        for seed in range(400):
            jitter.set_random_seed(seed)
            labelled = jitter(image=image, mask=mask)["mask"]
            labelled = labelled[labelled != IGNORE_INDEX]
            counts = np.bincount(labelled, minlength=2)
            passed += counts.min() > 0 and counts.max() / counts.sum() < ratio
        return passed, 400

    # Off: a crop passes as often as a uniform position does.
    assert stats.binomtest(*passing_rate(1.0), share).pvalue > 0.01
    # On: a first draw and 10 redraws, the last kept: it fails only when all 11 fail.
    assert stats.binomtest(*passing_rate(ratio), 1 - (1 - share) ** 11).pvalue > 0.01


def test_cat_max_ratio_keeps_the_last_crop_when_none_passes():
    mask = np.full((64, 128), 3, np.uint8)  # one class: no crop can pass
    jitter = ScaleJitter(
        crop_size=(32, 64), scale=(1.0, 1.0), cat_max_ratio=0.75, encode=lambda s: s
    )
    jitter.set_random_seed(0)
    result = jitter(image=np.zeros((64, 128, 3), np.uint8), mask=mask)
    assert result["mask"].shape == (32, 64) and (result["mask"] == 3).all()


def test_cat_max_ratio_counts_the_schemes_classes(cityscapes_root):
    # The transform judges crops by class indices: the scheme's lookup reaches it.
    config = jitter_config(cityscapes_root, cat_max_ratio=0.75)
    transform = training_transform_for(config, get_scheme("cityscapes", ["classes"]))
    stored = np.array([[7, 26]], np.uint8)  # road, car
    assert transform.encode(stored).tolist() == [[0, 13]]


# --------------------------------------------------------------------------- photometric


def colourful(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 32, 3), dtype=np.uint8)


def only(operation: str, p: float = 1.0) -> PhotometricDistortion:
    chances = {f"{name}_p": 0.0 for name in ("brightness", "contrast", "saturation", "hue")}
    return PhotometricDistortion(**{**chances, f"{operation}_p": p})


def test_photometric_is_the_identity_when_no_operation_fires():
    image = colourful()
    never = only("brightness", 0.0)
    for seed in range(20):
        assert np.array_equal(never(image, np.random.default_rng(seed)), image)


def test_brightness_and_contrast_match_hand_computed_values():
    constant = np.full((2, 2, 3), 100, np.uint8)
    apply = PhotometricDistortion.apply
    # float32, clipped, truncated: 100 + 10.7 -> 110; 250 + 10.7 -> 255; 100 - 40 -> 60.
    assert (apply(constant, {"brightness": 10.7, "contrast_first": True}) == 110).all()
    assert (apply(constant + 150, {"brightness": 10.7, "contrast_first": True}) == 255).all()
    assert (apply(constant, {"brightness": -40.0, "contrast_first": False}) == 60).all()
    # 101 x 0.5 = 50.5 -> 50; 200 x 1.5 -> 255.
    assert (apply(constant + 1, {"contrast": 0.5, "contrast_first": True}) == 50).all()
    assert (apply(constant + 100, {"contrast": 1.5, "contrast_first": False}) == 255).all()
    # Each operation truncates: 100 + 0.9 -> 100, x 1.5 -> 150 (not 100.9 x 1.5 = 151).
    both = {"brightness": 0.9, "contrast": 1.5}
    assert (apply(constant, {**both, "contrast_first": True}) == 150).all()
    assert (apply(constant, {**both, "contrast_first": False}) == 150).all()


def test_contrast_goes_before_or_after_the_saturation_and_hue():
    image = colourful(3)
    chosen = {"contrast": 1.4, "hue": 7}

    def contrast(pixels):
        return np.clip(pixels.astype(np.float32) * np.float32(1.4), 0, 255).astype(np.uint8)

    def hue(pixels):
        hsv = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + 7) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    apply = PhotometricDistortion.apply
    assert np.array_equal(apply(image, {**chosen, "contrast_first": True}), hue(contrast(image)))
    assert np.array_equal(apply(image, {**chosen, "contrast_first": False}), contrast(hue(image)))


def test_each_photometric_operation_stays_within_its_range():
    constant = np.full((4, 4, 3), 100, np.uint8)
    # A colour (HSV 60, 150, 200 in OpenCV's units) whose saturation x 1.5 stays below 255.
    colour = cv2.cvtColor(np.full((4, 4, 3), (60, 150, 200), np.uint8), cv2.COLOR_HSV2RGB)
    seen = {"brightness": [], "contrast": [], "saturation": [], "hue": []}
    for seed in range(300):
        rng = np.random.default_rng(seed)
        seen["brightness"].append(int(only("brightness")(constant, rng)[0, 0, 0]) - 100)
        seen["contrast"].append(int(only("contrast")(constant, rng)[0, 0, 0]) / 100)
        hsv = cv2.cvtColor(only("saturation")(colour, rng), cv2.COLOR_RGB2HSV)
        seen["saturation"].append(int(hsv[0, 0, 1]) / 150)
        hsv = cv2.cvtColor(only("hue")(colour, rng), cv2.COLOR_RGB2HSV)
        seen["hue"].append((int(hsv[0, 0, 0]) - 60 + 90) % 180 - 90)
    # Truncation and the HSV round trip cost at most a unit (saturation: 3 of 150).
    limits = {
        "brightness": (-32, 32, 1),
        "contrast": (0.5, 1.5, 0.01),
        "saturation": (0.5, 1.5, 0.02),
        "hue": (-18, 18, 1),
    }
    for name, (low, high, slack) in limits.items():
        values = seen[name]
        assert low - slack <= min(values) and max(values) <= high + slack, name
        # ...and they reach near both ends of the range.
        assert min(values) < low + (high - low) / 10 and max(values) > high - (high - low) / 10


def test_each_photometric_operation_fires_half_the_time():
    distortion = PhotometricDistortion()
    draws = [distortion.draw(np.random.default_rng(seed)) for seed in range(SEEDS)]
    for name in ("brightness", "contrast", "saturation", "hue"):
        fired = sum(name in chosen for chosen in draws)
        assert stats.binomtest(fired, SEEDS, 0.5).pvalue > 0.01, name
    first = sum(chosen["contrast_first"] for chosen in draws)
    assert stats.binomtest(first, SEEDS, 0.5).pvalue > 0.01


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"crop_size": [64, 128], "augment": {"scale": [0.5, 2.0], "crop_scale": [0.5, 1.0]}},
            "data.augment.crop_scale=(0.5, 1.0) belongs to the original recipe",
        ),
        (
            {"crop_size": [64, 128], "augment": {"scale": [0.5, 2.0], "weather": True}},
            "data.augment.weather=True belongs to the original recipe",
        ),
        ({"augment": {"scale": [0.5, 2.0]}}, "data.augment.scale (the scale-jitter style) needs"),
        ({"crop_size": [64, 128]}, "data.crop_size belongs to the scale-jitter style"),
        ({"augment": {"cat_max_ratio": 0.75}}, "data.augment.cat_max_ratio belongs to"),
        ({"augment": {"photometric": True}}, "data.augment.photometric belongs to"),
        ({"augment": {"scale": [2.0, 0.5]}}, "data.augment.scale=[2.0, 0.5] is not valid"),
        ({"augment": {"scale": [0, 2.0]}}, "data.augment.scale=[0, 2.0] is not valid"),
        ({"augment": {"scale": [-1, 2.0]}}, "0 < min <= max"),
        ({"augment": {"cat_max_ratio": 0}}, "data.augment.cat_max_ratio=0 is not valid"),
    ],
)
def test_mixed_styles_and_bad_ranges_are_refused_in_one_line(data, expected):
    with pytest.raises(UserError) as error:
        config_from_dict({"data": data})
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_the_original_recipe_stays_the_default():
    data = config_from_dict({}).data
    assert data.augment.scale is None and data.train_input_size == tuple(data.image_size)
    jitter = config_from_dict({"data": {"crop_size": "512x1024", "augment": {"scale": [0.5, 2]}}})
    assert jitter.data.train_input_size == (512, 1024)


def test_a_crop_size_off_the_models_stride_is_refused_with_the_nearest_sizes():
    config = config_from_dict(
        {
            "data": {"crop_size": "100x200", "image_size": "64x128", "augment": {"scale": [1, 2]}},
            "model": {"arch": "fpn", "backbone": "resnet18", "pretrained": None},
        }
    )
    with pytest.raises(UserError) as error:
        load_starting_point(config, None, None)
    assert str(error.value) == (
        "data.crop_size 100x200 is not a multiple of 32 for fpn: use 96x192 or 128x224 "
        "(set data.crop_size to one of them)"
    )
