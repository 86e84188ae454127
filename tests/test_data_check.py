"""python -m segmentation.data.check: a clean tree passes with its summary; in a tree where
known problems were planted, exactly those are found; the Cityscapes and KITTI layouts too."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from segmentation.data import check

FIRST = "aachen/aachen_000000_000019"


def run_check(capsys, *args) -> tuple[int, str]:
    code = check.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def sections(output: str) -> dict[str, list[str]]:
    """The listed problems of a report: heading -> listed lines (without the indent)."""
    found: dict[str, list[str]] = {}
    heading = None
    for line in output.split("problems:", 1)[-1].splitlines():
        match = re.fullmatch(r"(\S.*) \((\d+)\):", line)
        if match:
            heading = match.group(1)
            found[heading] = []
        elif heading and line.startswith("  "):
            found[heading].append(line.strip())
    return found


def copy_root(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / "data"))


def test_a_clean_folder_dataset_passes_with_its_summary(folder_root, tmp_path, capsys):
    plot = tmp_path / "classes.png"
    code, output = run_check(capsys, folder_root("index"), "--plot", plot, "--workers", 2)
    assert code == 0, output
    assert "8 classes, index masks" in output and "no problems found" in output
    assert re.search(r"^train +10 +10$", output, re.M)
    assert re.search(r"^val +6 +6$", output, re.M)
    assert re.search(r"^test +2 +0$", output, re.M)
    shares = [float(v) for v in re.findall(r"^\S.*? +([\d.]+)% +[\d.]+%$", output, re.M)]
    assert len(shares) == 8 + 1 + 1 and sum(shares) == pytest.approx(100, abs=0.1)
    image = cv2.imread(str(plot))
    assert image is not None and image.shape[0] > 100


def test_colours_outside_the_classes_are_one_warning_with_a_count_per_file(folder_root, capsys):
    code, output = run_check(capsys, folder_root("rgb"), "--workers", 0)
    assert code == 0, output
    assert "rgb masks" in output
    match = re.search(r"warning: (\d+) pixels in 16 masks hold colours of no class", output)
    assert match, output
    # The rgb sample's unknown colour (black) is where the index sample holds ignore_index.
    ignored = 0
    for mask in (folder_root("index") / "masks").rglob("*.png"):
        ignored += int((cv2.imread(str(mask), cv2.IMREAD_UNCHANGED) == 255).sum())
    assert int(match.group(1)) == ignored
    per_file = re.findall(
        r"^  (\S+\.png): (\d+) px, ([\d.]+)% of the mask \(\[0, 0, 0\] x (\d+)\)$", output, re.M
    )
    assert len(per_file) == 16 and sum(int(count) for _, count, _, _ in per_file) == ignored
    for path, count, share, black in per_file:  # black is the only colour of no class
        pixels = cv2.imread(path).shape[0] * cv2.imread(path).shape[1]
        assert count == black and float(share) == pytest.approx(
            100 * int(count) / pixels, abs=0.006
        )


def _write_jpeg(path: Path, pixels: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", pixels)
    path.write_bytes(data.tobytes())


def _damage_pixel_data(path: Path) -> None:
    """Flip bytes inside the IDAT chunk: header and IEND intact, the pixels undecodable."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    for offset in range(start, start + 16):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def plant_problems(root: Path) -> dict[str, list[str]]:
    """Plant one or two problems of each kind; returns the file each listing must name."""
    masks, images = root / "masks", root / "images"
    (masks / "train" / f"{FIRST}.png").unlink()
    ghost = masks / "val" / "extra" / "ghost.png"
    ghost.parent.mkdir()
    shutil.copy(masks / "val" / "lindau" / "lindau_000001_000019.png", ghost)
    bremen = masks / "train" / "bremen"
    grey = cv2.imread(str(bremen / "bremen_000000_000019.png"), cv2.IMREAD_UNCHANGED)
    (bremen / "bremen_000000_000019.png").unlink()
    _write_jpeg(bremen / "bremen_000000_000019.jpg", grey)
    _write_jpeg(bremen / "bremen_000001_000019.png", grey)  # a JPEG named .png
    truncated = masks / "train" / "hamburg" / "hamburg_000000_000019.png"
    truncated.write_bytes(truncated.read_bytes()[:-40])
    empty = images / "val" / "lindau" / "lindau_000000_000019.png"
    empty.write_bytes(b"")
    damaged = masks / "train" / "hamburg" / "hamburg_000001_000019.png"
    _damage_pixel_data(damaged)
    colour = masks / "train" / "ulm" / "ulm_000000_000019.png"
    cv2.imwrite(str(colour), cv2.cvtColor(cv2.imread(str(colour), 0), cv2.COLOR_GRAY2BGR))
    resized = masks / "train" / "zurich" / "zurich_000000_000019.png"
    cv2.imwrite(str(resized), cv2.imread(str(resized), cv2.IMREAD_UNCHANGED)[:60])
    clash = images / "train" / "zurich" / "zurich_000001_000019.png"
    shutil.copy(clash, clash.with_suffix(".jpg"))
    outside = masks / "val" / "munster" / "munster_000000_000019.png"
    values = cv2.imread(str(outside), cv2.IMREAD_UNCHANGED)
    values[:2, :5] = 40
    cv2.imwrite(str(outside), values)
    return {
        "images without masks": [str(images / "train" / f"{FIRST}.png")],
        "masks without images": [str(ghost)],
        "masks that are not PNG": [
            str(bremen / "bremen_000000_000019.jpg"),
            str(bremen / "bremen_000001_000019.png"),
        ],
        "unreadable files": [str(empty), str(truncated), str(damaged)],
        "masks of the wrong pixel format": [str(colour)],
        "masks of another size than their image": [str(resized)],
        "images that would share one mask": [str(clash.with_suffix(".jpg"))],
        "masks with values outside the classes": [str(outside)],
    }


