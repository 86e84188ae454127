"""The synthetic sample data: exact dataset layouts, valid labels, determinism, the CLI."""

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import labels
from cityscapesscripts.preparation.json2labelImg import createLabelImage

from segmentation.errors import UserError
from segmentation.sample.cli import main
from segmentation.sample.generate import generate_cityscapes, generate_kitti

# The spec's cities, written out here so the test checks the generator against them.
CITIES = {
    "train": ["aachen", "bremen", "hamburg", "ulm", "zurich"],
    "val": ["frankfurt", "lindau", "munster"],
    "test": ["berlin", "bielefeld"],
}
EXTRA_CITIES = ["augsburg", "bad-honnef"]
GT_SUFFIXES = ("labelIds.png", "color.png", "instanceIds.png", "polygons.json")
COLOURS = np.zeros((256, 3), np.uint8)
for _label in labels:
    if _label.id >= 0:
        COLOURS[_label.id] = _label.color
VALID_IDS = {label.id for label in labels if label.id >= 0}
SMALL = dict(height=64, width=128, train_per_city=2, val_per_city=1, test_per_city=1)
REPO = Path(__file__).resolve().parents[1]


def read(path: Path) -> np.ndarray:
    """A PNG as stored, colour images turned from cv2's BGR(A) into RGB(A)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    if image.ndim == 3:
        image = image[..., [2, 1, 0, 3][: image.shape[2]]]
    return image


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def city_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    generate_cityscapes(root, **SMALL, video_frames=3, coarse=1, seed=0)
    return root


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kitti")
    generate_kitti(root, scale=0.1, train_per_category=2, test_per_category=1, seed=0)
    return root


def expected_cityscapes_files(per_split: dict, frames: int, coarse: int) -> set[str]:
    expected = set()
    for split, cities in CITIES.items():
        for city in cities:
            for i in range(per_split[split]):
                stem = f"{city}_{i:06d}_000019"
                expected.add(f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png")
                expected |= {f"gtFine/{split}/{city}/{stem}_gtFine_{s}" for s in GT_SUFFIXES}
                if coarse and split != "test":
                    expected |= {
                        f"gtCoarse/{split}/{city}/{stem}_gtCoarse_{s}" for s in GT_SUFFIXES
                    }
    for city in EXTRA_CITIES:
        for i in range(coarse):
            stem = f"{city}_{i:06d}_000019"
            expected.add(f"leftImg8bit/train_extra/{city}/{stem}_leftImg8bit.png")
            expected |= {f"gtCoarse/train_extra/{city}/{stem}_gtCoarse_{s}" for s in GT_SUFFIXES}
    for seq in ("stuttgart_00", "stuttgart_01", "stuttgart_02"):
        for frame in range(1, frames + 1):
            expected.add(f"leftImg8bit/demoVideo/{seq}/{seq}_000000_{frame:06d}_leftImg8bit.png")
    return expected


def test_cityscapes_tree_has_exactly_the_expected_files(city_root):
    per_split = {"train": 2, "val": 1, "test": 1}
    assert files_under(city_root) == expected_cityscapes_files(per_split, frames=3, coarse=1)
    pattern = re.compile(
        r"^[a-z-]+(_0\d)?_\d{6}_\d{6}_(leftImg8bit|gt(Fine|Coarse)_\w+)\.(png|json)$"
    )
    assert all(pattern.match(Path(f).name) for f in files_under(city_root))


def test_cityscapes_images_and_fine_labels_are_valid(city_root):
    checked = 0
    for image_path in sorted(city_root.glob("leftImg8bit/[tv]*/*/*.png")):
        split = image_path.parent.parent.name
        if split in ("test", "train_extra"):
            continue
        image = read(image_path)
        assert image.dtype == np.uint8 and image.shape == (64, 128, 3)
        stem = str(image_path).replace("leftImg8bit/", "gtFine/", 1)[: -len("leftImg8bit.png")]
        label_ids = read(Path(stem + "gtFine_labelIds.png"))
        assert label_ids.dtype == np.uint8 and label_ids.shape == (64, 128)
        assert set(np.unique(label_ids).tolist()) <= VALID_IDS
        colour = read(Path(stem + "gtFine_color.png"))
        assert colour.shape == (64, 128, 4) and (colour[..., 3] == 255).all()
        np.testing.assert_array_equal(colour[..., :3], COLOURS[label_ids])
        instance_ids = read(Path(stem + "gtFine_instanceIds.png"))
        assert instance_ids.dtype == np.uint16
        has_instances = np.array(
            [lab.hasInstances for lab in sorted(labels, key=lambda x: x.id) if lab.id >= 0]
        )
        is_instance = instance_ids >= 1000
        np.testing.assert_array_equal(instance_ids[is_instance] // 1000, label_ids[is_instance])
        np.testing.assert_array_equal(instance_ids[~is_instance], label_ids[~is_instance])
        assert has_instances[label_ids[is_instance]].all()
        # the polygons, drawn by cityscapesscripts' own json2labelImg, give back the labels
        annotation = Annotation()
        annotation.fromJsonFile(stem + "gtFine_polygons.json")
        assert (annotation.imgHeight, annotation.imgWidth) == (64, 128)
        redrawn = np.array(createLabelImage(annotation, "ids"))
        assert (redrawn == label_ids).mean() > 0.95
        # cv2 stores BGR: the sky must come out blue in RGB order (natural skies are paler
        # than the label colour, hazy near the horizon, but blue: swapped channels go red)
        sky = label_ids == 23
        if sky.sum() > 20:
            mean = image[sky].mean(axis=0)
            assert mean[2] > mean[0] + 15
        checked += 1
    assert checked == 2 * 5 + 3


def test_cityscapes_test_split_has_dummy_zero_labels(city_root):
    for city in CITIES["test"]:
        stem = city_root / "gtFine" / "test" / city / f"{city}_000000_000019_gtFine_"
        assert not read(Path(f"{stem}labelIds.png")).any()
        assert not read(Path(f"{stem}instanceIds.png")).any()
        colour = read(Path(f"{stem}color.png"))
        assert not colour[..., :3].any() and (colour[..., 3] == 255).all()
        assert json.loads(Path(f"{stem}polygons.json").read_text())["objects"] == []


def test_demo_video_frames_move(city_root):
    frames = sorted((city_root / "leftImg8bit" / "demoVideo" / "stuttgart_00").iterdir())
    assert [f.name for f in frames] == [
        f"stuttgart_00_000000_{k:06d}_leftImg8bit.png" for k in (1, 2, 3)
    ]
    first, last = read(frames[0]).astype(int), read(frames[-1]).astype(int)
    assert first.shape == (64, 128, 3)
    assert np.abs(first - last).mean() > 5  # the camera moved, not just the noise


def test_coarse_labels_are_eroded_fine_labels(city_root):
    for fine_path in sorted(city_root.glob("gtFine/train/*/*_gtFine_labelIds.png")):
        fine = read(fine_path)
        coarse = read(Path(str(fine_path).replace("gtFine", "gtCoarse")))
        labelled = coarse > 0
        assert labelled.mean() < (fine > 0).mean()
        assert (coarse[labelled] == fine[labelled]).mean() > 0.97
    extra = read(next(city_root.glob("gtCoarse/train_extra/*/*_gtCoarse_labelIds.png")))
    assert extra.shape == (64, 128) and extra.any()


def test_official_evaluator_accepts_the_val_tree(city_root, tmp_path, monkeypatch):
    ground_truth = sorted(str(p) for p in city_root.glob("gtFine/val/*/*_gtFine_labelIds.png"))
    assert len(ground_truth) == 3
    args = cs_eval.args
    # The instance-level part calls np.in1d, which numpy 2.4 removed.
    monkeypatch.setattr(args, "evalInstLevelScore", False)
    monkeypatch.setattr(args, "evalPixelAccuracy", False)
    monkeypatch.setattr(args, "quiet", True)
    monkeypatch.setattr(args, "JSONOutput", True)
    monkeypatch.setattr(args, "exportFile", str(tmp_path / "result.json"))
    monkeypatch.setattr(args, "evalLabels", [])  # filled in by the evaluation
    result = cs_eval.evaluateImgLists(ground_truth, ground_truth, args)
    assert result["averageScoreClasses"] == 1.0
    scores = [s for s in result["classScores"].values() if not np.isnan(s)]
    assert len(scores) >= 10 and all(s == 1.0 for s in scores)
    assert json.loads((tmp_path / "result.json").read_text())["averageScoreCategories"] == 1.0


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    options = dict(
        height=48,
        width=96,
        train_per_city=1,
        val_per_city=1,
        test_per_city=1,
        video_frames=2,
        coarse=1,
    )
    roots = [tmp_path / name for name in ("a", "b", "c")]
    for root, seed in zip(roots, (3, 3, 4)):
        generate_cityscapes(root, **options, seed=seed)
    names = files_under(roots[0])
    assert names == files_under(roots[1]) == files_under(roots[2])
    for name in names:
        assert (roots[0] / name).read_bytes() == (roots[1] / name).read_bytes(), name
    images = [n for n in names if n.endswith("leftImg8bit.png")]
    assert all((roots[0] / n).read_bytes() != (roots[2] / n).read_bytes() for n in images)


def test_default_train_tree_has_every_class_in_sensible_shares(tmp_path):
    summary = generate_cityscapes(tmp_path, val_per_city=0, test_per_city=0, video_frames=0)
    assert summary.images["train"] == 40
    assert not (tmp_path / "gtCoarse").exists()  # only with coarse > 0
    counts = np.zeros(256, np.int64)
    for path in tmp_path.glob("gtFine/train/*/*_gtFine_labelIds.png"):
        counts += np.bincount(read(path).ravel(), minlength=256)
    share = {label.name: counts[label.id] / counts.sum() for label in labels if label.id >= 0}
    evaluated = [label.name for label in labels if 0 <= label.trainId < 19]
    assert len(evaluated) == 19
    assert all(share[name] > 0 for name in evaluated), share
    categories = {label.categoryId for label in labels if label.id >= 0 and counts[label.id]}
    assert categories == set(range(8))
    for big in ("road", "building", "vegetation", "sky"):
        assert share[big] > 0.03, (big, share[big])
    for small in ("pole", "traffic sign", "traffic light", "person"):
        assert 0.0005 < share[small] < 0.05, (small, share[small])


def test_kitti_tree_layout_sizes_and_colours(kitti_root):
    expected = set()
    for category in ("um", "umm", "uu"):
        for i in range(2):
            expected.add(f"data_road/training/image_2/{category}_{i:06d}.png")
            expected.add(f"data_road/training/gt_image_2/{category}_road_{i:06d}.png")
            if category == "um":
                expected.add(f"data_road/training/gt_image_2/um_lane_{i:06d}.png")
        expected.add(f"data_road/testing/image_2/{category}_000000.png")
    assert files_under(kitti_root) == expected

    real_sizes = {
        (round(h * 0.1), round(w * 0.1))
        for h, w in ((370, 1224), (374, 1238), (375, 1242), (376, 1241))
    }
    sizes = set()
    allowed = {(255, 0, 255), (255, 0, 0), (0, 0, 0)}
    for image_path in sorted(kitti_root.glob("data_road/*/image_2/*.png")):
        image = read(image_path)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        sizes.add(image.shape[:2])
        if "testing" in image_path.parts:
            continue
        category, index = image_path.stem.split("_")
        gt_dir = image_path.parent.parent / "gt_image_2"
        road = read(gt_dir / f"{category}_road_{index}.png")
        assert road.shape == image.shape
        assert {tuple(c) for c in np.unique(road.reshape(-1, 3), axis=0)} <= allowed
        is_road, valid = road[..., 2] > 0, road[..., 0] > 0  # the devkit's reading
        assert is_road.any() and (valid & ~is_road).any() and not valid.all()
        if category == "um":
            lane = read(gt_dir / f"um_lane_{index}.png")
            assert {tuple(c) for c in np.unique(lane.reshape(-1, 3), axis=0)} <= allowed
            ego_lane = lane[..., 2] > 0
            assert ego_lane.any() and not (ego_lane & ~is_road).any()
    assert sizes <= real_sizes and len(sizes) > 1


def run_cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "segmentation.sample", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_writes_a_tree_and_refuses_a_non_empty_folder(tmp_path):
    out = tmp_path / "tree"
    tiny = [
        "--height",
        "48",
        "--width",
        "96",
        "--train-per-city",
        "1",
        "--val-per-city",
        "0",
        "--test-per-city",
        "0",
        "--video-frames",
        "1",
    ]
    done = run_cli("cityscapes", str(out), *tiny)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1 and "wrote" in done.stdout
    assert (
        out / "gtFine" / "train" / "zurich" / "zurich_000000_000019_gtFine_labelIds.png"
    ).is_file()

    refused = run_cli("cityscapes", str(out), *tiny)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error:") and len(refused.stderr.strip().splitlines()) == 1
    assert "--overwrite" in refused.stderr

    again = run_cli(
        "kitti",
        str(tmp_path / "kitti"),
        "--scale",
        "0.1",
        "--train-per-category",
        "1",
        "--test-per-category",
        "0",
    )
    assert again.returncode == 0, again.stderr
    assert run_cli("cityscapes", str(out), *tiny, "--overwrite").returncode == 0
    label_coloured = run_cli("cityscapes", str(tmp_path / "easy"), *tiny, "--looks", "cityscapes")
    assert label_coloured.returncode == 0, label_coloured.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["cityscapes"],
        ["ade20k", "x"],
        ["cityscapes", "x", "--height", "tall"],
        ["cityscapes", "x", "--height", "8"],
        ["cityscapes", "x", "--train-per-city", "-1"],
        ["cityscapes", "x", "--looks", "pastel"],
        ["kitti", "x", "--scale", "0"],
    ],
)
def test_cli_bad_arguments_give_one_line(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        status = main(argv)
    except SystemExit as stop:  # argparse's own checks
        status = stop.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_api_refuses_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        generate_kitti(tmp_path, train_per_category=1, test_per_category=0)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