def test_each_planted_problem_is_found_and_nothing_else(folder_root, tmp_path, capsys):
    root = copy_root(folder_root("index"), tmp_path)
    planted = plant_problems(root)
    code, output = run_check(capsys, root, "--workers", 0)
    assert code == 1, output
    found = sections(output)
    assert set(found) == set(planted), output
    for heading, paths in planted.items():
        listed = found[heading]
        assert len(listed) == len(paths), (heading, listed)
        for path in paths:
            assert sum(path in line for line in listed) == 1, (heading, path, listed)
    outside = planted["masks with values outside the classes"][0]
    assert f"{outside}: 10 px, 0.12% of the mask (value 40 x 10)" in output  # 10 / (64 x 128)
    assert "(training ignores those pixels: name their classes in classes.yaml" in output
    # The counts still come: the two clashing images are set aside, two lack a PNG mask.
    assert re.search(r"^train +9 +7$", output, re.M), output


def test_a_long_listing_shows_twenty_then_a_count(folder_root, tmp_path, capsys):
    root = copy_root(folder_root("index"), tmp_path)
    mask = root / "masks" / "val" / "lindau" / "lindau_000000_000019.png"
    for index in range(25):
        shutil.copy(mask, mask.with_name(f"ghost_{index:02d}.png"))
    code, output = run_check(capsys, root, "--workers", 0)
    assert code == 1
    listed = sections(output)["masks without images"]
    assert "masks without images (25):" in output
    assert len(listed) == 21 and listed[-1] == "... and 5 more"


def test_a_missing_split_is_a_problem(folder_root, tmp_path, capsys):
    root = copy_root(folder_root("index"), tmp_path)
    shutil.rmtree(root / "images" / "val")
    shutil.rmtree(root / "masks" / "val")
    code, output = run_check(capsys, root, "--workers", 0)
    assert code == 1
    assert sections(output) == {"missing split folders": [f"no folder {root / 'images/val'}"]}
    shutil.rmtree(root / "masks" / "train")
    code, output = run_check(capsys, root, "--workers", 0)
    assert code == 1 and f"no folder {root / 'masks/train'}" in output
    assert re.search(r"^train +10 +0$", output, re.M)


def test_values_outside_a_classes_file_are_a_problem_with_their_share(
    folder_root, tmp_path, capsys
):
    """The 8-class index sample under a classes file of its first class alone: every other
    class's pixels are outside the classes; 255, the ignore_index, is not."""
    root = copy_root(folder_root("index"), tmp_path)
    classes = yaml.safe_load((root / "classes.yaml").read_text())
    classes["classes"] = classes["classes"][:1]
    (root / "classes.yaml").write_text(yaml.safe_dump(classes))
    code, output = run_check(capsys, root, "--workers", 0)
    assert code == 1, output
    listed = sections(output)["masks with values outside the classes"]
    assert len(sections(output)) == 1 and len(listed) == 16
    mask = root / "masks" / "val" / "lindau" / "lindau_000000_000019.png"
    values = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
    outside = (values != 0) & (values != 255)
    counts = sorted((-int((values == v).sum()), int(v)) for v in np.unique(values[outside]))
    examples = ", ".join(f"value {v} x {-n}" for n, v in counts[:3])
    more = f" and {len(counts) - 3} more values" if len(counts) > 3 else ""
    share = 100 * outside.sum() / outside.size
    assert f"{mask}: {outside.sum()} px, {share:.2f}% of the mask ({examples}{more})" in listed
    # The table's row: the share of each split's pixels outside the classes.
    for split, column in (("train", 0), ("val", 1)):
        stored = [
            cv2.imread(str(m), cv2.IMREAD_UNCHANGED)
            for m in (root / "masks" / split).rglob("*.png")
        ]
        split_outside = sum(int(((m != 0) & (m != 255)).sum()) for m in stored)
        split_share = 100 * split_outside / sum(m.size for m in stored)
        row = re.search(r"^\(outside the classes\) +([\d.]+)% +([\d.]+)%$", output, re.M)
        assert float(row.group(column + 1)) == pytest.approx(split_share, abs=0.006)
        assert split_share > 50


def test_a_long_class_name_is_shortened_in_the_table(folder_root, tmp_path, capsys):
    root = copy_root(folder_root("index"), tmp_path)
    classes = yaml.safe_load((root / "classes.yaml").read_text())
    long_name = "road " + "very " * 58 + "long end"  # 303 characters
    classes["classes"][0]["name"] = long_name
    (root / "classes.yaml").write_text(yaml.safe_dump(classes, width=1000))
    code, output = run_check(capsys, root, "--workers", 0, "--plot", tmp_path / "chart.png")
    assert code == 0, output
    lines = output.splitlines()
    start = lines.index("class pixel frequencies (% of each split's mask pixels)") + 1
    table = lines[start : start + 1 + 8 + 2]  # the heading, 8 classes, ignored and outside
    shortened = "road very very very very ...ery long end"  # 25 + "..." + 12 characters
    assert table[1].startswith(f"{shortened} "), table
    assert {len(line) for line in table} == {40 + 2 * 12}  # the name, then two 12-wide columns
    assert cv2.imread(str(tmp_path / "chart.png")) is not None


def empty_folders(root: Path, *folders: str) -> None:
    for folder in folders:
        shutil.rmtree(root / folder)
        (root / folder).mkdir()


EMPTY_SPLITS = {
    "folder": (("images/val", "masks/val"), "holds no .png, .jpg or .jpeg images"),
    "cityscapes": (("leftImg8bit/val", "gtFine/val"), "holds no CITY/*_leftImg8bit.png"),
    "kitti": (
        ("data_road/training/image_2", "data_road/training/gt_image_2"),
        "holds no {um,umm,uu}_NNNNNN.png images",
    ),
}


@pytest.mark.parametrize("layout", list(EMPTY_SPLITS))
def test_an_empty_split_is_a_problem(
    layout, folder_root, cityscapes_root, kitti_root, tmp_path, capsys
):
    source = {"folder": folder_root("index"), "cityscapes": cityscapes_root, "kitti": kitti_root}
    root = Path(shutil.copytree(source[layout], tmp_path / layout))
    (images, masks), says = EMPTY_SPLITS[layout]
    empty_folders(root, images, masks)
    code, output = run_check(capsys, root, "--workers", 0)
    assert code == 1, output
    expected = f"{root / images} {says}"
    assert sections(output) == {"split folders without images": [expected]}


def test_a_broken_classes_file_is_one_line_with_exit_2(folder_root, tmp_path, capsys):
    root = copy_root(folder_root("index"), tmp_path)
    (root / "classes.yaml").write_text("mask_format: index\nclasses: []\n")
    code, output = run_check(capsys, root)
    assert code == 2
    assert (
        output.strip() == f"error: {root / 'classes.yaml'}: classes is empty: list at least "
        "one {name: ..., color: [r, g, b]}"
    )
    (root / "classes.yaml").unlink()
    code, output = run_check(capsys, root, "--dataset", "folder")
    assert code == 2 and "classes.yaml is missing" in output


def test_the_cityscapes_layout(cityscapes_root, tmp_path, capsys):
    code, output = run_check(capsys, cityscapes_root, "--workers", 0)
    assert code == 0, output
    assert "Cityscapes" in output and "'classes' scheme, 20 classes" in output
    assert re.search(r"^train +15 +15$", output, re.M)
    assert re.search(r"^train_extra +2 +2$", output, re.M)
    root = Path(shutil.copytree(cityscapes_root, tmp_path / "cityscapes"))
    label = root / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png"
    label.unlink()
    ids = root / "gtFine" / "val" / "munster" / "munster_000000_000019_gtFine_labelIds.png"
    values = cv2.imread(str(ids), cv2.IMREAD_UNCHANGED)
    values[0, :3] = 50  # no Cityscapes label id
    cv2.imwrite(str(ids), values)
    code, output = run_check(capsys, root, "--dataset", "cityscapes", "--workers", 0)
    assert code == 1
    assert list(sections(output)) == [
        "images without masks",
        "masks with values outside the classes",
    ]
    assert str(label) in sections(output)["images without masks"][0]
    assert sections(output)["masks with values outside the classes"] == [
        f"{ids}: 3 px, 0.04% of the mask (value 50 x 3)"  # 3 / (64 x 128)
    ]
    assert "Cityscapes label ids are 0..33" in output


def test_the_kitti_layout(kitti_root, tmp_path, capsys):
    code, output = run_check(capsys, kitti_root, "--workers", 0)
    assert code == 0, output
    assert re.search(r"^training +15 +15$", output, re.M)
    assert re.search(r"^testing +3 +0$", output, re.M)
    assert re.search(r"^road +[\d.]+%$", output, re.M)
    root = Path(shutil.copytree(kitti_root, tmp_path / "kitti"))
    image = root / "data_road" / "training" / "image_2" / "um_000001.png"
    image.unlink()
    code, output = run_check(capsys, root, "--workers", 0, "--labels", "lane")
    assert code == 1
    gt = root / "data_road" / "training" / "gt_image_2" / "um_lane_000001.png"
    assert sections(output) == {"masks without images": [f"{gt}: its image is missing"]}


def one_error_line(output: str, *fragments: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("images/val/lindau/lindau_000000_000019.png", "is inside the dataset"),
        ("classes.yaml", "is inside the dataset"),
        ("images", "is inside the dataset"),
        ("../chart.yaml", "ending in one of them"),
        ("../chart", "ending in one of them"),
        ("../mine.png", "already exists"),
    ],
)
def test_a_plot_that_would_replace_or_fail_is_refused_before_the_pass(
    folder_root, tmp_path, capsys, target, fragment
):
    root = copy_root(folder_root("index"), tmp_path)
    (tmp_path / "mine.png").write_bytes(b"my own file")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    code, output = run_check(capsys, root, "--plot", root / target, "--workers", 0)
    assert code == 2
    one_error_line(output, "--plot", fragment)  # one line, and no summary: before the pass
    after = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before


def test_overwrite_lets_the_plot_replace_a_file_outside_the_dataset(folder_root, tmp_path, capsys):
    chart = tmp_path / "classes.svg"
    chart.write_text("an older chart")
    code, output = run_check(capsys, folder_root("index"), "--plot", chart, "--overwrite")
    assert code == 0, output
    assert chart.read_text().lstrip().startswith("<?xml") and "<svg" in chart.read_text()
    assert [path.name for path in tmp_path.iterdir()] == ["classes.svg"]  # no temporary left
    # A new folder is made for the chart, as the check before the pass found it could be.
    chart = tmp_path / "charts" / "classes.pdf"
    code, output = run_check(capsys, folder_root("index"), "--plot", chart, "--workers", 0)
    assert code == 0, output
    assert chart.read_bytes().startswith(b"%PDF")


def test_symlinked_city_folders_are_checked_and_no_plot_lands_in_them(
    folder_root, cityscapes_root, tmp_path, capsys
):
    root = copy_root(folder_root("index"), tmp_path)
    elsewhere = tmp_path / "elsewhere"
    for kind in ("images", "masks"):
        (elsewhere / kind).mkdir(parents=True)
        shutil.move(root / kind / "val" / "lindau", elsewhere / kind / "lindau")
        (root / kind / "val" / "lindau").symlink_to(elsewhere / kind / "lindau")
    code, output = run_check(capsys, root, "--workers", 0)
    assert code == 0, output
    assert re.search(r"^val +6 +6$", output, re.M), output
    # The linked folder holds the dataset's files: a chart there is refused like one in ROOT.
    chart = elsewhere / "masks" / "lindau" / "classes.png"
    code, output = run_check(capsys, root, "--plot", chart, "--workers", 0)
    assert code == 2 and not chart.exists()
    one_error_line(output, f"--plot {chart} is inside {elsewhere / 'masks' / 'lindau'}")
    root = Path(shutil.copytree(cityscapes_root, tmp_path / "cityscapes"))
    for kind in ("leftImg8bit", "gtFine"):
        (elsewhere / kind).mkdir(parents=True)
        shutil.move(root / kind / "val" / "lindau", elsewhere / kind / "lindau")
        (root / kind / "val" / "lindau").symlink_to(elsewhere / kind / "lindau")
    code, output = run_check(capsys, root, "--workers", 0)
    assert code == 0, output
    assert re.search(r"^val +6 +6$", output, re.M), output


# OpenCV's pool is started by parallel calls on large images; the check then forks its workers.
AFTER_OPENCV_THREADS = """
import sys
import cv2
import numpy as np
cv2.setNumThreads(2)
image = np.zeros((2000, 2000, 3), np.uint8)
for _ in range(3):
    cv2.resize(image, (1000, 1000), interpolation=cv2.INTER_AREA)
from segmentation.data import check
sys.exit(check.main([sys.argv[1], "--workers", "2"]))
"""


@pytest.mark.slow
def test_checker_workers_start_after_opencv_ran_threads_in_the_parent(cityscapes_root):
    # A child forked while the parent's OpenCV pool runs used to wait forever in its first
    # OpenCV call: a test process that had resized images before hung the suite.
    repo = Path(__file__).resolve().parents[1]
    try:
        result = subprocess.run(
            [sys.executable, "-c", AFTER_OPENCV_THREADS, str(cityscapes_root)],
            cwd=repo,
            env={**os.environ, "PYTHONPATH": str(repo)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("data.check's workers hung after OpenCV had run threads in the parent")
    assert result.returncode == 0, result.stdout + result.stderr
